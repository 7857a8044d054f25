//! The CLI's views of what it recorded and what its agent holds: the
//! `history` table, the `agent status` table and the `agent warm` lines.
//! The CLI gathers the rows (from its records and the agent's answers);
//! they are drawn here, with the terminal's tables and the times and
//! durations every view writes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::names::Names;
use crate::table::{Align, render};
use crate::time::human;
use crate::time::{relative, unix_ms, utc_seconds};

/// One command of `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow<'a> {
    /// When it started, Unix milliseconds.
    pub started_unix_ms: i64,
    /// The server's id (shown by its name when it has one).
    pub server_id: &'a str,
    /// The program run.
    pub program: &'a str,
    /// How it ended (`3`, `signal 9`), or how far it got.
    pub exit: String,
    /// Its first output, microseconds after it started.
    pub first_output_us: Option<i64>,
    /// Its whole time, microseconds.
    pub total_us: Option<i64>,
    /// Its trace (empty: none).
    pub trace_id: &'a str,
}

/// The `history` table: a header, then a row per command, columns sized
/// to their content two spaces apart.
pub fn history(rows: &[HistoryRow<'_>], names: &dyn Names) -> String {
    let ms = |us: Option<i64>| {
        us.map(|u| format!("{:.3}", u as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                utc_seconds(r.started_unix_ms),
                names.label(r.server_id),
                r.program.to_owned(),
                r.exit.clone(),
                ms(r.first_output_us),
                ms(r.total_us),
                if r.trace_id.is_empty() {
                    "-".into()
                } else {
                    r.trace_id.to_owned()
                },
            ]
        })
        .collect();
    render(
        &[
            ("when (UTC)", Align::Left),
            ("server", Align::Left),
            ("program", Align::Left),
            ("exit", Align::Left),
            ("first out ms", Align::Left),
            ("total ms", Align::Left),
            ("trace", Align::Left),
        ],
        &cells,
    )
}

/// A session the agent holds, as its views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSession<'a> {
    /// The server's id.
    pub server_id: &'a str,
    /// Where it goes (the relay or direct URL).
    pub target: &'a str,
    /// Whether it is warmed on a timer.
    pub warm_enabled: bool,
    /// The next warm, Unix milliseconds (0: none).
    pub next_warm_unix_ms: u64,
    /// The last warm, Unix milliseconds (0: none).
    pub last_warm_unix_ms: u64,
    /// Why the last warm failed (empty: it did not).
    pub last_warm_failure: &'a str,
    /// The last warm's round trip, microseconds (0: none).
    pub last_latency_us: u64,
    /// Commands running on it.
    pub calls_running: u32,
    /// Commands it has served.
    pub calls_served: u64,
}

/// The agent as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus<'a> {
    /// Its process.
    pub pid: u32,
    /// Its socket.
    pub socket: &'a Path,
    /// When it started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// When it stops if idle, Unix milliseconds (0: not scheduled).
    pub idle_until_unix_ms: u64,
    /// The most sessions it holds.
    pub max_sessions: u32,
    /// Commands running through it.
    pub calls_running: u32,
    /// The sessions it holds.
    pub sessions: Vec<HeldSession<'a>>,
}

/// A session's server as the agent's views show it: its name, else its
/// id's first 16 digits.
pub fn session_label(names: &dyn Names, id: &str) -> String {
    names
        .name(id)
        .map_or_else(|| id.chars().take(16).collect(), str::to_owned)
}

