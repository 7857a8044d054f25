use std::time::Duration;

use super::*;
use proto::keys::StaticKeypair;

fn key() -> PublicKey {
    StaticKeypair::generate().unwrap().public()
}

struct World {
    dir: tempfile::TempDir,
    config: Config,
    known: KnownServers,
    env: Vec<(&'static str, String)>,
}

impl World {
    /// A config whose `[defaults]` and `[servers.box]` both set everything.
    fn new(table_key: &PublicKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[defaults]\n\
             relay = \"10.0.0.1\"\n\
             key = \"defaults.key\"\n\
             cwd = \"/defaults\"\n\
             env = {{ A = \"defaults\", B = \"defaults\", C = \"defaults\" }}\n\
             accept_new = false\n\
             warm = \"1m\"\n\
             resume = false\n\
             terminal = \"always\"\n\
             [servers.box]\n\
             relay = \"10.0.0.2\"\n\
             server = \"{table_key}\"\n\
             key = \"box.key\"\n\
             cwd = \"/box\"\n\
             env = {{ B = \"box\", C = \"box\" }}\n\
             accept_new = true\n\
             warm = \"2m\"\n\
             resume = \"5m\"\n\
             terminal = \"auto\"\n\
             [servers.bare]\n"
        );
        let path = dir.path().join("config.toml");
        let config = Config::parse(&text, &path).unwrap();
        let known = KnownServers::load(&dir.path().join("known_servers")).unwrap();
        Self {
            dir,
            config,
            known,
            env: Vec::new(),
        }
    }

