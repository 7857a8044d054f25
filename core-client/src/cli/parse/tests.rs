use std::ffi::OsString;
use std::path::Path;

use clap::CommandFactory;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    super::parse_whole(
        std::iter::once("core-client")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect(),
    )
}

fn words(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn exec_args(args: &[&str]) -> ExecArgs {
    match parse(args).unwrap().command {
        CliCommand::Exec(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_arguments_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn exec_takes_a_name_or_flags_and_a_command() {
    let a = exec_args(&["exec", "build-box", "--", "make", "-j4"]);
    assert_eq!(a.name.as_deref(), Some("build-box"));
    assert_eq!(
        a.command,
        vec![OsString::from("make"), OsString::from("-j4")]
    );

    let a = exec_args(&[
        "exec",
        "--relay",
        "host:7600",
        "--relay",
        "[::1]:7600",
        "--server",
        "x",
        "--key",
        "k",
        "-e",
        "A=1",
        "-o",
        "warm=off",
        "--accept-new",
        "--",
        "ls",
        "-la",
    ]);
    assert_eq!(a.name, None);
    assert_eq!(a.server.relay, ["host:7600", "[::1]:7600"]);
    assert_eq!(a.server.server.as_deref(), Some("x"));
    assert_eq!(a.server.env, ["A=1"]);
    assert_eq!(a.server.options, ["warm=off"]);
    assert!(a.server.accept_new);
    assert_eq!(a.command, vec![OsString::from("ls"), OsString::from("-la")]);

    // Without a command (nothing after `--`, or no `--`): the login shell.
    assert!(exec_args(&["exec", "build-box"]).command.is_empty());
    assert!(exec_args(&["exec", "build-box", "--"]).command.is_empty());
    let a = exec_args(&["exec", "--relay", "h", "--server", "x"]);
    assert_eq!((a.name, a.command.len()), (None, 0));
    // As with ssh, the first word after the name starts the command, and
    // every word after it is the command's: options and `--` too.
    let a = exec_args(&["exec", "build-box", "ls", "-la", "--relay", "x", "--", "-t"]);
    assert_eq!(a.name.as_deref(), Some("build-box"));
    assert_eq!(a.command, words(&["ls", "-la", "--relay", "x", "--", "-t"]));
    assert!(a.server.relay.is_empty());
    // Options between the name and the command are exec's, with their
    // values (separate, joined, or in a cluster of shorts).
    let a = exec_args(&[
        "exec",
        "-nt",
        "build-box",
        "--relay",
        "h:1",
        "-e",
        "A=1",
        "-eB=2",
        "--cwd=/x",
        "-o",
        "warm=off",
        "--trace-file",
        "/t",
        "make",
        "-j4",
    ]);
    assert_eq!(a.name.as_deref(), Some("build-box"));
    assert!(a.no_stdin && a.tty);
    assert_eq!(a.server.relay, ["h:1"]);
    assert_eq!(a.server.env, ["A=1", "B=2"]);
    assert_eq!(a.server.options, ["warm=off"]);
    assert_eq!(a.command, words(&["make", "-j4"]));
    // Global options before `exec`, through the whole parser.
    let cli = parse(&[
        "--config",
        "/c.toml",
        "exec",
        "build-box",
        "echo",
        "--config",
    ])
    .unwrap();
    assert_eq!(cli.global.config.as_deref(), Some(Path::new("/c.toml")));
    match cli.command {
        CliCommand::Exec(a) => assert_eq!(a.command, words(&["echo", "--config"])),
        other => panic!("{other:?}"),
    }
    // Other subcommands are left alone.
    assert!(parse(&["trust", "exec", "--server", "x", "y"]).is_err());
    // --relay and --direct exclude each other, as do --server and --server-file.
    assert!(parse(&["exec", "--relay", "h", "--direct", "http://d", "--", "ls"]).is_err());
    assert!(parse(&["exec", "--server", "x", "--server-file", "f", "--", "ls"]).is_err());
}

#[test]
fn keygen_trust_config_history_parse() {
    assert!(matches!(
        parse(&["keygen"]).unwrap().command,
        CliCommand::Keygen { out: None }
    ));
    let CliCommand::Trust(t) = parse(&["trust", "build-box", "--server", "K"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(
        (t.name.as_str(), t.server.as_deref(), t.replace),
        ("build-box", Some("K"), false)
    );
    assert!(parse(&["trust", "build-box"]).is_err(), "a key is required");
    let cli = parse(&[
        "--config",
        "/c.toml",
        "config",
        "show",
        "build-box",
        "--relay",
        "h",
    ])
    .unwrap();
    assert_eq!(
        cli.global.config.as_deref(),
        Some(std::path::Path::new("/c.toml"))
    );
    let CliCommand::Config {
        command: ConfigCommand::Show { name, server },
    } = cli.command
    else {
        panic!()
    };
    assert_eq!(name.as_deref(), Some("build-box"));
    assert_eq!(server.relay, ["h"]);
    let CliCommand::History { server, .. } = parse(&["history", "--server", "build-box"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(server.as_deref(), Some("build-box"));
}

#[test]
fn help_documents_the_address_forms_and_tls() {
    let mut cmd = Cli::command();
    let exec = cmd.find_subcommand_mut("exec").unwrap();
    let help = exec.render_long_help().to_string();
    for needle in [
        "HOST:PORT",
        "port 7600",
        "[IPV6]:PORT",
        "plain HTTP/2 on loopback and private addresses",
        "TLS elsewhere",
        "https:// means TLS (never downgraded to plain)",
        "--ca <FILE>",
        "--accept-new",
        "config show",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn completion_scripts_parse_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        &mut Cli::command(),
        "core-client",
        &mut script,
    );
    let text = String::from_utf8(script).unwrap();
    for sub in ["exec", "trust", "keygen", "completions", "man", "history"] {
        assert!(text.contains(sub), "{sub} missing");
    }
    let path = dir.path().join("core-client.bash");
    std::fs::write(&path, &text).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The other shells render too.
    for shell in [clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "core-client", &mut out);
        assert!(String::from_utf8(out).unwrap().contains("core-client"));
    }
}

#[test]
fn the_man_page_renders() {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(".ie") || text.contains(".TH core-client"),
        "{text}"
    );
    assert!(text.contains("completions"));
}

/// The parser of `exec` alone ([`parse`]'s fast path) must give what the
/// whole parser gives: the same arguments, the same help, the same errors
/// (message and status) for every kind of `exec` command line.
#[test]
fn the_parser_of_exec_alone_agrees_with_the_whole_parser() {
    let lines: &[&[&str]] = &[
        &["exec", "build-box", "--", "make", "-j4"],
        &[
            "exec", "--relay", "a:1", "--relay", "b:2", "--server", "x", "-n", "--", "ls",
        ],
        &[
            "exec",
            "-e",
            "A=1",
            "-o",
            "warm=off",
            "--accept-new",
            "--no-agent",
            "--",
            "sh",
        ],
        &[
            "exec",
            "--trace-file",
            "/t.jsonl",
            "--data-dir",
            "/d",
            "--config",
            "/c.toml",
        ],
        &[
            "exec",
            "build-box",
            "--print-trace-id",
            "--record-args",
            "--strict-records",
        ],
        &["exec", "-t", "--", "top"],
        &["exec"],
        &["exec", "--help"],
        &["exec", "-h"],
        &["exec", "--version"],
        &["exec", "--bogus"],
        &["exec", "-t", "-T", "--", "sh"],
        &["exec", "--strict-records", "--no-records"],
        &["exec", "--relay"],
        &["exec", "a", "b"],
        &["exec", "--", "--help"],
        &["exec", "build-box", "make", "-j4", "--", "x"],
        &["exec", "build-box", "--help", "ls"],
        &["exec", "build-box", "ls", "--help"],
        &[
            "exec",
            "-nt",
            "build-box",
            "-e",
            "A=1",
            "-eB=2",
            "--cwd=/x",
            "ls",
        ],
        &["exec", "--relay", "h", "--server", "x", "ls", "-la"],
        &["exec", "--trace-file", "/t", "build-box", "--bogus", "ls"],
        &["exec", "-vv", "build-box", "ls", "-v"],
        &["exec", "-v", "--verbose", "build-box", "-n", "ls"],
    ];
    let outcome = |r: Result<Cli, clap::Error>| match r {
        Ok(cli) => format!("{:?} {:?}", cli.global, cli.command),
        Err(e) => format!("{:?} {} {}", e.kind(), e.exit_code(), e.render()),
    };
    for line in lines {
        let args = || std::iter::once("core-client").chain(line.iter().copied());
        let whole = outcome(super::parse_whole(args().map(OsString::from).collect()));
        let alone = outcome(super::parse_exec(args().map(OsString::from).collect()));
        assert_eq!(alone, whole, "core-client {}", line.join(" "));
    }
}
