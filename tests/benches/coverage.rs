//! How much of each command's `tool.dispatch` its tiled stages explain,
//! over many commands, on a quiet machine and with CPU hogs running: three
//! processes on loopback (relay, exec-server, one `core-client exec` per
//! command) and no collector, read back from the client's local trace
//! file, where the exec-server's stages are placed on the client's clock.
//!
//! ```sh
//! cargo bench -p integration-tests --bench coverage
//! # options after `--`: --commands N (default 50) --hogs H (default 3)
//! ```
//!
//! It fails only when a command fails or its trace is missing stages,
//! never because the machine is slow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::otlp::RecordedSpan;
use integration_tests::trace_check;
use telemetry::spans;

fn main() {
    let mut commands = 50usize;
    let mut hogs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--commands" => commands = args.next().and_then(|v| v.parse().ok()).unwrap_or(commands),
            "--hogs" => hogs = args.next().and_then(|v| v.parse().ok()).unwrap_or(hogs),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    let stack = ProcStack::start(&[]).unwrap();
    let quiet = measure(&stack, commands);
    let hogging: Vec<Child> = (0..hogs)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let loaded = measure(&stack, commands);
    for mut hog in hogging {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    println!(
        "coverage of tool.dispatch by its tiled stages, {commands} `core-client exec -- true` each:"
    );
    report("quiet", &quiet);
    report(&format!("with {hogs} CPU hogs"), &loaded);
}

/// Each command's coverage (0.0 to 1.0) by the stages of its path.
fn measure(stack: &ProcStack, commands: usize) -> Vec<f64> {
    let traces = stack.dir.path().join("traces.jsonl");
    (0..commands)
        .map(|_| {
            let out = stack
                .exec_with(&["--print-trace-id"], &["true"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = binaries::printed_trace_id(&out).unwrap();
            let all = trace_check::from_trace_file(&traces, &id);
            let dispatch = trace_check::one(&all, spans::TOOL_DISPATCH).clone();
            let path = trace_check::path_spans(&all)
                .unwrap_or_else(|| panic!("trace {id} lacks a stage of its path"));
            let mut tree: Vec<RecordedSpan> = vec![dispatch.clone()];
            tree.extend(path);
            trace_check::coverage(&tree, &dispatch)
        })
        .collect()
}

fn report(label: &str, values: &[f64]) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "  {label}: p50 {:.4}, p10 {:.4}, min {:.4}",
        at(0.5),
        at(0.1),
        v[0]
    );
}
