//! Where a trace context travels, one submodule per carrier. Each reads with
//! the strict parser in [`crate::w3c`] and writes the canonical form.
//!
//! - [`metadata`]: gRPC metadata on the relay links (`traceparent`,
//!   `tracestate`).
//! - [`envelope`]: the trace context inside every encrypted session message.
//! - [`env`](mod@env): `TRACEPARENT` / `TRACESTATE` in a process environment.
//! - [`hop`]: the relay frame's clear-text hop header (a traceparent only).

pub mod env;
pub mod envelope;
pub mod hop;
pub mod metadata;

/// Tracestate values and what every carrier keeps of them (`None`: the
/// tracestate is dropped), for the carriers' tests.
#[cfg(test)]
pub(crate) fn tracestate_cases() -> Vec<(String, Option<String>)> {
    let same = |s: &str| (s.to_owned(), Some(s.to_owned()));
    let long_key = format!("foo=1,{}=1", "z".repeat(256));
    let members = |n: usize| {
        (1..=n)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let big = |k: &str| format!("{k}={}", "v".repeat(250));
    vec![
        ("foo=1,foo=1".into(), Some("foo=1".into())),
        ("foo=1 , foo=2".into(), Some("foo=1".into())),
        same(&long_key),
        same("tenant@system=1,foo@=2,foo@@bar=3,foo@bar@baz=4,1a=5"),
        same(&format!("t@{}=1", "v".repeat(15))),
        same(&members(32)),
        ("@foo=1,bar=2".into(), None),
        (format!("foo=1,{}=1", "z".repeat(257)), None),
        ("foo=,bar=3".into(), None),
        ("foo=bar=baz".into(), None),
        (members(33), None),
        // 521 characters: the right-most large member goes first.
        (
            format!("a=1,{},b=2,{},c=3,w=4", big("x"), big("y")),
            Some(format!("a=1,{},b=2,c=3,w=4", big("x"))),
        ),
    ]
}
