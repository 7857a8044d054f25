use super::*;
use crate::config::options::{Terminal, Warm};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/rex/config.toml"))
}

/// The file:line:column message and the problem, for a file that must fail.
fn failure(text: &str) -> (String, usize, Problem) {
    match parse(text).unwrap_err() {
        e @ ConfigError::Invalid { .. } => {
            let message = e.to_string();
            let ConfigError::Invalid { line, problem, .. } = e else {
                unreachable!()
            };
            (message, line, *problem)
        }
        other => panic!("{other}"),
    }
}

#[test]
fn three_lines_name_a_server() {
    let config =
        parse("[servers.build-box]\nrelay = \"127.0.0.1:7600\"\ncwd = \"/src\"\n").unwrap();
    let entry = &config.servers["build-box"];
    let relays = entry.relays.as_ref().unwrap();
    assert_eq!(relays.line, 2);
    assert_eq!(relays.value[0].url(), "http://127.0.0.1:7600");
    assert_eq!(entry.cwd.as_ref().unwrap().line, 3);
    assert_eq!(
        config.defaults,
        Entry {
            line: 1,
            ..Entry::default()
        }
    );
}

#[test]
fn every_key_is_read_with_its_line() {
    let text = format!(
        "[defaults]\n\
         relay = [\"10.0.0.1\", \"relay.example:7601\"]\n\
         key = \"client.key\"\n\
         env = {{ LANG = \"C\" }}\n\
         accept_new = true\n\
         warm = \"30s\"\n\
         resume = false\n\
         terminal = \"auto\"\n\
         cwd = \"/tmp\"\n\
         ca = \"ca.pem\"\n\
         \n\
         [servers.a]\n\
         server = \"{KEY}\"\n\
         ca = \"/srv/a-ca.pem\"\n\
         [servers.b]\n\
         server_file = \"~/b.pub\"\n"
    );
    let config = parse(&text).unwrap();
    let d = &config.defaults;
    let relays = &d.relays.as_ref().unwrap().value;
    assert_eq!(relays.len(), 2);
    assert!(!relays[0].uses_tls());
    assert!(relays[1].uses_tls());
    assert_eq!(
        d.ca.as_ref().unwrap().value,
        PathBuf::from("/etc/rex/ca.pem")
    );
    assert_eq!(d.ca.as_ref().unwrap().line, 10);
    let a = &config.servers["a"];
    assert_eq!(a.ca.as_ref().unwrap().value, PathBuf::from("/srv/a-ca.pem"));
    assert_eq!(
        d.key.as_ref().unwrap().value,
        PathBuf::from("/etc/rex/client.key")
    );
    assert_eq!(d.key.as_ref().unwrap().line, 3);
    assert_eq!(d.env["LANG"].value, "C");
    assert_eq!(d.env["LANG"].line, 4);
    assert!(d.accept_new.as_ref().unwrap().value);
    assert_eq!(
        d.warm.as_ref().unwrap().value,
        Warm::Every(std::time::Duration::from_secs(30))
    );
    assert_eq!(d.resume.as_ref().unwrap().line, 7);
    assert_eq!(d.terminal.as_ref().unwrap().value, Terminal::Auto);
    assert_eq!(d.cwd.as_ref().unwrap().line, 9);
    assert!(matches!(
        config.servers["a"].server.as_ref().unwrap().value,
        ServerKey::Key(_)
    ));
    assert_eq!(config.servers["a"].server.as_ref().unwrap().line, 13);
    let ServerKey::File(b) = &config.servers["b"].server.as_ref().unwrap().value else {
        panic!()
    };
    assert!(b.ends_with("b.pub") && b.is_absolute());
}

#[test]
fn the_key_lists_match_the_tables() {
    // Every key the checker allows is one the typed table reads.
    for key in schema::SERVER_KEYS {
        let value = match key {
            "relay" => "\"h\"".to_owned(),
            "server" => format!("\"{KEY}\""),
            "env" => "{}".into(),
            "accept_new" | "resume" | "span_forwarding" => "true".into(),
            "warm" => "\"off\"".into(),
            "terminal" => "\"never\"".into(),
            _ => "\"x\"".into(),
        };
        parse(&format!("[servers.s]\n{key} = {value}\n")).unwrap();
        if schema::DEFAULT_KEYS.contains(&key) {
            parse(&format!("[defaults]\n{key} = {value}\n")).unwrap();
        }
    }
}