    fn resolve(
        &self,
        name: Option<&str>,
        args: &ServerArgs,
        config: bool,
    ) -> Result<Settings, SettingsError> {
        let env = |n: &str| {
            self.env
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        Settings::resolve(&Inputs {
            name,
            args,
            env: &env,
            config: config.then_some(&self.config),
            known: &self.known,
            default_key: Some(self.dir.path().join("client.key")),
        })
    }

    fn at(&self, line: usize) -> Source {
        Source::File(format!(
            "{}:{line}",
            self.dir.path().join("config.toml").display()
        ))
    }
}

fn relays(s: &Settings) -> Vec<String> {
    match &s.route.as_ref().unwrap().value {
        Route::Relays(r) => r.iter().map(|a| a.url().to_owned()).collect(),
        Route::Direct(d) => vec![format!("direct {d}")],
    }
}

#[test]
fn relay_flag_over_env_over_server_over_defaults() {
    let k = key();
    let mut w = World::new(&k);
    let flags = ServerArgs {
        relay: vec!["127.0.0.1:1".into(), "[::1]:2".into()],
        ..ServerArgs::default()
    };
    w.env.push(("REX_RELAY", "127.0.0.3".into()));
    let s = w.resolve(Some("box"), &flags, true).unwrap();
    assert_eq!(relays(&s), ["http://127.0.0.1:1", "http://[::1]:2"]);
    assert_eq!(s.route.unwrap().source, Source::Flag("--relay"));
    let direct = ServerArgs {
        direct: Some("http://127.0.0.1:9".into()),
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("box"), &direct, true).unwrap();
    assert_eq!(relays(&s), ["direct http://127.0.0.1:9"]);

    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(relays(&s), ["http://127.0.0.3:7600"]);
    assert_eq!(s.route.unwrap().source, Source::Env("REX_RELAY"));
    w.env.clear();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(relays(&s), ["http://10.0.0.2:7600"]);
    assert_eq!(s.route.unwrap().source, w.at(11));
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert_eq!(relays(&s), ["http://10.0.0.1:7600"]);
    assert_eq!(s.route.unwrap().source, w.at(2));
    let flags = ServerArgs {
        server: Some(k.to_string()),
        ..ServerArgs::default()
    };
    assert_eq!(w.resolve(None, &flags, false).unwrap().route, None);
}

#[test]
fn a_known_servers_relay_is_used_when_nothing_else_names_one() {
    let k = key();
    let mut w = World::new(&k);
    let none = ServerArgs::default();
    w.known
        .add(Some("solo"), k, Some("http://127.0.0.9:7601"))
        .unwrap();
    // No config file: the known line's relay, and its key.
    let s = w.resolve(Some("solo"), &none, false).unwrap();
    assert_eq!(relays(&s), ["http://127.0.0.9:7601"]);
    assert!(
        matches!(s.route.unwrap().source, Source::Known(at) if at.ends_with("known_servers:2"))
    );
    // The config file's [defaults] relay wins over it.
    let s = w.resolve(Some("solo"), &none, true).unwrap();
    assert_eq!(relays(&s), ["http://10.0.0.1:7600"]);
    // And a flag over both.
    let flags = ServerArgs {
        relay: vec!["127.0.0.1:1".into()],
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("solo"), &flags, false).unwrap();
    assert_eq!(relays(&s), ["http://127.0.0.1:1"]);
    // A known line without a relay gives none.
    w.known.add(Some("norelay"), key(), None).unwrap();
    assert_eq!(
        w.resolve(Some("norelay"), &none, false).unwrap().route,
        None
    );
}

#[test]
fn server_key_flag_over_env_over_table_over_known() {
    let (k_table, k_flag, k_env, k_known) = (key(), key(), key(), key());
    let mut w = World::new(&k_table);
    let file = w.dir.path().join("flag.pub");
    std::fs::write(&file, format!("# a key\n{k_flag}\n")).unwrap();
    w.env.push(("REX_SERVER", k_env.to_string()));
    let flag = ServerArgs {
        server_file: Some(file),
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("bare"), &flag, true).unwrap();
    assert_eq!(
        s.server.unwrap(),
        sourced(k_flag, Source::Flag("--server-file"))
    );
    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(s.server.unwrap(), sourced(k_env, Source::Env("REX_SERVER")));
    w.env.clear();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(s.server.unwrap(), sourced(k_table, w.at(12)));
    // A name with no key in the file takes the known one.
    w.known.add(Some("bare"), k_known, None).unwrap();
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert!(s.known);
    let server = s.server.unwrap();
    assert_eq!(server.value, k_known);
    assert!(matches!(server.source, Source::Known(at) if at.ends_with("known_servers:2")));
    // Nothing at all.
    assert_eq!(w.resolve(None, &none, true).unwrap().server, None);
    // A bad key on the command line.
    let bad = ServerArgs {
        server: Some("nope".into()),
        ..ServerArgs::default()
    };
    assert!(matches!(
        w.resolve(None, &bad, true),
        Err(SettingsError::ServerKey("--server"))
    ));
}

#[test]
fn client_key_flag_over_env_over_file_over_the_default_key() {
    let k = key();
    let mut w = World::new(&k);
    w.env.push(("REX_KEY", "/env.key".into()));
    let flags = ServerArgs {
        key: Some("/flag.key".into()),
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("box"), &flags, true).unwrap();
    assert_eq!(
        s.key.unwrap(),
        sourced("/flag.key".into(), Source::Flag("--key"))
    );
    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(
        s.key.unwrap(),
        sourced("/env.key".into(), Source::Env("REX_KEY"))
    );
    w.env.clear();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(
        s.key.unwrap(),
        sourced(w.dir.path().join("box.key"), w.at(13))
    );
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert_eq!(
        s.key.unwrap(),
        sourced(w.dir.path().join("defaults.key"), w.at(3))
    );
    // No file: the default key, once it exists.
    let flags = ServerArgs {
        server: Some(k.to_string()),
        ..ServerArgs::default()
    };
    assert_eq!(w.resolve(None, &flags, false).unwrap().key, None);
    let default = w.dir.path().join("client.key");
    StaticKeypair::generate_to_file(&default).unwrap();
    assert_eq!(
        w.resolve(None, &flags, false).unwrap().key.unwrap(),
        sourced(default, Source::DefaultKey)
    );
}

#[test]
fn cwd_and_env_flag_over_server_over_defaults() {
    let w = World::new(&key());
    let flags = ServerArgs {
        cwd: Some("/flag".into()),
        env: vec!["C=flag".into(), "D=x=y".into()],
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("box"), &flags, true).unwrap();
    assert_eq!(
        s.cwd.unwrap(),
        sourced("/flag".into(), Source::Flag("--cwd"))
    );
    let vars: Vec<(&str, &str, &Source)> = s
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str(), &v.source))
        .collect();
    assert_eq!(
        vars,
        [
            ("A", "defaults", &w.at(5)),
            ("B", "box", &w.at(15)),
            ("C", "flag", &Source::Flag("-e")),
            ("D", "x=y", &Source::Flag("-e")),
        ]
    );
    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(s.cwd.unwrap(), sourced("/box".into(), w.at(14)));
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert_eq!(s.cwd.unwrap(), sourced("/defaults".into(), w.at(4)));
    let flags = ServerArgs {
        server: Some(key().to_string()),
        ..ServerArgs::default()
    };
    let s = w.resolve(None, &flags, false).unwrap();
    assert_eq!(s.cwd, None);
    assert!(s.env.is_empty());
    let bad = ServerArgs {
        env: vec!["=x".into()],
        ..flags
    };
    assert!(matches!(
        w.resolve(None, &bad, false),
        Err(SettingsError::Env)
    ));
}

