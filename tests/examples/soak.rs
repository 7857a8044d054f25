//! The soak benchmark (`scripts/soak.sh MINUTES`): honest clients running
//! mixed, checked commands (short, bulk with a checksum, interactive on a
//! terminal, stdin) against the built relay and exec-server while the
//! relay is killed and started again, the exec-server's link is cut and
//! its path changed, and 127.0.0.2 floods the relay (see
//! `integration_tests::soak`). Prints commands completed, bytes checked,
//! losses, resumes and each process's memory; exits non-zero if anything
//! was lost.
//!
//! Run: `cargo run -p integration-tests --example soak -- --minutes N`
//! (options: `--clients N` (50), `--bulk-kib N` (256), `--stdin-kib N`
//! (256), `--pause-ms N` (1000), `--relay-every S` (300), `--cut-every S`
//! (60), `--sample-every S` (10), `--flood off`).

use std::process::ExitCode;
use std::time::Duration;

use integration_tests::bench::{parse_args, print_machine, run};
use integration_tests::soak::{self, Options};

fn options() -> Options {
    let (mut minutes, mut clients, mut bulk, mut stdin, mut pause) = (30, 50, 256, 256, 1000);
    let (mut relay_every, mut cut_every, mut sample_every) = (300, 60, 10);
    let mut flood = true;
    parse_args(
        &mut [
            ("--minutes", &mut minutes),
            ("--clients", &mut clients),
            ("--bulk-kib", &mut bulk),
            ("--stdin-kib", &mut stdin),
            ("--pause-ms", &mut pause),
            ("--relay-every", &mut relay_every),
            ("--cut-every", &mut cut_every),
            ("--sample-every", &mut sample_every),
        ],
        &["--flood"],
        |_, value| flood = value.as_deref() != Some("off"),
    );
    let mut options = Options::minutes(minutes as u64);
    options.clients = clients;
    options.bulk_bytes = bulk * 1024;
    options.stdin_bytes = stdin * 1024;
    options.pause = Duration::from_millis(pause as u64);
    options.relay_every = Duration::from_secs(relay_every as u64);
    options.cut_every = Duration::from_secs(cut_every as u64);
    options.sample_every = Duration::from_secs(sample_every as u64);
    options.flood = flood;
    options
}

fn main() -> ExitCode {
    let options = options();
    print_machine();
    println!(
        "soak: {} s, {} clients, bulk {} KiB, stdin {} KiB, relay killed every {} s, \
         link cut every {} s, flood {}",
        options.duration.as_secs(),
        options.clients,
        options.bulk_bytes / 1024,
        options.stdin_bytes / 1024,
        options.relay_every.as_secs(),
        options.cut_every.as_secs(),
        if options.flood { "on" } else { "off" }
    );
    run("soak", "commands were lost", async move {
        let report = soak::run(options).await?;
        for line in report.lines() {
            println!("{line}");
        }
        Ok(report.lost == 0 && report.total() > 0)
    })
}
