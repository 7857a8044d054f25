//! Synthetic trace files: commands with known stage durations, written as
//! the CLI writes its local trace file (OTLP JSON, one line per service
//! and batch), so that a report's numbers can be checked against numbers
//! computed by hand, and a report over a large file can be timed.
//!
//! Each command's stages tile its dispatch as the real client's do:
//! `dispatch.prepare → session.acquire → rpc.client.queue →
//! relay.frame.send → link.transit → relay.frame.recv (exec-server) →
//! rpc.server.exec → link.transit → relay.frame.recv → terminal.handoff`,
//! with `exec.first_output` and `terminal.delivery` alongside, under
//! `cli.run`.

use serde_json::{Value, json};

/// One command to write.
#[derive(Debug, Clone)]
pub struct Command {
    /// Its trace id.
    pub trace: u128,
    /// When `cli.run` starts, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// `process.executable.name`.
    pub program: String,
    /// `rex.server.id`.
    pub server: String,
    /// `cold`, `warm` or `waited`.
    pub warmth: &'static str,
    /// `session.acquire`'s time (cold: split into connect, handshake, init).
    pub acquire_ns: u64,
    /// `rpc.server.exec`'s time (spawn a quarter, run the rest).
    pub exec_ns: u64,
    /// Each `link.transit` leg's time.
    pub transit_ns: u64,
    /// Time from the dispatch's start to its first output, if it printed.
    pub first_output_ns: Option<u64>,
    /// Each small stage's time (prepare, queue, send, receive, handoff).
    pub small_ns: u64,
}

impl Command {
    /// A plain command: `true` on server `s1`, warm, with the given times.
    pub fn new(trace: u128, start_ns: u64, acquire_ns: u64, exec_ns: u64) -> Command {
        Command {
            trace,
            start_ns,
            program: "true".into(),
            server: format!("{:032x}", 0xabcdu128),
            warmth: "warm",
            acquire_ns,
            exec_ns,
            transit_ns: 100_000,
            first_output_ns: None,
            small_ns: 10_000,
        }
    }

    /// The dispatch's time: the sum of its tiled stages.
    pub fn dispatch_ns(&self) -> u64 {
        // prepare + acquire + queue + send + 2 transits + 2 receives +
        // exec + handoff.
        self.small_ns * 5 + self.acquire_ns + 2 * self.transit_ns + self.exec_ns
    }

    /// The command's lines: the client's spans, then the exec-server's
    /// stages the client placed (as the trace file holds them).
    pub fn lines(&self) -> [String; 2] {
        let mut client = Spans::new(self.trace, 1);
        let mut server = Spans::new(self.trace, 2);
        let s = self.small_ns;
        let t0 = self.start_ns;
        let startup = 2_000_000;
        let dispatch_start = t0 + startup;
        let dispatch_end = dispatch_start + self.dispatch_ns();
        let run = client.id();
        let dispatch = client.id();
        client.push(run, 0, "cli.run", t0, dispatch_end + 1_000_000, vec![]);
        let cli_startup = client.id();
        client.push(cli_startup, run, "cli.startup", t0, dispatch_start, vec![]);
        let cli_flush = client.id();
        client.push(
            cli_flush,
            run,
            "cli.flush",
            dispatch_end,
            dispatch_end + 1_000_000,
            vec![],
        );
        client.push(
            dispatch,
            run,
            "tool.dispatch",
            dispatch_start,
            dispatch_end,
            vec![
                str_attr("process.executable.name", &self.program),
                str_attr("rex.server.id", &self.server),
            ],
        );
        let mut at = dispatch_start;
        let at = &mut at;
        stage(&mut client, at, dispatch, "dispatch.prepare", s, vec![]);
        let (acquire, acquire_start) = stage(
            &mut client,
            at,
            dispatch,
            "session.acquire",
            self.acquire_ns,
            vec![
                str_attr("rex.session.warmth", self.warmth),
                bool_attr("rex.session.reused", self.warmth != "cold"),
            ],
        );
        if self.warmth == "cold" {
            let part = self.acquire_ns / 4;
            let mut sub = acquire_start;
            for (name, len) in [
                ("relay.connect", part),
                ("noise.handshake", 2 * part),
                ("session.init", self.acquire_ns - 3 * part),
            ] {
                let id = client.id();
                client.push(id, acquire, name, sub, sub + len, vec![]);
                sub += len;
            }
        }
        stage(&mut client, at, dispatch, "rpc.client.queue", s, vec![]);
        stage(
            &mut client,
            at,
            dispatch,
            "relay.frame.send",
            s,
            vec![str_attr("rex.message", "exec")],
        );
        stage(
            &mut client,
            at,
            dispatch,
            "link.transit",
            self.transit_ns,
            vec![str_attr("rex.direction", "to_server")],
        );
        let placed = || bool_attr("rex.remote.placed", true);
        stage(
            &mut server,
            at,
            dispatch,
            "relay.frame.recv",
            s,
            vec![placed()],
        );
        let exec_start = *at;
        let (exec, _) = stage(
            &mut server,
            at,
            dispatch,
            "rpc.server.exec",
            self.exec_ns,
            vec![placed()],
        );
        let spawn = self.exec_ns / 4;
        let spawn_id = server.id();
        server.push(
            spawn_id,
            exec,
            "process.spawn",
            exec_start,
            exec_start + spawn,
            vec![placed()],
        );
        let run_id = server.id();
        server.push(
            run_id,
            exec,
            "process.run",
            exec_start + spawn,
            *at,
            vec![placed()],
        );
        stage(
            &mut client,
            at,
            dispatch,
            "link.transit",
            self.transit_ns,
            vec![str_attr("rex.direction", "to_client")],
        );
        stage(
            &mut client,
            at,
            dispatch,
            "relay.frame.recv",
            s,
            vec![str_attr("rex.message", "exited")],
        );
        stage(&mut client, at, dispatch, "terminal.handoff", s, vec![]);
        let delivery = client.id();
        client.push(
            delivery,
            dispatch,
            "terminal.delivery",
            *at - s,
            *at,
            vec![],
        );
        if let Some(first) = self.first_output_ns {
            let id = client.id();
            client.push(
                id,
                dispatch,
                "exec.first_output",
                dispatch_start,
                dispatch_start + first,
                vec![],
            );
        }
        [client.line("core-client"), server.line("exec-server")]
    }
}