#[test]
fn options_flag_over_server_over_defaults_over_built_in() {
    let w = World::new(&key());
    let flags = ServerArgs {
        accept_new: false,
        options: vec![
            "warm=off".into(),
            "resume=no".into(),
            "terminal=never".into(),
            "accept_new=false".into(),
        ],
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("box"), &flags, true).unwrap();
    let o = Source::Flag("-o");
    assert_eq!(s.warm, sourced(Warm::Off, o.clone()));
    assert_eq!(s.resume, sourced(Resume::Off, o.clone()));
    assert_eq!(s.terminal, sourced(Terminal::Never, o.clone()));
    assert_eq!(s.accept_new, sourced(false, o));
    let accept = ServerArgs {
        accept_new: true,
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("bare"), &accept, true).unwrap();
    assert_eq!(s.accept_new, sourced(true, Source::Flag("--accept-new")));

    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(s.accept_new, sourced(true, w.at(16)));
    assert_eq!(
        s.warm,
        sourced(Warm::Every(Duration::from_secs(120)), w.at(17))
    );
    assert_eq!(
        s.resume,
        sourced(Resume::Within(Duration::from_secs(300)), w.at(18))
    );
    assert_eq!(s.terminal, sourced(Terminal::Auto, w.at(19)));
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert_eq!(s.accept_new, sourced(false, w.at(6)));
    assert_eq!(
        s.warm,
        sourced(Warm::Every(Duration::from_secs(60)), w.at(7))
    );
    assert_eq!(s.resume, sourced(Resume::Off, w.at(8)));
    assert_eq!(s.terminal, sourced(Terminal::Always, w.at(9)));

    let flags = ServerArgs {
        server: Some(key().to_string()),
        ..ServerArgs::default()
    };
    let s = w.resolve(None, &flags, false).unwrap();
    assert_eq!(s.accept_new, sourced(false, Source::Default));
    assert_eq!(s.warm, sourced(Warm::Off, Source::Default));
    assert_eq!(s.resume, sourced(Resume::default(), Source::Default));
    assert_eq!(s.terminal, sourced(Terminal::Auto, Source::Default));
    // --no-resume wins over everything.
    let off = ServerArgs {
        no_resume: true,
        options: vec!["resume=10m".into()],
        ..ServerArgs::default()
    };
    let s = w.resolve(Some("box"), &off, true).unwrap();
    assert_eq!(s.resume, sourced(Resume::Off, Source::Flag("--no-resume")));

    let bad = ServerArgs {
        options: vec!["wram=off".into()],
        ..ServerArgs::default()
    };
    let err = w.resolve(Some("box"), &bad, true).unwrap_err();
    assert!(err.to_string().contains("did you mean `warm`?"), "{err}");
}

#[test]
fn names_must_be_defined_and_keep_their_keys() {
    let k = key();
    let mut w = World::new(&k);
    let none = ServerArgs::default();
    let err = w.resolve(Some("nobody"), &none, true).unwrap_err();
    assert!(matches!(err, SettingsError::UnknownName { .. }));
    assert!(
        err.to_string().contains("core-client trust nobody"),
        "{err}"
    );
    assert!(matches!(
        w.resolve(Some("-x"), &none, true),
        Err(SettingsError::BadName(_))
    ));
    // A name only the command line knows is fine with a key.
    let flags = ServerArgs {
        server: Some(k.to_string()),
        ..ServerArgs::default()
    };
    assert!(!w.resolve(Some("adhoc"), &flags, true).unwrap().known);

    // The file's key for `box` is not the one known: refused.
    w.known.add(Some("box"), key(), None).unwrap();
    let err = w.resolve(Some("box"), &none, true).unwrap_err();
    let SettingsError::KeyChanged(changed) = &err else {
        panic!("{err}")
    };
    assert_eq!(changed.offered_id, k.server_id());
    assert!(
        changed.offered_from.contains("config.toml:12"),
        "{changed:?}"
    );
}

#[test]
fn ca_flag_over_env_over_server_over_defaults() {
    let k = key();
    let mut w = World::new(&k);
    let text = format!(
        "[defaults]\n\
         ca = \"defaults-ca.pem\"\n\
         [servers.box]\n\
         server = \"{k}\"\n\
         ca = \"/etc/box-ca.pem\"\n\
         [servers.bare]\n\
         server = \"{k}\"\n"
    );
    w.config = Config::parse(&text, &w.dir.path().join("config.toml")).unwrap();
    let flag = ServerArgs {
        ca: Some("flag-ca.pem".into()),
        ..ServerArgs::default()
    };
    w.env.push(("REX_CA", "/env/ca.pem".into()));
    let s = w.resolve(Some("box"), &flag, true).unwrap();
    assert_eq!(
        s.ca.unwrap(),
        sourced(PathBuf::from("flag-ca.pem"), Source::Flag("--ca"))
    );
    let none = ServerArgs::default();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(
        s.ca.unwrap(),
        sourced(PathBuf::from("/env/ca.pem"), Source::Env("REX_CA"))
    );
    w.env.clear();
    let s = w.resolve(Some("box"), &none, true).unwrap();
    assert_eq!(
        s.ca.unwrap(),
        sourced(PathBuf::from("/etc/box-ca.pem"), w.at(5))
    );
    let s = w.resolve(Some("bare"), &none, true).unwrap();
    assert_eq!(
        s.ca.unwrap(),
        sourced(w.dir.path().join("defaults-ca.pem"), w.at(2))
    );
    // Nothing set: none (the system's roots).
    let unnamed = ServerArgs {
        server: Some(k.to_string()),
        ..ServerArgs::default()
    };
    assert_eq!(w.resolve(None, &unnamed, false).unwrap().ca, None);
}
