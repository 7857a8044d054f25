//! `history` and `trace show`: what ran, with each server shown by the
//! name the user gave it (its id's first digits otherwise).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::error::CliError;
use crate::names::ServerNames;

/// Runs `trace show`: prints the trace to stdout.
pub(crate) fn trace_show(
    file: Option<&Path>,
    selector: &str,
    names: &ServerNames,
) -> Result<u8, CliError> {
    let Some(path) = file else {
        return Err(CliError::usage(
            "no trace file: set --trace-file or REX_TRACE_FILE (no user data dir is known)",
        ));
    };
    let mut out = std::io::stdout().lock();
    analysis::show::show(path, selector, names, &mut out)
        .map_err(|e| CliError::failed(e.to_string()))?;
    Ok(0)
}

/// The server ids (or first digits of one) `--server` selects: a name's id,
/// else hex digits taken as an id's start.
pub(crate) fn server_filter<'a>(
    server: &'a str,
    names: &'a ServerNames,
) -> Result<&'a str, CliError> {
    if let Some(id) = names.id(server) {
        return Ok(id);
    }
    let hex = !server.is_empty()
        && server.len() <= 32
        && server
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        return Ok(server);
    }
    Err(CliError::usage(format!(
        "--server: no server named `{server}` with a key in the config file or the known servers \
         (nor is it a server id)"
    )))
}

/// One `history --json` row: the record and the server's name.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    record: &'a metadata::CommandRecord,
    /// The name the config file or the known servers give the server.
    server_name: Option<&'a str>,
}

/// Runs `history`: the newest `limit` command records (on `server`, if
/// given), as a table or JSON.
pub(crate) fn history(
    data_dir: Option<&Path>,
    limit: usize,
    json: bool,
    server: Option<&str>,
    names: &ServerNames,
) -> Result<u8, CliError> {
    let Some(dir) = data_dir else {
        return Err(CliError::usage(
            "no data directory is known: give --data-dir or REX_DATA_DIR",
        ));
    };
    let filter = server.map(|s| server_filter(s, names)).transpose()?;
    let path = dir.join(metadata::store::FILE_NAME);
    if !path.exists() {
        return Err(CliError::failed(format!(
            "no commands have been recorded yet ({} does not exist)",
            path.display()
        )));
    }
    let fail = |e: metadata::StoreError| CliError::failed(e.to_string());
    let store = metadata::Store::open(&path).map_err(fail)?;
    let rows = match filter {
        Some(id) => store.commands_on(id, limit),
        None => store.commands(limit),
    }
    .map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        let named: Vec<Row<'_>> = rows
            .iter()
            .map(|record| Row {
                record,
                server_name: names.name(&record.server_id),
            })
            .collect();
        serde_json::to_string_pretty(&named).map_err(|e| CliError::failed(e.to_string()))? + "\n"
    } else {
        history_table(&rows, names)
    };
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// The `history` table.
pub(super) fn history_table(rows: &[metadata::CommandRecord], names: &ServerNames) -> String {
    let rows: Vec<analysis::views::HistoryRow<'_>> = rows
        .iter()
        .map(|r| analysis::views::HistoryRow {
            started_unix_ms: r.started_unix_ms,
            server_id: &r.server_id,
            program: &r.program,
            exit: match (&r.exit, r.progress) {
                (Some(e), _) => e.short(),
                (None, p) => p.as_str().to_owned(),
            },
            first_output_us: r.first_output_us,
            total_us: r.total_us,
            trace_id: &r.trace.trace_id,
        })
        .collect();
    analysis::views::history(&rows, names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::StaticKeypair;

    fn row(server_id: &str) -> metadata::CommandRecord {
        metadata::CommandRecord {
            id: "x".into(),
            server_id: server_id.into(),
            program: "sh".into(),
            args: None,
            trace: metadata::TraceRef {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            },
            started_unix_ms: 0,
            first_output_us: Some(1500),
            total_us: Some(2500),
            progress: metadata::Progress::Finished,
            exit: Some(metadata::Exit::Code(3)),
            stdout_bytes: 1,
            stderr_bytes: 0,
        }
    }

    /// The CLI gathers each record into the row analysis draws (how the
    /// table looks is analysis's, tested there): a finished command by its
    /// exit, one still running by its progress.
    #[test]
    fn history_draws_each_record_as_its_row() {
        let server = "729d6f42801054537bf00a73006349c3";
        let mut running = row(server);
        running.exit = None;
        running.progress = metadata::Progress::Running;
        running.total_us = None;
        let text = history_table(&[row(server), running], &ServerNames::default());
        let expected = |exit: &str, total_us| analysis::views::HistoryRow {
            started_unix_ms: 0,
            server_id: server,
            program: "sh",
            exit: exit.to_owned(),
            first_output_us: Some(1500),
            total_us,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        };
        let rows = [
            expected(&metadata::Exit::Code(3).short(), Some(2500)),
            expected(metadata::Progress::Running.as_str(), None),
        ];
        assert_eq!(
            text,
            analysis::views::history(&rows, &ServerNames::default())
        );
        assert!(text.contains("1.500") && text.contains("2.500"), "{text}");
    }

    #[test]
    fn history_names_servers_as_the_user_did() {
        let key = StaticKeypair::generate().unwrap().public();
        let mut names = ServerNames::default();
        names.add("build-box", &key);
        let rows = [
            row(&key.server_id()),
            row("729d6f42801054537bf00a73006349c3"),
        ];
        let text = history_table(&rows, &names);
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

    #[test]
    fn server_filters() {
        let key = StaticKeypair::generate().unwrap().public();
        let mut names = ServerNames::default();
        names.add("build-box", &key);
        assert_eq!(server_filter("build-box", &names).unwrap(), key.server_id());
        assert_eq!(server_filter("729d6f42", &names).unwrap(), "729d6f42");
        let err = server_filter("other-box", &names).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(server_filter("729D", &names).is_err());
    }
}
