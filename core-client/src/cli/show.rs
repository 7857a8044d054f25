//! `config show [NAME]`: a server's effective settings and where each
//! came from.

use std::fmt::Write as _;

use super::context::Context;
use super::error::CliError;
use crate::config::options::Resume;
use crate::settings::{Route, ServerArgs, Settings, Source};

/// Runs `config show`: prints the settings table.
pub(crate) fn config_show(
    name: Option<&str>,
    args: &ServerArgs,
    ctx: &Context,
) -> Result<u8, CliError> {
    let settings = super::exec::settings(ctx, name, args)?;
    print!("{}", render(&settings, ctx));
    Ok(0)
}

/// The settings as a table of setting, value and source.
pub(super) fn render(s: &Settings, ctx: &Context) -> String {
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |setting: &str, value: String, source: Option<&Source>| {
        rows.push([
            setting.to_owned(),
            value,
            source.map_or_else(|| "-".to_owned(), ToString::to_string),
        ]);
    };
    match &s.route {
        Some(r) => match &r.value {
            Route::Direct(url) => row("direct", url.clone(), Some(&r.source)),
            Route::Relays(relays) => {
                for relay in relays {
                    let mut value = relay.url().to_owned();
                    if relay.typed() != relay.url() {
                        let _ = write!(value, " (typed {})", relay.typed());
                    }
                    value.push_str(if relay.uses_tls() {
                        " (TLS)"
                    } else {
                        " (plain HTTP/2)"
                    });
                    row("relay", value, Some(&r.source));
                }
            }
        },
        None => row("relay", "(none: give --relay ADDRESS)".into(), None),
    }
    match &s.server {
        Some(k) => {
            let known = match &s.name {
                Some(_) if s.known => ", known",
                Some(_) => ", not in the known servers",
                None => "",
            };
            row(
                "server key",
                format!("{} (id {}{known})", k.value, k.value.server_id()),
                Some(&k.source),
            );
        }
        None => row("server key", "(none: give --server PUBKEY)".into(), None),
    }
    match &s.key {
        Some(k) => row("client key", k.value.display().to_string(), Some(&k.source)),
        None => row(
            "client key",
            "(none: run `core-client keygen`, or give --key FILE)".into(),
            None,
        ),
    }
    match &s.ca {
        Some(c) => row("ca", c.value.display().to_string(), Some(&c.source)),
        None => row(
            "ca",
            "(the system's CA certificates, for TLS links)".into(),
            Some(&Source::Default),
        ),
    }
    match &s.cwd {
        Some(c) => row("cwd", c.value.display().to_string(), Some(&c.source)),
        None => row(
            "cwd",
            "(the exec-server's own)".into(),
            Some(&Source::Default),
        ),
    }
    if s.env.is_empty() {
        row("env", "(none)".into(), Some(&Source::Default));
    }
    for (k, v) in &s.env {
        row(&format!("env {k}"), v.value.clone(), Some(&v.source));
    }
    row(
        "accept_new",
        s.accept_new.value.to_string(),
        Some(&s.accept_new.source),
    );
    row("warm", s.warm.value.to_string(), Some(&s.warm.source));
    row(
        "span_forwarding",
        s.span_forwarding.value.to_string(),
        Some(&s.span_forwarding.source),
    );
    row(
        "resume",
        match s.resume.value {
            Resume::Off => "off (a command ends with its link)".to_owned(),
            within @ Resume::Within(_) => {
                format!("{within} (how long a command waits for its session to come back)")
            }
        },
        Some(&s.resume.source),
    );
    row(
        "terminal",
        s.terminal.value.to_string(),
        Some(&s.terminal.source),
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        "server {} (config file: {}; known servers: {})",
        s.name.as_deref().unwrap_or("(unnamed)"),
        ctx.config
            .as_ref()
            .map_or_else(|| "none".to_owned(), |c| c.path.display().to_string()),
        if ctx.known.path().as_os_str().is_empty() {
            "none".to_owned()
        } else {
            ctx.known.path().display().to_string()
        },
    );
    let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
    for [setting, value, source] in &rows {
        let _ = writeln!(out, "  {setting:<w0$}  {value:<w1$}  {source}");
    }
    out
}
