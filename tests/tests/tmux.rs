//! `core-client exec -t` in a real terminal, driven the way a person would
//! drive it: tmux runs a local shell in a pane, the test types into it
//! (`send-keys`) and reads the screen (`capture-pane`). Through the three
//! built binaries, an interactive remote shell shows its prompt, runs what
//! is typed, is interrupted by Ctrl-C, follows the window's size and runs a
//! REPL; on the way out the local terminal is back as it was, also when
//! the link is cut while it is in raw mode, or when the client is sent
//! SIGTERM. The remote shell is `sh` and `bash` (`core-client exec -t ...
//! -- bash`), and `core-client exec NAME` without a command gives the
//! remote user's login shell on a terminal, as `ssh NAME` does. Every
//! wait polls the screen until the text expected shows, or a generous
//! deadline passes.
//!
//! Without tmux (or bash, or python3) these tests print a skip notice and
//! pass, unless `REX_REQUIRE_TMUX=1` (CI) makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::binaries::ProcStack;
use integration_tests::tmux::{self, Tmux, lines};
use integration_tests::trace_check;

/// Generous: the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

/// What the local shell runs: the remote shell through core-client, then
/// its exit status, with the terminal's settings before and after.
const LOCAL_LINE: &str =
    "stty -a > before.txt; ./rex-shell 2>client.err; echo \"rc=$?\"; stty -a > after.txt";

fn last(screen: &str) -> &str {
    lines(screen).last().copied().unwrap_or_default()
}

fn has_line(screen: &str, line: &str) -> bool {
    lines(screen).contains(&line)
}

/// A relay and an exec-server, a `rex-shell` script running `core-client
/// exec -t` (with `flags`) of an interactive remote `sh` whose prompt is
/// `remote$ `, and a 100x30 tmux pane showing a local `sh` whose prompt is
/// `local$ `. None when tmux is missing (and not required).
fn start(test: &str, flags: &[&str]) -> Option<(ProcStack, Tmux)> {
    if !tmux::available(test) {
        return None;
    }
    let stack = ProcStack::start(&[]).unwrap();
    let mut all = vec!["-t"];
    all.extend_from_slice(flags);
    let cmd = stack.exec_with(&all, &["env", "PS1=remote$ ", "sh", "-i"]);
    tmux::script_for(&cmd, &stack.dir.path().join("rex-shell")).unwrap();
    let tmux = Tmux::start(stack.dir.path(), 100, 30, "env 'PS1=local$ ' sh -i").unwrap();
    tmux.wait_for("the local prompt", WAIT, |s| last(s) == "local$")
        .unwrap();
    Some((stack, tmux))
}

