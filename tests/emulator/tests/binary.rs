//! The `link-emulator` binary: forwards until SIGTERM, then says what it
//! carried; bad input is one clear line and exit status 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};

#[test]
fn forwards_until_sigterm_then_reports() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_link-emulator"))
        .args([
            "--to",
            &target.to_string(),
            "--rtt",
            "10ms",
            "--rate",
            "100mbit",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|l| l.split(" -> ").next())
        .expect("listening line")
        .to_owned();
    let mut client = TcpStream::connect(&addr).unwrap();
    let (mut s, _) = server.accept().unwrap();
    client.write_all(b"through").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"through");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut report = String::new();
    out.read_to_string(&mut report).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        report.contains("up: 7 bytes delivered of 7 received"),
        "{report}"
    );
    assert!(report.contains("1 accepted"), "{report}");
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_link-emulator"))
        .args(["--to", "127.0.0.1:1", "--rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate \"fast\""), "{err}");
}
