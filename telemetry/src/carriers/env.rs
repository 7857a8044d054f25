//! `TRACEPARENT` / `TRACESTATE` in a process environment: read by the CLI so a
//! caller's trace continues into ours, and set for a child process so a traced
//! program run remotely continues the same trace.

use std::ffi::OsString;

use crate::w3c::{self, Extracted, TraceContext, TraceParentError};

/// The variable holding the traceparent.
const TRACEPARENT_VAR: &str = "TRACEPARENT";
/// The variable holding the tracestate.
const TRACESTATE_VAR: &str = "TRACESTATE";

/// Reads the trace context from this process's environment.
///
/// An unset or empty `TRACEPARENT` is [`Extracted::Absent`]; one that is not
/// valid Unicode is [`TraceParentError::NotText`]. A `TRACESTATE` that is not
/// valid Unicode is dropped.
pub fn extract_from_env() -> Extracted {
    extract_with(|name| std::env::var_os(name).map(OsString::into_string))
}

/// Reads the trace context through `vars` (a variable name to its value), by
/// the same rules as [`extract_from_env`].
#[cfg(test)]
fn extract_from(vars: impl Fn(&str) -> Option<String>) -> Extracted {
    extract_with(|name| vars(name).map(Ok))
}

/// The shared rules; `Some(Err(_))` is a value that is not Unicode.
fn extract_with(vars: impl Fn(&str) -> Option<Result<String, OsString>>) -> Extracted {
    let parent = match vars(TRACEPARENT_VAR) {
        None => return Extracted::Absent,
        Some(Err(_)) => return Extracted::Invalid(TraceParentError::NotText),
        Some(Ok(value)) if value.is_empty() => return Extracted::Absent,
        Some(Ok(value)) => value,
    };
    match vars(TRACESTATE_VAR) {
        Some(Ok(state)) => w3c::extract(&[&parent], &[&state]),
        None | Some(Err(_)) => w3c::extract(&[&parent], &[]),
    }
}

/// The variables to set in a child process: `TRACEPARENT`, and `TRACESTATE`
/// only when `cx` has a non-empty tracestate.
pub fn child_env(cx: &TraceContext) -> Vec<(String, String)> {
    let mut vars = vec![(TRACEPARENT_VAR.to_owned(), cx.parent.to_string())];
    if let Some(state) = cx.state() {
        vars.push((TRACESTATE_VAR.to_owned(), state.to_string()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn round_trip() {
        for pairs in [
            &[(TRACEPARENT_VAR, VALID)][..],
            &[(TRACEPARENT_VAR, VALID), (TRACESTATE_VAR, "rojo=1,t@s=2")],
        ] {
            let e = extract_from(lookup(pairs));
            let vars = child_env(e.context().unwrap());
            let expected: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(vars, expected);
            let again: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(extract_from(lookup(&again)), e);
        }
    }

    #[test]
    fn absent() {
        assert_eq!(extract_from(lookup(&[])), Extracted::Absent);
        assert_eq!(
            extract_from(lookup(&[(TRACEPARENT_VAR, ""), (TRACESTATE_VAR, "a=1")])),
            Extracted::Absent
        );
        // Lowercase names are different variables.
        assert_eq!(
            extract_from(lookup(&[("traceparent", VALID)])),
            Extracted::Absent
        );
    }

    #[test]
    fn invalid_traceparent() {
        assert_eq!(
            extract_from(lookup(&[(
                TRACEPARENT_VAR,
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )])),
            Extracted::Invalid(TraceParentError::ForbiddenVersion)
        );
    }

    #[test]
    fn not_unicode() {
        assert_eq!(
            extract_with(|_| Some(Err(OsString::new()))),
            Extracted::Invalid(TraceParentError::NotText)
        );
        let e = extract_with(|name| match name {
            TRACEPARENT_VAR => Some(Ok(VALID.to_owned())),
            _ => Some(Err(OsString::new())),
        });
        assert_eq!(e.into_context().unwrap().state, None);
    }

    #[test]
    fn invalid_tracestate_is_dropped() {
        let e = extract_from(lookup(&[(TRACEPARENT_VAR, VALID), (TRACESTATE_VAR, "=x")]));
        let cx = e.into_context().unwrap();
        assert_eq!(cx.state, None);
        assert_eq!(child_env(&cx).len(), 1);
    }

    #[test]
    fn tracestate_rules() {
        for (state, kept) in crate::carriers::tracestate_cases() {
            let e = extract_from(lookup(&[
                (TRACEPARENT_VAR, VALID),
                (TRACESTATE_VAR, &state),
            ]));
            let vars = child_env(e.context().unwrap());
            let got = vars
                .iter()
                .find(|(k, _)| k == TRACESTATE_VAR)
                .map(|(_, v)| v.clone());
            assert_eq!(got, kept, "{state}");
        }
    }

    #[test]
    fn reads_the_process_environment() {
        // Only checks that it runs; the process environment is not ours to set
        // in a multi-threaded test binary.
        let _ = extract_from_env();
    }
}