/// The pane's terminal settings, read from outside.
fn pane_settings(tmux: &Tmux) -> String {
    let out = tmux
        .run(&["display", "-p", "-t", "main", "#{pane_tty}"])
        .unwrap();
    let tty = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = Command::new("stty")
        .args(["-a", "-F", &tty])
        .output()
        .unwrap();
    assert!(out.status.success(), "stty -F {tty}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `stty -a` output shows every one of `flags` (`icanon`,
/// `-echo`, ...).
fn shows(settings: &str, flags: &[&str]) -> bool {
    let words: Vec<&str> = settings.split_whitespace().collect();
    flags.iter().all(|f| words.contains(f))
}

/// `stty -a` without the window size (the test changes it on purpose).
fn without_size(settings: &str) -> String {
    settings
        .split(';')
        .filter(|part| {
            let p = part.trim();
            !p.starts_with("rows") && !p.starts_with("columns")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Waits for the local shell to be back, then compares the terminal's
/// settings before and after: the same, and cooked.
fn assert_restored(tmux: &Tmux, dir: &Path, rc: &str) {
    let screen = tmux
        .wait_for(&format!("{rc} and the local prompt"), WAIT, |s| {
            lines(s).iter().any(|l| l.ends_with(rc)) && last(s) == "local$"
        })
        .unwrap();
    let before = std::fs::read_to_string(dir.join("before.txt")).unwrap();
    let after = std::fs::read_to_string(dir.join("after.txt")).unwrap();
    assert_eq!(without_size(&before), without_size(&after), "{screen}");
    let cooked = ["icanon", "echo", "isig", "opost"];
    assert!(shows(&after, &cooked), "{after}");
    assert!(shows(&pane_settings(tmux), &cooked));
}

/// The remote interactive `sh` the sessions run, prompt `remote$ `.
const SH: &[&str] = &["env", "PS1=remote$ ", "sh", "-i"];

/// The remote interactive `bash`, prompt `remote$ ` (no start-up files:
/// the prompt is the test's).
const BASH: &[&str] = &["env", "PS1=remote$ ", "bash", "--norc", "--noprofile", "-i"];

/// A 100x30 tmux pane showing a local `sh` whose prompt is `local$ `, in
/// the stack's directory.
fn local_pane(stack: &ProcStack) -> Tmux {
    let tmux = Tmux::start(stack.dir.path(), 100, 30, "env 'PS1=local$ ' sh -i").unwrap();
    tmux.wait_for("the local prompt", WAIT, |s| last(s) == "local$")
        .unwrap();
    tmux
}

/// As [`start`], with `remote` (a program and its arguments) as the
/// remote command of `rex-shell`.
fn start_remote(test: &str, flags: &[&str], remote: &[&str]) -> Option<(ProcStack, Tmux)> {
    if !tmux::available(test) {
        return None;
    }
    let stack = ProcStack::start(&[]).unwrap();
    let mut all = vec!["-t"];
    all.extend_from_slice(flags);
    let cmd = stack.exec_with(&all, remote);
    tmux::script_for(&cmd, &stack.dir.path().join("rex-shell")).unwrap();
    let tmux = local_pane(&stack);
    Some((stack, tmux))
}

/// Waits until the pane's terminal is in raw mode (the client has taken
/// it over).
fn wait_raw(tmux: &Tmux) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let settings = pane_settings(tmux);
        if shows(&settings, &["-icanon", "-echo", "-isig", "-opost"]) {
            return settings;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the local terminal never went raw: {settings}\n{}",
            tmux.screen().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A person's session with the remote shell `remote` (prompt `remote$ `),
/// through the relay: the prompt, the window's size and type, a typed
/// command, Ctrl-C, a resize, a REPL, `exit` and the local terminal as it
/// was; then the trace.
fn a_person_uses(test: &str, remote: &[&str]) {
    let Some((stack, tmux)) = start_remote(test, &["--print-trace-id"], remote) else {
        return;
    };
    let dir = stack.dir.path();
    tmux.type_line(LOCAL_LINE).unwrap();

    // A prompt appears, and meanwhile the local terminal is raw.
    tmux.wait_for("the remote prompt", WAIT, |s| last(s) == "remote$")
        .unwrap();
    let raw = pane_settings(&tmux);
    assert!(
        shows(&raw, &["-icanon", "-echo", "-isig", "-opost"]),
        "{raw}"
    );

    // The window's size and the terminal's type arrived.
    tmux.type_line("stty size; echo \"term=$TERM\"").unwrap();
    tmux.wait_for("the size", WAIT, |s| {
        has_line(s, "30 100") && lines(s).iter().any(|l| l.starts_with("term="))
    })
    .unwrap();
    let screen = tmux.screen().unwrap();
    let term = lines(&screen)
        .into_iter()
        .find_map(|l| l.strip_prefix("term="))
        .unwrap()
        .to_owned();
    // The pane's TERM (tmux's own terminal type), not the test's.
    let out = tmux.run(&["show", "-gv", "default-terminal"]).unwrap();
    let pane_term = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(term, pane_term, "{screen}");

    // A typed command's output shows.
    tmux.type_line("echo $((6 * 7))").unwrap();
    tmux.wait_for("42", WAIT, |s| has_line(s, "42")).unwrap();

    // Ctrl-C interrupts a sleep and returns to the prompt.
    tmux.type_line("echo sleeping; sleep 1000").unwrap();
    tmux.wait_for("the sleep", WAIT, |s| has_line(s, "sleeping"))
        .unwrap();
    tmux.keys(&["C-c"]).unwrap();
    tmux.wait_for("the prompt after Ctrl-C", WAIT, |s| {
        let l = lines(s);
        l.iter().any(|x| x.contains("^C")) && l.last() == Some(&"remote$")
    })
    .unwrap();
    tmux.type_line("echo back").unwrap();
    tmux.wait_for("the shell after Ctrl-C", WAIT, |s| has_line(s, "back"))
        .unwrap();

    // Resizing the window changes what `stty size` says. (The resize and
    // the keys typed after it travel apart: asked again until it shows.)
    tmux.resize(120, 40).unwrap();
    let resized = (0..12).any(|_| {
        tmux.type_line("stty size").unwrap();
        tmux.wait_for("40 120", Duration::from_secs(5), |s| has_line(s, "40 120"))
            .is_ok()
    });
    assert!(resized, "{}", tmux.screen().unwrap());

    // A REPL with line editing (required with REX_REQUIRE_TMUX=1).
    if tmux::tool(test, "python3", "its REPL") {
        tmux.type_line("python3 -i").unwrap();
        tmux.wait_for("the python prompt", WAIT, |s| last(s) == ">>>")
            .unwrap();
        tmux.type_line("print(6 * 7 * 1000)").unwrap();
        tmux.wait_for("python's answer", WAIT, |s| has_line(s, "42000"))
            .unwrap();
        tmux.type_line("exit()").unwrap();
        tmux.wait_for("the remote prompt again", WAIT, |s| last(s) == "remote$")
            .unwrap();
    }

    // `exit`: the remote status, and the local terminal as it was.
    tmux.type_line("exit").unwrap();
    assert_restored(&tmux, dir, "rc=0");

    // One trace, with the terminal as attributes and the resize and the
    // typing counted.
    let err = std::fs::read_to_string(dir.join("client.err")).unwrap();
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("core-client: trace "))
        .unwrap_or_else(|| panic!("no trace id in {err:?}"))
        .trim()
        .to_owned();
    let spans = trace_check::from_trace_file(&dir.join("traces.jsonl"), &id);
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    assert_eq!(dispatch.attr_bool("rex.terminal"), Some(true));
    assert_eq!(dispatch.attr_i64("rex.terminal.rows"), Some(30));
    assert_eq!(dispatch.attr_i64("rex.terminal.cols"), Some(100));
    let exec = trace_check::one(&spans, telemetry::spans::RPC_SERVER_EXEC);
    assert_eq!(exec.attr_bool("rex.terminal"), Some(true));
    let delivery = trace_check::one(&spans, telemetry::spans::TERMINAL_DELIVERY);
    assert!(delivery.attr_i64("rex.resizes").unwrap() >= 1);
    assert!(delivery.attr_i64("rex.stdin.bytes").unwrap() > 0);
}

#[test]
fn an_interactive_shell_through_the_relay_as_a_person_uses_it() {
    a_person_uses(
        "an_interactive_shell_through_the_relay_as_a_person_uses_it",
        SH,
    );
}

#[test]
fn bash_through_the_relay_as_a_person_uses_it() {
    // `core-client exec -t ... -- bash`, as the "done" says.
    let test = "bash_through_the_relay_as_a_person_uses_it";
    if !tmux::tool(test, "bash", "the bash session") {
        return;
    }
    a_person_uses(test, BASH);
}

#[test]
fn exec_with_no_command_is_the_login_shell_on_a_terminal() {
    let test = "exec_with_no_command_is_the_login_shell_on_a_terminal";
    if !tmux::available(test) {
        return;
    }
    let stack = ProcStack::start(&[]).unwrap();
    let dir = stack.dir.path();
    // A named server, so that the line typed is `core-client exec box`,
    // as `ssh box`.
    let config = dir.join("config").join("rex");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!(
            "[servers.box]\nrelay = {:?}\nserver = {:?}\nkey = {:?}\n",
            stack.relay_url,
            stack.server_pub,
            stack.client_key.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut cmd = integration_tests::binaries::core_client(dir).unwrap();
    cmd.args(["exec", "box"]);
    tmux::script_for(&cmd, &dir.join("rex-shell")).unwrap();
    let tmux = local_pane(&stack);
    tmux.type_line(LOCAL_LINE).unwrap();

    // Stdin and stdout are the pane: a terminal is asked for by default
    // (the local one goes raw), and a prompt appears below the line typed.
    wait_raw(&tmux);
    tmux.wait_for("the login shell's prompt", WAIT, |s| {
        let l = lines(s);
        let typed = l.iter().rposition(|x| x.contains("./rex-shell"));
        typed.is_some_and(|i| l.len() > i + 1 && !l[l.len() - 1].trim().is_empty())
    })
    .unwrap();
    // The prompt is the remote user's; from here on it is ours.
    tmux.type_line("PS1='remote$ '").unwrap();
    tmux.wait_for("the remote prompt", WAIT, |s| last(s) == "remote$")
        .unwrap();

    // A command runs, in the login shell (argv[0] starting with `-`), at
    // the user's home.
    let shell = exec_server::shell::LoginShell::of_this_user();
    let zero = format!("zero={}", shell.argv0().into_string().unwrap());
    tmux.type_line("echo \"zero=$0\"; echo \"home=$(pwd -P)\"; echo $((6 * 7))")
        .unwrap();
    let screen = tmux
        .wait_for("the command's output", WAIT, |s| {
            has_line(s, "42") && last(s) == "remote$"
        })
        .unwrap();
    assert!(has_line(&screen, &zero), "{screen}");
    if let Some(home) = shell.home_dir() {
        let home = format!("home={}", home.canonicalize().unwrap().display());
        assert!(has_line(&screen, &home), "{screen}");
    }

    // `exit` returns to the local shell, its terminal as it was.
    tmux.type_line("exit").unwrap();
    assert_restored(&tmux, dir, "rc=0");
}

#[test]
fn sigterm_to_the_client_in_raw_mode_restores_the_terminal_and_exits_143_with_one_line() {
    let Some((stack, tmux)) = start_remote(
        "sigterm_to_the_client_in_raw_mode_restores_the_terminal_and_exits_143_with_one_line",
        &[],
        SH,
    ) else {
        return;
    };
    let dir = stack.dir.path();
    // The client's pid: a wrapper notes its own, then becomes the client.
    let wrapper = dir.join("rex-pid");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\necho $$ > client.pid\nexec ./rex-shell \"$@\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    tmux.type_line(&LOCAL_LINE.replace("./rex-shell", "./rex-pid"))
        .unwrap();
    tmux.wait_for("the remote prompt", WAIT, |s| last(s) == "remote$")
        .unwrap();
    wait_raw(&tmux);
    let pid: i32 = std::fs::read_to_string(dir.join("client.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_restored(&tmux, dir, "rc=143");
    let err = std::fs::read_to_string(dir.join("client.err")).unwrap();
    assert_eq!(err.lines().count(), 1, "one clear line: {err:?}");
    assert!(err.starts_with("core-client: "), "{err:?}");
    assert!(err.contains("SIGTERM"), "{err:?}");
}

#[test]
fn a_link_cut_in_raw_mode_restores_the_terminal_and_exits_255_with_one_line() {
    // The client tries to come back for 3 s only (a minute by default), so
    // that the wait below never depends on how fast the machine is.
    let Some((mut stack, tmux)) = start(
        "a_link_cut_in_raw_mode_restores_the_terminal_and_exits_255_with_one_line",
        &["-o", "resume=3s"],
    ) else {
        return;
    };
    let dir = stack.dir.path().to_path_buf();
    tmux.type_line(LOCAL_LINE).unwrap();
    tmux.wait_for("the remote prompt", WAIT, |s| last(s) == "remote$")
        .unwrap();
    assert!(shows(&pane_settings(&tmux), &["-icanon", "-echo"]));
    // The relay goes away for good.
    stack.relay.child.kill().unwrap();
    stack.relay.child.wait().unwrap();
    assert_restored(&tmux, &dir, "rc=255");
    let err = std::fs::read_to_string(dir.join("client.err")).unwrap();
    assert_eq!(err.lines().count(), 1, "one clear line: {err:?}");
    assert!(err.starts_with("core-client: "), "{err:?}");
}
