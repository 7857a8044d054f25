//! ssh's habits, through the built binaries: a default key from one
//! `keygen`, a server recorded with `trust`, three lines of config, and
//! `core-client exec build-box -- make`; trust on first use and changed
//! keys; relay addresses as typed; config files with mistakes; every view
//! naming the server as the user named it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::binaries::{self, Proc};

/// A relay and an exec-server on loopback that authorize the default key
/// of a `core-client` whose config directory is `dir/config/rex`.
struct Site {
    dir: tempfile::TempDir,
    _relay: Proc,
    _server: Proc,
    /// `127.0.0.1:PORT`
    relay_addr: String,
    server_pub: String,
    client_pub: String,
}

impl Site {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // One keygen: the default identity.
        let out = core_client_in(dir.path(), &["keygen"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let client_pub = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let server_pub = binaries::keygen("exec-server", dir.path(), "server.key").unwrap();
        let ak = dir.path().join("authorized_keys");
        std::fs::write(&ak, format!("{client_pub}\n")).unwrap();
        let relay = binaries::spawn("relay", &["--listen", "127.0.0.1:0"], &[]).unwrap();
        let line = relay
            .wait_for_line("listening on", Duration::from_secs(30))
            .unwrap();
        let relay_addr = line.rsplit(' ').next().unwrap().trim().to_owned();
        let key = dir.path().join("server.key");
        let server = binaries::spawn(
            "exec-server",
            &[
                "--relay",
                &format!("http://{relay_addr}"),
                "--key",
                key.to_str().unwrap(),
                "--authorized-keys",
                ak.to_str().unwrap(),
                "--data-dir",
                dir.path().join("server-data").to_str().unwrap(),
            ],
            &[],
        )
        .unwrap();
        server
            .wait_for_line("registered with relay", Duration::from_secs(30))
            .unwrap();
        Self {
            dir,
            _relay: relay,
            _server: server,
            relay_addr,
            server_pub,
            client_pub,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_dir(&self) -> PathBuf {
        self.path().join("config").join("rex")
    }

    fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.config_dir()).unwrap();
        std::fs::write(self.config_dir().join("config.toml"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        core_client_in(self.path(), args)
    }
}

/// `core-client ARGS` with its config directory, data dir and trace file
/// under `dir` (never the user's own).
fn core_client_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(binaries::path("core-client").unwrap())
        .args(args)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir)
        .env("REX_DATA_DIR", dir.join("client-data"))
        .env("REX_TRACE_FILE", dir.join("traces.jsonl"))
        // Nor the user's agent: a test's own would listen here.
        .env("REX_AGENT_SOCKET", dir.join("agent").join("agent.sock"))
        .env_remove("REX_RELAY")
        .env_remove("REX_SERVER")
        .env_remove("REX_SERVER_FILE")
        .env_remove("REX_KEY")
        .env_remove("REX_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("TRACEPARENT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn server_id(public: &str) -> String {
    public
        .parse::<proto::keys::PublicKey>()
        .unwrap()
        .server_id()
}

#[test]
fn one_keygen_one_trust_three_lines_then_exec_build_box_make() {
    let site = Site::start();
    let project = site.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("Makefile"),
        "all:\n\t@echo built in $(CURDIR)\n",
    )
    .unwrap();

    // One trust.
    let out = site.run(&["trust", "build-box", "--server", &site.server_pub]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Three lines of config.
    site.write_config(&format!(
        "[servers.build-box]\nrelay = \"{}\"\ncwd = \"{}\"\n",
        site.relay_addr,
        project.display()
    ));

    let out = site.run(&["exec", "build-box", "--", "make"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), format!("built in {}\n", project.display()));
    assert_eq!(stderr(&out), "", "nothing to warn about");

    // The remote exit status comes back as it does without a name.
    let out = site.run(&[
        "exec",
        "build-box",
        "--print-trace-id",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let trace = binaries::printed_trace_id(&out).unwrap();

    // Every view names the server as the user named it.
    let out = site.run(&["history"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in &rows {
        assert_eq!(row.split_whitespace().nth(2), Some("build-box"), "{table}");
    }
    let out = site.run(&["history", "--json", "--server", "build-box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let json = json.as_array().unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["server_name"], "build-box");
    assert_eq!(json[0]["server_id"], server_id(&site.server_pub).as_str());
    assert_eq!(json[0]["trace"]["trace_id"], trace.as_str());
    // --server by the id's first digits, and by a server nothing ran on.
    let prefix = &server_id(&site.server_pub)[..8];
    let out = site.run(&["history", "--json", "--server", prefix]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let out = site.run(&["history", "--json", "--server", "00000000"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 0);
    let out = site.run(&["history", "--server", "nobody"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = site.run(&["trace", "show", &trace]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().nth(1),
        Some(format!("server build-box (id {})", server_id(&site.server_pub)).as_str()),
        "{text}"
    );

    // config show: where each setting came from.
    let out = site.run(&["config", "show", "build-box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let config = site.config_dir().join("config.toml");
    let line = |setting: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(setting))
            .unwrap_or_else(|| panic!("no {setting} in:\n{text}"))
            .to_owned()
    };
    assert!(
        line("relay").ends_with(&format!("config {}:2", config.display())),
        "{text}"
    );
    assert!(
        line("cwd").ends_with(&format!("config {}:3", config.display())),
        "{text}"
    );
    assert!(line("server key").contains("known servers"), "{text}");
    assert!(line("client key").ends_with("default key file"), "{text}");
    assert!(line("warm").ends_with("built-in default"), "{text}");
    // Resume is on, for a minute, unless told otherwise.
    assert!(line("resume").contains("60s"), "{text}");
    assert!(line("resume").ends_with("built-in default"), "{text}");
    let resume_line = |args: &[&str]| {
        let out = site.run(args);
        let text = stdout(&out);
        text.lines()
            .find(|l| l.trim_start().starts_with("resume"))
            .unwrap_or_else(|| panic!("no resume in:\n{text}"))
            .to_owned()
    };
    let five = resume_line(&["config", "show", "build-box", "-o", "resume=5m"]);
    assert!(five.contains("300s") && five.ends_with("flag -o"), "{five}");
    let off = resume_line(&["config", "show", "build-box", "--no-resume"]);
    assert!(
        off.contains("off") && off.ends_with("flag --no-resume"),
        "{off}"
    );
    let out = site.run(&["config", "show", "build-box", "--cwd", "/elsewhere"]);
    assert!(
        stdout(&out).contains("/elsewhere") && stdout(&out).contains("flag --cwd"),
        "{}",
        stdout(&out)
    );
    let _ = &site.client_pub;
}

#[test]
fn accept_new_records_on_first_use_and_a_changed_key_is_refused() {
    let site = Site::start();
    let marker = site.path().join("ran");
    let touch = format!("touch {}", marker.display());
    site.write_config(&format!(
        "[servers.build-box]\nrelay = \"{}\"\nserver = \"{}\"\n",
        site.relay_addr, site.server_pub
    ));
    let known = site.config_dir().join("known_servers");

    // Without --accept-new nothing is recorded.
    let out = site.run(&["exec", "build-box", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!known.exists());

    // A nameless relay and server pairing is recorded.
    let out = site.run(&[
        "exec",
        "--relay",
        &site.relay_addr,
        "--server",
        &site.server_pub,
        "--accept-new",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.lines()
            .any(|l| l == format!("- {} http://{}", site.server_pub, site.relay_addr)),
        "{text}"
    );

    // --accept-new records it on the first successful handshake.
    let out = site.run(&["exec", "build-box", "--accept-new", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permanently added `build-box`"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("build-box {}", site.server_pub))),
        "{text}"
    );
    // A second time: already known, nothing more is written or said.
    let out = site.run(&["exec", "build-box", "--accept-new", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), text);

    // The config now offers another key for build-box: refused, as ssh
    // refuses a changed host key, and nothing runs.
    let other = binaries::keygen("exec-server", site.path(), "other.key").unwrap();
    site.write_config(&format!(
        "[servers.build-box]\nrelay = \"{}\"\nserver = \"{other}\"\n",
        site.relay_addr
    ));
    for flags in [&[][..], &["--accept-new"][..]] {
        let mut args = vec!["exec", "build-box"];
        args.extend_from_slice(flags);
        args.extend(["--", "sh", "-c", touch.as_str()]);
        let out = site.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(255), "{err}");
        assert!(err.contains("HAS CHANGED"), "{err}");
        assert!(err.contains(&server_id(&site.server_pub)), "{err}");
        assert!(err.contains(&server_id(&other)), "{err}");
        assert!(
            err.contains("core-client trust build-box --server NEW_KEY --replace"),
            "{err}"
        );
        assert!(!err.contains(&other), "ids, never keys: {err}");
        assert!(!marker.exists(), "the command ran");
    }
    // So is a changed key given with trust, until --replace.
    let out = site.run(&["trust", "build-box", "--server", &other]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("HAS CHANGED"));
    let out = site.run(&["trust", "build-box", "--server", &other, "--replace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.contains(&format!("build-box {other}")), "{text}");
    assert!(
        !text.contains(&format!("build-box {}", site.server_pub)),
        "{text}"
    );
}

#[test]
fn a_known_servers_relay_reaches_it_without_a_relay_flag_or_config() {
    let site = Site::start();
    // The key from the file keygen wrote beside the server's key, and the
    // relay recorded with it.
    let server_pub_file = site.path().join("server.key.pub");
    let out = site.run(&[
        "trust",
        "build-box",
        "--server-file",
        server_pub_file.to_str().unwrap(),
        "--relay",
        &site.relay_addr,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let known = site.config_dir().join("known_servers");
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.lines()
            .any(|l| l == format!("build-box {} http://{}", site.server_pub, site.relay_addr)),
        "{text}"
    );
    assert!(!site.config_dir().join("config.toml").exists());
    let out = site.run(&["exec", "build-box", "--", "sh", "-c", "echo here; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "here\n");
    let out = site.run(&["config", "show", "build-box"]);
    let text = stdout(&out);
    let relay = text
        .lines()
        .find(|l| l.trim_start().starts_with("relay"))
        .unwrap_or_else(|| panic!("no relay in:\n{text}"));
    assert!(
        relay.contains(&site.relay_addr) && relay.contains("known servers"),
        "{text}"
    );

    // A line written by hand, `NAME KEY RELAY`, works the same.
    std::fs::write(
        &known,
        format!("by-hand {} {}\n", site.server_pub, site.relay_addr),
    )
    .unwrap();
    let out = site.run(&["exec", "by-hand", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn exec_name_command_args_without_a_double_dash_as_ssh_takes_them() {
    let site = Site::start();
    let out = site.run(&[
        "trust",
        "build-box",
        "--server",
        &site.server_pub,
        "--relay",
        &site.relay_addr,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The first word after the name starts the command; the options after
    // it, and `--`, are the command's.
    let script = r#"printf '%s|' "$@"; exit 5"#;
    let out = site.run(&[
        "exec",
        "-n",
        "build-box",
        "sh",
        "-c",
        script,
        "sh",
        "-n",
        "--relay",
        "x",
        "--",
        "-t",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "-n|--relay|x|--|-t|");
    // `--` still works, the same.
    let out = site.run(&[
        "exec",
        "build-box",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "-n",
        "--relay",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "-n|--relay|x|");
}

#[test]
fn minus_v_says_each_step_on_stderr_and_never_keys_or_the_command() {
    let site = Site::start();
    let out = site.run(&[
        "trust",
        "build-box",
        "--server",
        &site.server_pub,
        "--relay",
        &site.relay_addr,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let known = site.config_dir().join("known_servers");
    let secret = "s3cr3t-value";
    let script = "echo out-marker; exit 5";
    let token = format!("TOKEN={secret}");
    // Without -v: nothing on stderr.
    let out = site.run(&["exec", "build-box", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stderr(&out), "");
    for flags in [&["-v"][..], &["-vv"][..], &["--verbose"][..]] {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend(["-e", token.as_str()]);
        args.extend(["build-box", "sh", "-c", script]);
        let out = site.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert_eq!(stdout(&out), "out-marker\n");
        let lines: Vec<&str> = err.lines().collect();
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        assert!(lines.iter().all(|l| l.starts_with("debug")), "{err}");
        assert!(has(&format!("known servers: {}", known.display())), "{err}");
        assert!(
            has(&format!(
                "relay http://{} (plain HTTP/2) from known servers {}:2",
                site.relay_addr,
                known.display()
            )),
            "{err}"
        );
        assert!(
            has(&format!("server key id {}", server_id(&site.server_pub))),
            "{err}"
        );
        assert!(has("client key file"), "{err}");
        assert!(
            has(&format!("connecting to http://{}", site.relay_addr)),
            "{err}"
        );
        assert!(has("handshake done"), "{err}");
        // The early data's outcome and the round trips it cost.
        assert!(has("early data: ") || has("early-data ticket"), "{err}");
        assert!(has("round trip(s) before the first event"), "{err}");
        assert!(has("exit status 5"), "{err}");
        // -vv says more: every setting's source, environment by name.
        let vv = flags == ["-vv"];
        assert_eq!(has("debug2: "), vv, "{err}");
        assert_eq!(has("env TOKEN (value not shown) from flag -e"), vv, "{err}");
        // Never a key, the command or a value.
        for never in [
            secret,
            "out-marker",
            site.server_pub.as_str(),
            site.client_pub.as_str(),
        ] {
            assert!(!err.contains(never), "{never} in: {err}");
        }
        let private = std::fs::read_to_string(site.config_dir().join("client.key")).unwrap();
        assert!(!err.contains(private.trim()), "{err}");
    }
    // A relay that cannot be reached: said, with why.
    let out = site.run(&["exec", "-v", "--relay", "127.0.0.1:1", "build-box", "true"]);
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(
        err.contains("debug1: connecting to http://127.0.0.1:1")
            && err.contains("debug1: http://127.0.0.1:1: "),
        "{err}"
    );
}

#[test]
fn relay_addresses_as_typed() {
    let site = Site::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exec = |relay: &str, extra: &[&str]| {
        let mut args = vec!["exec", "--relay", relay, "--server", &site.server_pub];
        args.extend_from_slice(extra);
        args.extend(["--", "echo", "ok"]);
        site.run(&args)
    };
    for form in [
        format!("http://{}", site.relay_addr),
        site.relay_addr.clone(),
        format!("HTTP://{}", site.relay_addr),
    ] {
        let out = exec(&form, &[]);
        assert_eq!(stdout(&out), "ok\n", "{form}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "",
            "{form}: loopback is plain HTTP/2, silently"
        );
    }
    // https:// means TLS, even on loopback: this plain relay is refused
    // with one line, never dialled plain instead.
    let out = exec(&format!("https://{}", site.relay_addr), &[]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");

    // A list of relays: a dead one is passed over for the next.
    let dead_addr = format!("127.0.0.1:{dead}");
    site.write_config(&format!(
        "[defaults]\nrelay = [\"{dead_addr}\", \"{}\"]\nwarm = \"30s\"\n",
        site.relay_addr
    ));
    let out = site.run(&["exec", "--server", &site.server_pub, "--", "echo", "ok"]);
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("trying the next relay"), "{err}");
    // `warm` is the agent's to keep: without one it changes nothing, and
    // nothing else is said.
    assert_eq!(err.lines().count(), 1, "{err}");

    // Nonsense is a usage error.
    let out = exec("ftp://127.0.0.1:1", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unsupported scheme"));
}

#[test]
fn config_files_with_mistakes_exit_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config").join("rex").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let cases = [
        (
            "[servers.a]\nrelay = \"x\"\ncwd = /src\n",
            3,
            "not valid TOML",
        ),
        (
            "[servers.a]\nrelay = \"x\"\nrelays = \"y\"\n",
            3,
            "unknown key `relays` in [servers.a] (did you mean `relay`?)",
        ),
        (
            "[defaults]\n\nresume = \"soon\"\n",
            3,
            "resume: expected true, false or a duration",
        ),
    ];
    for (text, line, needle) in cases {
        std::fs::write(&config, text).unwrap();
        for args in [
            &["exec", "a", "--", "true"][..],
            &["config", "show", "a"][..],
            &["history"][..],
        ] {
            let out = core_client_in(dir.path(), args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            let at = format!("core-client: {}:{line}:", config.display());
            assert!(err.starts_with(&at), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }
    // --config names another file; a missing one is an error too.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[servers.b]\nwarm = 30\n").unwrap();
    let out = core_client_in(
        dir.path(),
        &["--config", other.to_str().unwrap(), "config", "show", "b"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:2:", other.display())),
        "{}",
        stderr(&out)
    );
    let out = core_client_in(
        dir.path(),
        &["--config", "/nonexistent/rex.toml", "config", "show"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_default_key_is_made_once_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = core_client_in(dir.path(), &["keygen"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = stdout(&out).trim().to_owned();
    assert!(public.parse::<proto::keys::PublicKey>().is_ok());
    let key = dir.path().join("config/rex/client.key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    let pub_path = dir.path().join("config/rex/client.key.pub");
    assert_eq!(
        std::fs::read_to_string(&pub_path).unwrap(),
        format!("{public}\n")
    );
    let before = std::fs::read(&key).unwrap();
    let out = core_client_in(dir.path(), &["keygen"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // pubkey reads the default identity.
    let out = core_client_in(dir.path(), &["pubkey"]);
    assert_eq!(stdout(&out).trim(), public);
    // Without it, exec says how to make one.
    let empty = tempfile::tempdir().unwrap();
    let out = core_client_in(
        empty.path(),
        &[
            "exec",
            "--relay",
            "127.0.0.1:1",
            "--server",
            &public,
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("core-client keygen"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_parse_in_bash_and_the_man_page_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = core_client_in(dir.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("core-client.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    for shell in ["zsh", "fish"] {
        let out = core_client_in(dir.path(), &["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = core_client_in(dir.path(), &["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(".TH core-client"), "{}", stdout(&out));
    let out = core_client_in(dir.path(), &["man", "exec"]);
    assert!(
        stdout(&out).contains(".TH core-client-exec"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("accept"), "{}", stdout(&out));
}
