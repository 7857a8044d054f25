//! `core-client report` and `probe`, run as the binary: numbers checked
//! against ones computed by hand on generated trace files, gates and their
//! exit codes, an A/B comparison that tells a known shift from noise, bad
//! input told in one line with the rest still counted, Jaeger as a source,
//! and `probe` against the three processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::sink::{SinkConfig, TraceSink};
use integration_tests::synthetic::{self, Command as Synthetic, Rng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const MS: u64 = 1_000_000;

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn write(path: &Path, commands: &[Synthetic]) {
    let mut text = String::new();
    for c in commands {
        for line in c.lines() {
            text.push_str(&line);
            text.push('\n');
        }
    }
    std::fs::write(path, text).unwrap();
}

fn report(dir: &Path, args: &[&str]) -> Output {
    binaries::core_client(dir)
        .unwrap()
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ns(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Twenty commands whose `session.acquire` takes 1..=20 ms (every fifth
/// cold), `rpc.server.exec` 2 ms, each transit 0.1 ms and each small stage
/// 10 µs: the dispatch is 2.25 ms + the acquire. Even ones are `make`,
/// printing 1 ms after the dispatch starts; odd ones `true`, printing
/// nothing. Command i starts (20 - i) × 10 + 5 minutes ago (far from any
/// filter's edge, however long the test takes to get there).
fn twenty() -> Vec<Synthetic> {
    let now = now_ns();
    (1..=20u64)
        .map(|i| {
            let ago = ((20 - i) * 600 + 300) * 1_000 * MS;
            let mut c = Synthetic::new(u128::from(i), now - ago, i * MS, 2 * MS);
            c.warmth = if i % 5 == 0 { "cold" } else { "warm" };
            if i % 2 == 0 {
                c.program = "make".into();
                c.first_output_ns = Some(MS);
            }
            c
        })
        .collect()
}

#[test]
fn the_numbers_are_the_ones_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twenty.jsonl");
    write(&file, &twenty());
    let out = report(
        dir.path(),
        &["--file", file.to_str().unwrap(), "--json", "--top", "3"],
    );
    let r = json(&out);
    assert_eq!(r["schema"], "rex.report/1");
    assert_eq!(r["commands"], 20);
    assert_eq!(r["source"]["lines"], 40);
    assert_eq!(r["source"]["skipped_lines"], 0);
    // Dispatches: 3.25 ms ... 22.25 ms; nearest rank: p50 is the 10th,
    // p90 the 18th.
    let d = &r["dispatch"];
    assert_eq!(ns(&d["p50_ns"]), 12_250_000);
    assert_eq!(ns(&d["p90_ns"]), 20_250_000);
    assert_eq!(ns(&d["max_ns"]), 22_250_000);
    let acquire = &r["stages_by_name"]["session.acquire"];
    assert_eq!(ns(&acquire["count"]), 20);
    assert_eq!(ns(&acquire["p50_ns"]), 10 * MS);
    assert_eq!(ns(&acquire["p90_ns"]), 18 * MS);
    // Its share grows with i: the median command's is 10 / 12.25.
    let share = acquire["share"]["p50"].as_f64().unwrap();
    assert!((share - 10.0 / 12.25).abs() < 1e-9, "{share}");
    // Cold: i = 5, 10, 15, 20; warm: the sixteen others.
    let warmth = r["warmth"].as_array().unwrap();
    let row = |w: &str| warmth.iter().find(|r| r["warmth"] == w).unwrap();
    assert_eq!(ns(&row("cold")["dispatch"]["count"]), 4);
    assert_eq!(ns(&row("cold")["dispatch"]["p50_ns"]), 12_250_000);
    assert_eq!(ns(&row("cold")["acquire"]["p50_ns"]), 10 * MS);
    assert_eq!(ns(&row("warm")["dispatch"]["count"]), 16);
    // Warm acquires 1,2,3,4,6,7,8,9,...: the 8th is 9 ms.
    assert_eq!(ns(&row("warm")["dispatch"]["p50_ns"]), 11_250_000);
    assert_eq!(ns(&r["cold_start_cost"]["p50_ns"]), MS);
    // First output: make printed at 1 ms, true never.
    let programs = r["first_output"].as_array().unwrap();
    let make = programs.iter().find(|p| p["program"] == "make").unwrap();
    assert_eq!(make["commands"], 10);
    assert_eq!(make["without_output"], 0);
    assert_eq!(ns(&make["before_first_output"]["p50_ns"]), MS);
    // make's dispatches: 2.25 + 2, 4, ..., 20 ms; after the first output:
    // those minus 1 ms; the 5th is 10.25 ms.
    assert_eq!(ns(&make["after_first_output"]["p50_ns"]), 11_250_000);
    let silent = programs.iter().find(|p| p["program"] == "true").unwrap();
    assert_eq!(silent["without_output"], 10);
    assert!(silent["after_first_output"].is_null(), "{silent}");
    assert_eq!(r["without_output"], 10);
    // The slowest is i = 20 (cold): its acquire (20 ms) dominates, and
    // within it the handshake (10 ms, half of it).
    let slowest = r["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 3);
    assert_eq!(slowest[0]["trace_id"], format!("{:032x}", 20));
    assert_eq!(slowest[0]["dominant"], "session.acquire/noise.handshake");
    assert_eq!(ns(&slowest[0]["dominant_ns"]), 10 * MS);
    assert_eq!(slowest[1]["trace_id"], format!("{:032x}", 19));
    assert_eq!(slowest[1]["dominant"], "session.acquire");
    // The stages tile every dispatch: nothing unattributed.
    assert_eq!(ns(&r["unattributed"]["max_ns"]), 0);
    // The CLI's own stages are there.
    let cli = r["cli"].as_array().unwrap();
    assert_eq!(cli[0]["name"], "cli.run");
    assert_eq!(ns(&cli[0]["count"]), 20);

    // The same as a table.
    let out = report(dir.path(), &["--file", file.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("20 commands from "), "{text}");
    for needle in [
        "session.acquire",
        "    noise.handshake",
        "a cold start costs +1.00ms at p50",
        "(10 printed nothing)",
        &format!("{:032x}", 20),
        "dominant: session.acquire/noise.handshake 10.0ms",
        "(unattributed)",
        "cli.run",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

#[test]
fn filters_keep_the_commands_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twenty.jsonl");
    write(&file, &twenty());
    let f = file.to_str().unwrap();
    let count = |args: &[&str]| -> u64 {
        let mut all = vec!["--file", f, "--json"];
        all.extend(args);
        ns(&json(&report(dir.path(), &all))["commands"])
    };
    assert_eq!(count(&["--program", "make"]), 10);
    assert_eq!(count(&["--program", "nothing"]), 0);
    // The last 50 minutes hold i >= 16 (45 minutes ago and later).
    assert_eq!(count(&["--since", "50m"]), 5);
    assert_eq!(count(&["--until", "50m"]), 15);
    let server = format!("{:032x}", 0xabcd);
    assert_eq!(count(&["--server", &server]), 20);
    assert_eq!(count(&["--server", &server[..8]]), 20);
    assert_eq!(count(&["--server", "00ff"]), 0);
    let out = report(dir.path(), &["--file", f, "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--since") && err.contains("RFC 3339"), "{err}");
}

#[test]
fn gates_pass_fail_refuse_and_want_enough_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twenty.jsonl");
    write(&file, &twenty());
    let f = file.to_str().unwrap();
    let gates = |gates: &[&str], extra: &[&str]| -> Output {
        let mut args = vec!["--file", f];
        for g in gates {
            args.extend(["--gate", g]);
        }
        args.extend(extra);
        report(dir.path(), &args)
    };
    let gate_lines = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("  PASS") || l.starts_with("  FAIL"))
            .map(str::to_owned)
            .collect()
    };
    // True: the median command's acquire share is 10/12.25; p90 of the
    // transit legs (0.2 ms a command) under 1 ms; cold / warm = 12.25 /
    // 11.25.
    let out = gates(
        &[
            "share(session.acquire).p50 >= 0.30",
            "p90(link.transit) < 1ms",
            "cold.p50 / warm.p50 < 3",
        ],
        &["--min-count", "4"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines = gate_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("  PASS")), "{lines:?}");
    // One false: exit 1, the others still shown.
    let out = gates(&["p90(link.transit) < 1ms", "all.p50 < 5ms"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let lines = gate_lines(&out);
    assert!(
        lines[0].starts_with("  PASS") && lines[1].starts_with("  FAIL"),
        "{lines:?}"
    );
    assert!(lines[1].contains("12.2ms < 5.00ms"), "{lines:?}");
    // Too little data: four cold commands are under the default minimum.
    let out = gates(&["cold.p50 / warm.p50 < 3"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let lines = gate_lines(&out);
    assert!(
        lines[0].contains("too little data") && lines[0].contains("4 commands"),
        "{lines:?}"
    );
    // Malformed: exit 2, one line, nothing read.
    let out = gates(&["p90(link.transit) < 2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("give the number a unit"), "{err}");
    assert!(out.stdout.is_empty());
    // In JSON too.
    let out = gates(&["all.count == 20"], &["--json"]);
    let r = json(&out);
    assert_eq!(r["gates"][0]["pass"], true);
    assert_eq!(r["gates"][0]["gate"], "all.count == 20");
}

#[test]
fn a_baseline_tells_a_known_shift_from_noise() {
    let dir = tempfile::tempdir().unwrap();
    let population = |seed: u64, exec_median: f64, start: u64| -> Vec<Synthetic> {
        let mut rng = Rng::new(seed);
        (0..60u64)
            .map(|i| {
                let mut c = synthetic::realistic(i, start, &mut rng);
                c.trace = u128::from(seed) << 64 | u128::from(i);
                c.exec_ns = rng.latency(exec_median);
                c.first_output_ns = None;
                c
            })
            .collect()
    };
    let base = dir.path().join("base.jsonl");
    let slower = dir.path().join("slower.jsonl");
    let same = dir.path().join("same.jsonl");
    write(&base, &population(1, 2.5e6, 0));
    write(&slower, &population(2, 5e6, 0));
    write(&same, &population(3, 2.5e6, 0));
    let compare = |current: &Path| -> Value {
        let r = json(&report(
            dir.path(),
            &[
                "--file",
                current.to_str().unwrap(),
                "--baseline",
                base.to_str().unwrap(),
                "--json",
            ],
        ));
        r["comparison"].clone()
    };
    let row = |c: &Value, what: &str| -> Value {
        c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["what"] == what)
            .unwrap()
            .clone()
    };
    let c = compare(&slower);
    assert_eq!(c["baseline_commands"], 60);
    assert!(c["method"].as_str().unwrap().contains("Mann-Whitney"));
    let exec = row(&c, "rpc.server.exec");
    assert_eq!(exec["verdict"], "slower", "{exec}");
    assert!(exec["p_value"].as_f64().unwrap() < 0.01);
    assert!(exec["prob_slower"].as_f64().unwrap() > 0.7);
    assert_eq!(row(&c, "tool.dispatch")["verdict"], "slower");
    // Stages that did not change are not called different.
    assert_eq!(row(&c, "rpc.client.queue")["verdict"], "no difference");
    let c = compare(&same);
    assert_eq!(
        row(&c, "rpc.server.exec")["verdict"],
        "no difference",
        "{c}"
    );
    assert_eq!(row(&c, "tool.dispatch")["verdict"], "no difference", "{c}");
    // Six cold commands a side are under the minimum of ten.
    assert_eq!(row(&c, "cold")["verdict"], "too little data");

    // A window of the same source: the older half was slower.
    let now = now_ns();
    let mut file = population(4, 5e6, now - 3_600 * 1_000 * MS);
    file.extend(population(5, 2.5e6, now - 600 * 1_000 * MS));
    let both = dir.path().join("both.jsonl");
    write(&both, &file);
    let r = json(&report(
        dir.path(),
        &[
            "--file",
            both.to_str().unwrap(),
            "--since",
            "15m",
            "--baseline",
            "2h..15m",
            "--json",
        ],
    ));
    assert_eq!(r["commands"], 60);
    assert_eq!(r["comparison"]["baseline_commands"], 60);
    assert_eq!(
        row(&r["comparison"], "rpc.server.exec")["verdict"],
        "faster"
    );
    let text = String::from_utf8(
        report(
            dir.path(),
            &[
                "--file",
                both.to_str().unwrap(),
                "--since",
                "15m",
                "--baseline",
                "2h..15m",
            ],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("compared with the window 2h..15m (60 commands; now 60)"),
        "{text}"
    );
    // Neither a file nor a window.
    let out = report(
        dir.path(),
        &[
            "--file",
            both.to_str().unwrap(),
            "--baseline",
            "no-such-file",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file either"));
}

#[test]
fn bad_input_is_told_in_one_line_and_the_rest_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let good = twenty();
    let mut text = String::new();
    for (i, c) in good.iter().enumerate() {
        for line in c.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        if i == 3 {
            text.push_str("not json at all\n");
            // A line from a newer format: fields this reader does not know.
            let newer =
                good[0].lines()[0].replacen('{', "{\"formatVersion\":9,\"extra\":[1,2],", 1);
            text.push_str(&newer.replace(&format!("{:032x}", 1), &format!("{:032x}", 99)));
            text.push('\n');
            text.push_str("{\"someOtherDocument\": true}\n");
        }
    }
    // The last line is cut short, as a file being written can be.
    let cut = good[0].lines()[0].clone();
    text.push_str(&cut[..cut.len() / 2]);
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, &text).unwrap();
    let out = report(dir.path(), &["--file", file.to_str().unwrap(), "--json"]);
    let r = json(&out);
    // The twenty, and the newer-format line's command.
    assert_eq!(r["commands"], 21);
    assert_eq!(r["source"]["skipped_lines"], 2);
    let at = r["source"]["skipped_at"].as_array().unwrap();
    assert!(at[0].as_str().unwrap().ends_with("bad.jsonl:9"), "{at:?}");
    assert_eq!(r["source"]["truncated"].as_array().unwrap().len(), 1);
    let out = report(dir.path(), &["--file", file.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2 unreadable lines skipped"), "{text}");
    assert!(text.contains("is cut short (not counted)"), "{text}");

    // A foreign OTLP JSON file: one pretty-printed document of another
    // program's spans. Read, and said to hold no commands.
    let foreign = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "GET /",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000"
        }]}]
    }]});
    let path = dir.path().join("foreign.json");
    std::fs::write(&path, serde_json::to_string_pretty(&foreign).unwrap()).unwrap();
    let out = report(dir.path(), &["--file", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("no commands: 1 trace read, none with a tool.dispatch span"),
        "{text}"
    );
    assert!(!text.contains("unreadable"), "{text}");

    // An empty file.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = report(dir.path(), &["--file", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("0 commands from ")
    );

    // A missing file and an unreachable Jaeger: one line, exit 3.
    for args in [
        vec!["--file", "/nonexistent/traces.jsonl"],
        vec!["--jaeger", "http://127.0.0.1:9", "--service", "core-client"],
    ] {
        let out = report(dir.path(), &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("core-client: "), "{err}");
    }
}

#[test]
fn the_trace_file_and_what_was_rotated_away() {
    let dir = tempfile::tempdir().unwrap();
    let trace_file = dir.path().join("traces.jsonl");
    let commands = twenty();
    // Command 11's client line went into `.1`, its exec-server stages
    // into the file after the rotation.
    let [client, server] = commands[10].lines();
    let rotated = PathBuf::from(format!("{}.1", trace_file.display()));
    write(&rotated, &commands[..10]);
    let older = std::fs::read_to_string(&rotated).unwrap();
    std::fs::write(&rotated, format!("{older}{client}\n")).unwrap();
    write(&trace_file, &commands[11..]);
    let newer = std::fs::read_to_string(&trace_file).unwrap();
    std::fs::write(&trace_file, format!("{server}\n{newer}")).unwrap();
    std::fs::write(
        format!("{}.dropped", trace_file.display()),
        "1795432186587685591\n",
    )
    .unwrap();
    // core_client() points REX_TRACE_FILE at DIR/traces.jsonl.
    let r = json(&report(dir.path(), &["--json"]));
    assert_eq!(r["commands"], 20);
    assert_eq!(r["source"]["read"].as_array().unwrap().len(), 2);
    assert_eq!(
        r["source"]["rotated_away_before"],
        "2026-11-23T11:09:46.587685Z"
    );
    // The split command is one command, whole.
    assert_eq!(ns(&r["stages_by_name"]["rpc.server.exec"]["count"]), 20);
    assert_eq!(ns(&r["unattributed"]["max_ns"]), 0);
    let text = String::from_utf8(report(dir.path(), &[]).stdout).unwrap();
    assert!(
        text.contains("and 1 older generation") && text.contains("rotated away"),
        "{text}"
    );
    // No trace file yet: exit 3 with one line.
    let empty = tempfile::tempdir().unwrap();
    let out = report(empty.path(), &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn jaeger_is_a_source() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sink = runtime
        .block_on(TraceSink::start(
            SinkConfig::loopback(100_000),
            CancellationToken::new(),
        ))
        .unwrap();
    let stack = ProcStack::start(&[]).unwrap();
    for _ in 0..3 {
        let out = stack
            .exec(&["echo", "hi"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", sink.otlp_endpoint())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let page = stack.dir.path().join("page.html");
    let r = json(&report(
        stack.dir.path(),
        &[
            "--jaeger",
            &sink.query_url(),
            "--service",
            "core-client",
            "--json",
            "--html",
            page.to_str().unwrap(),
        ],
    ));
    assert_eq!(r["source"]["kind"], "jaeger");
    // The page's waterfalls are drawn from the same answer.
    let html = std::fs::read_to_string(&page).unwrap();
    for id in ["fall-median", "fall-slowest"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(!html.contains("were not found again"));
    assert!(!html.contains("could not be read again"));
    assert_eq!(r["commands"], 3);
    assert!(r["stages_by_name"]["session.acquire"].is_object(), "{r}");
    let programs = r["first_output"].as_array().unwrap();
    assert_eq!(programs[0]["program"], "echo");
    // A service with no traces: no commands, not an error.
    let r = json(&report(
        stack.dir.path(),
        &[
            "--jaeger",
            &sink.query_url(),
            "--service",
            "nobody",
            "--json",
        ],
    ));
    assert_eq!(r["commands"], 0);
    drop(runtime);
}

#[test]
fn probe_runs_n_commands_and_reports_exactly_those() {
    let stack = ProcStack::start(&[]).unwrap();
    let dir = stack.dir.path();
    // A command run before, which the probe's report must not count.
    assert!(stack.exec(&["true"]).output().unwrap().status.success());
    let key = stack.client_key.to_str().unwrap();
    let probe = |flags: &[&str]| -> Output {
        binaries::core_client(dir)
            .unwrap()
            .arg("probe")
            .args([
                "--relay",
                &stack.relay_url,
                "--server",
                &stack.server_pub,
                "--key",
                key,
            ])
            .args(flags)
            .args(["--", "echo", "probe"])
            .output()
            .unwrap()
    };
    let out = probe(&[
        "--count",
        "6",
        "--cold",
        "--warm",
        "--json",
        "--min-count",
        "1",
    ]);
    let r = json(&out);
    assert_eq!(r["commands"], 6);
    let warmth = r["warmth"].as_array().unwrap();
    let count = |w: &str| {
        warmth
            .iter()
            .find(|r| r["warmth"] == w)
            .map_or(0, |r| ns(&r["dispatch"]["count"]))
    };
    assert_eq!((count("cold"), count("warm")), (3, 3), "{warmth:?}");
    assert!(r["cold_start_cost"].is_object());
    assert_eq!(r["slowest"].as_array().unwrap().len(), 6);
    // Warm only, two at a time, with a gate.
    let out = probe(&[
        "--count",
        "4",
        "--concurrency",
        "2",
        "--gate",
        "warm.count == 4",
        "--min-count",
        "1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("4 commands from the trace file"), "{text}");
    assert!(text.contains("PASS  warm.count == 4"), "{text}");
    // Every probe command is in the trace file like any other: the report
    // of the whole file has them and the exec before them.
    let r = json(&report(dir, &["--json"]));
    assert_eq!(r["commands"], 11);
    // A probe that cannot reach its server: one line, 255.
    let out = binaries::core_client(dir)
        .unwrap()
        .args([
            "probe",
            "--relay",
            "http://127.0.0.1:9",
            "--server",
            &stack.server_pub,
            "--key",
            key,
        ])
        .args(["--count", "2", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The scale of a realistic file, small here (the benchmark times
/// 100,000): the numbers come out and memory holds no spans.
#[test]
fn a_realistic_mix_reports_cold_and_warm_and_programs() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(7);
    let commands: Vec<Synthetic> = (0..500)
        .map(|i| synthetic::realistic(i, now_ns() - 600 * 1_000 * MS, &mut rng))
        .collect();
    let file = dir.path().join("mix.jsonl");
    write(&file, &commands);
    let r = json(&report(
        dir.path(),
        &["--file", file.to_str().unwrap(), "--json"],
    ));
    assert_eq!(r["commands"], 500);
    let warmth = r["warmth"].as_array().unwrap();
    assert_eq!(warmth.len(), 2);
    assert_eq!(ns(&warmth[0]["dispatch"]["count"]), 50);
    assert_eq!(r["first_output"].as_array().unwrap().len(), 3);
    assert_eq!(r["without_output"], 166);
    assert_eq!(ns(&r["unattributed"]["max_ns"]), 0);
}