/// A round trip in microseconds as milliseconds (`1.250 ms`).
fn round_trip(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// The `agent status` table: a line on the agent, then a row per session
/// it holds (when and how each warm fires and fired, its calls).
pub fn agent_status(s: &AgentStatus<'_>, names: &dyn Names, now: SystemTime) -> String {
    let mut out = format!(
        "agent pid {} at {}: up {}, {} of {} sessions held, {} command{} running",
        s.pid,
        s.socket.display(),
        human(Duration::from_millis(
            unix_ms(now).saturating_sub(s.started_unix_ms)
        )),
        s.sessions.len(),
        s.max_sessions,
        s.calls_running,
        if s.calls_running == 1 { "" } else { "s" },
    );
    if s.idle_until_unix_ms != 0 {
        out.push_str(&format!(
            "; stops {} if idle",
            relative(s.idle_until_unix_ms, now)
        ));
    }
    out.push('\n');
    if s.sessions.is_empty() {
        out.push_str("no sessions held yet (the first exec through the agent opens one)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = s
        .sessions
        .iter()
        .map(|h| {
            let next = if !h.warm_enabled {
                "off".to_owned()
            } else if h.next_warm_unix_ms == 0 && h.calls_running > 0 {
                "(in use)".to_owned()
            } else {
                relative(h.next_warm_unix_ms, now)
            };
            let rtt = if h.last_latency_us == 0 {
                "-".to_owned()
            } else {
                round_trip(h.last_latency_us)
            };
            let outcome = if h.last_warm_unix_ms == 0 {
                "-".to_owned()
            } else if h.last_warm_failure.is_empty() {
                "ok".to_owned()
            } else {
                format!("failed: {}", h.last_warm_failure)
            };
            vec![
                session_label(names, h.server_id),
                h.target.to_owned(),
                next,
                relative(h.last_warm_unix_ms, now),
                rtt,
                h.calls_running.to_string(),
                h.calls_served.to_string(),
                outcome,
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            ("server", Align::Left),
            ("via", Align::Left),
            ("next warm", Align::Left),
            ("last warm", Align::Left),
            ("round trip", Align::Right),
            ("running", Align::Right),
            ("served", Align::Right),
            ("last outcome", Align::Left),
        ],
        &rows,
    ));
    out
}

/// One line per session `agent warm` warmed: how it went and when the
/// next warm is (`refused`: some routes could not be held).
pub fn warmed(
    sessions: &[HeldSession<'_>],
    refused: bool,
    names: &dyn Names,
    now: SystemTime,
) -> String {
    let mut out = String::new();
    if sessions.is_empty() && !refused {
        out.push_str("no sessions held (name a server to warm it)\n");
    }
    for h in sessions {
        let server = session_label(names, h.server_id);
        let how = if h.last_warm_failure.is_empty() {
            format!("warm ({})", round_trip(h.last_latency_us))
        } else {
            format!("failed: {}", h.last_warm_failure)
        };
        let next = if h.warm_enabled {
            format!("next warm {}", relative(h.next_warm_unix_ms, now))
        } else {
            "not warmed on a timer".to_owned()
        };
        out.push_str(&format!("{server} via {}: {how}; {next}\n", h.target));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::names::NoNames;

    fn row(server_id: &str) -> HistoryRow<'_> {
        HistoryRow {
            started_unix_ms: 0,
            server_id,
            program: "sh",
            exit: "3".into(),
            first_output_us: Some(1500),
            total_us: Some(2500),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        }
    }

    #[test]
    fn history_table_lines_up() {
        let text = history(&[row("729d6f42801054537bf00a73006349c3")], &NoNames);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("when (UTC)"));
        assert!(
            lines[1].starts_with("1970-01-01 00:00:00  729d6f42  sh"),
            "{text}"
        );
        assert!(lines[1].contains("1.500") && lines[1].contains("2.500"));
        assert!(lines[1].ends_with("4bf92f3577b34da6a3ce929d0e0e4736"));
        let col = lines[0].find("trace").unwrap();
        assert_eq!(lines[1].find("4bf92f").unwrap(), col);
    }

    #[test]
    fn history_names_servers_as_the_user_did() {
        let id = "ab".repeat(16);
        let names = BTreeMap::from([(id.clone(), "build-box".to_owned())]);
        let rows = [row(&id), row("729d6f42801054537bf00a73006349c3")];
        let text = history(&rows, &names);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("1970-01-01 00:00:00  build-box  sh"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("1970-01-01 00:00:00  729d6f42   sh"),
            "{text}"
        );
    }

    fn held(failure: &str, enabled: bool) -> HeldSession<'_> {
        HeldSession {
            server_id: "abababababababababababababababab",
            target: "http://10.0.0.5:7600",
            warm_enabled: enabled,
            next_warm_unix_ms: if enabled { 1_000_030_000 } else { 0 },
            last_warm_unix_ms: 1_000_000_000,
            last_warm_failure: failure,
            last_latency_us: 1_250,
            calls_running: 0,
            calls_served: 0,
        }
    }

    #[test]
    fn agent_warm_says_how_each_warm_went_and_when_the_next_is() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let sessions = [held("", true), held("cannot reach it", false)];
        let text = warmed(&sessions, false, &NoNames, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "abababababababab via http://10.0.0.5:7600: warm (1.250 ms); next warm in 30s",
                "abababababababab via http://10.0.0.5:7600: failed: cannot reach it; not warmed on a timer",
            ]
        );
        assert!(warmed(&[], false, &NoNames, now).starts_with("no sessions held"));
        assert!(warmed(&[], true, &NoNames, now).is_empty());
    }

    #[test]
    fn the_status_table_says_when_each_warm_fires_and_fired() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: i64| (1_000_000 + secs) as u64 * 1000;
        let status = AgentStatus {
            pid: 42,
            socket: Path::new("/run/a.sock"),
            started_unix_ms: at(-3600),
            idle_until_unix_ms: at(590),
            max_sessions: 16,
            calls_running: 0,
            sessions: vec![HeldSession {
                next_warm_unix_ms: at(12),
                last_warm_unix_ms: at(-18),
                calls_served: 7,
                ..held("", true)
            }],
        };
        let table = agent_status(&status, &NoNames, now);
        assert!(
            table.starts_with("agent pid 42 at /run/a.sock: up 1h, 1 of 16 sessions held"),
            "{table}"
        );
        assert!(table.contains("stops in 9m50s if idle"), "{table}");
        let row = table.lines().nth(2).unwrap();
        for part in [
            "abababab",
            "http://10.0.0.5:7600",
            "in 12s",
            "18s ago",
            "1.250 ms",
            " 7 ",
            "ok",
        ] {
            assert!(row.contains(part), "{part} missing in {row}");
        }
        let header = table.lines().nth(1).unwrap();
        assert_eq!(
            header.find("last outcome").unwrap(),
            row.find("ok").unwrap(),
            "{table}"
        );
        let idle = AgentStatus {
            sessions: Vec::new(),
            ..status
        };
        assert!(
            agent_status(&idle, &NoNames, now)
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("no sessions held yet")
        );
    }
}