#[test]
fn bad_toml_names_the_line() {
    let (message, line, problem) = failure("[servers.a]\nrelay = \"x\"\ncwd = /src\n");
    assert_eq!(line, 3);
    assert!(matches!(problem, Problem::Syntax(_)));
    assert!(message.starts_with("/etc/rex/config.toml:3:"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn unknown_keys_are_named_with_the_nearest_known_key() {
    let (message, line, problem) = failure("[servers.a]\nrelay = \"x\"\n\nrelays = [\"y\"]\n");
    assert_eq!(line, 4);
    assert!(
        matches!(&problem, Problem::UnknownKey { key, suggestion: Some("relay"), .. } if key == "relays")
    );
    assert_eq!(
        message,
        "/etc/rex/config.toml:4:1: unknown key `relays` in [servers.a] (did you mean `relay`?)"
    );

    let (message, line, _) = failure("[defaults]\naccept-new = true\n");
    assert_eq!(line, 2);
    assert!(
        message.ends_with("in [defaults] (did you mean `accept_new`?)"),
        "{message}"
    );

    let (message, line, _) = failure("relay = \"x\"\n");
    assert_eq!(line, 1);
    assert!(message.contains("at the top level"), "{message}");

    let (message, _, _) = failure("[server.a]\nrelay = \"x\"\n");
    assert!(message.contains("did you mean `servers`?"), "{message}");

    let (message, line, _) = failure(&format!("[defaults]\ncwd = \"/\"\nserver = \"{KEY}\"\n"));
    assert_eq!(line, 3);
    assert!(
        message.contains("belongs in its own [servers.NAME] table"),
        "{message}"
    );

    let (message, line, _) = failure("[servers.\"-bad name\"]\nrelay = \"x\"\n");
    assert_eq!(line, 1);
    assert!(message.contains("a server name is"), "{message}");
}

#[test]
fn wrong_types_name_the_line() {
    let (message, line, problem) = failure("[servers.a]\nrelay = \"x\"\naccept_new = \"yes\"\n");
    assert_eq!(line, 3);
    assert!(matches!(&problem, Problem::Type { key: Some(k), .. } if k == "servers.a.accept_new"));
    assert!(
        message.contains("`servers.a.accept_new`: invalid type"),
        "{message}"
    );
    assert!(message.starts_with("/etc/rex/config.toml:3:"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    // resume takes true, false or a duration, and nothing else.
    let (message, line, _) = failure("[servers.a]\nrelay = \"x\"\nresume = 5\n");
    assert_eq!(line, 3);
    assert!(message.contains("a duration"), "{message}");
    let (message, line, problem) = failure("[defaults]\nresume = \"soon\"\n");
    assert_eq!(line, 2);
    assert!(
        matches!(problem, Problem::Option(OptionError::Resume)),
        "{message}"
    );
    let (_, line, _) = failure("[servers.a]\nrelay = 7600\n");
    assert_eq!(line, 2);
    let (_, line, _) = failure("[defaults]\nenv = { A = 1 }\n");
    assert_eq!(line, 2);
    let (_, line, _) = failure("servers = 3\n");
    assert_eq!(line, 1);
}

#[test]
fn bad_values_name_the_line() {
    let (message, line, _) = failure("[servers.a]\n\nrelay = \"ftp://x\"\n");
    assert_eq!(line, 3);
    assert!(message.contains("unsupported scheme"), "{message}");
    let (message, line, _) = failure("[servers.a]\nserver = \"short\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("server:"), "{message}");
    let (_, line, problem) = failure(&format!(
        "[servers.a]\nserver = \"{KEY}\"\nserver_file = \"k.pub\"\n"
    ));
    assert_eq!(line, 3);
    assert!(matches!(problem, Problem::TwoServerKeys));
    let (message, line, _) = failure("[defaults]\nwarm = \"sometimes\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("warm: expected"), "{message}");
    let (_, line, _) = failure("[defaults]\nterminal = \"tty\"\n");
    assert_eq!(line, 2);
    let (_, line, problem) = failure("[defaults]\nrelay = []\n");
    assert_eq!(line, 2);
    assert!(matches!(problem, Problem::NoRelays));
}

#[test]
fn a_missing_default_file_is_no_config() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Config::load_if_present(&dir.path().join("none.toml"))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        Config::load(&dir.path().join("none.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn line_and_column() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab\ncd", 99), (2, 3));
}