/// A stage of `len` from `at` (which moves on to its end): its id and start.
fn stage(
    spans: &mut Spans,
    at: &mut u64,
    parent: u64,
    name: &str,
    len: u64,
    attrs: Vec<Value>,
) -> (u64, u64) {
    let id = spans.id();
    let start = *at;
    spans.push(id, parent, name, start, start + len, attrs);
    *at = start + len;
    (id, start)
}

/// The spans of one line.
struct Spans {
    trace: u128,
    next: u64,
    spans: Vec<Value>,
}

impl Spans {
    /// Spans of `trace` whose ids come from a sequence of their own
    /// (`stream` tells the client's from the exec-server's).
    fn new(trace: u128, stream: u64) -> Self {
        Spans {
            trace,
            next: (trace as u64) ^ (stream << 56),
            spans: Vec::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next = self
            .next
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.next | 1
    }

    fn push(&mut self, id: u64, parent: u64, name: &str, start: u64, end: u64, attrs: Vec<Value>) {
        let mut span = json!({
            "traceId": format!("{:032x}", self.trace),
            "spanId": format!("{id:016x}"),
            "name": name,
            "kind": 1,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": end.to_string(),
        });
        if parent != 0 {
            span["parentSpanId"] = json!(format!("{parent:016x}"));
        }
        if !attrs.is_empty() {
            span["attributes"] = Value::Array(attrs);
        }
        self.spans.push(span);
    }

    fn line(self, service: &str) -> String {
        json!({
            "resourceSpans": [{
                "resource": {"attributes": [str_attr("service.name", service), str_attr("host.name", "synthetic")]},
                "scopeSpans": [{"scope": {"name": service}, "spans": self.spans}]
            }]
        })
        .to_string()
    }
}

fn str_attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn bool_attr(key: &str, value: bool) -> Value {
    json!({"key": key, "value": {"boolValue": value}})
}

/// A deterministic stream of pseudo-random numbers (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A skewed latency around `median` (log-uniform within ×e^±1).
    pub fn latency(&mut self, median: f64) -> u64 {
        (median * (2.0 * (self.unit() - 0.5)).exp()) as u64
    }
}

/// A realistic mix: one cold command in ten, programs `make`, `ls` and
/// `true` (which prints nothing), latencies around a real loopback
/// stack's; command `i` starts `i` seconds after `start_ns`.
pub fn realistic(i: u64, start_ns: u64, rng: &mut Rng) -> Command {
    let cold = i.is_multiple_of(10);
    let (program, first) = match i % 3 {
        0 => ("make", true),
        1 => ("ls", true),
        _ => ("true", false),
    };
    let exec = rng.latency(2_500_000.0);
    let mut command = Command {
        trace: (u128::from(i) + 1) << 64 | u128::from(rng.0),
        start_ns: start_ns + i * 1_000_000_000,
        program: program.into(),
        server: format!("{:032x}", 0x5e7u128 + u128::from(i % 4)),
        warmth: if cold { "cold" } else { "warm" },
        acquire_ns: if cold {
            rng.latency(4_000_000.0)
        } else {
            rng.latency(20_000.0)
        },
        exec_ns: exec,
        transit_ns: rng.latency(300_000.0),
        first_output_ns: None,
        small_ns: rng.latency(40_000.0),
    };
    // The first output comes half-way through the process's run.
    command.first_output_ns = first.then(|| {
        command.dispatch_ns() - command.exec_ns / 2 - command.transit_ns - 2 * command.small_ns
    });
    command
}
