//! The relay frame's hop header: one traceparent in clear, never tracestate
//! or baggage. Reading it is best effort; a bad header is ignored.

use proto::limits::MAX_HOP_HEADER;

use crate::w3c::TraceParent;

/// The hop header for `parent` (version 00, 55 characters). Takes a
/// [`TraceParent`] rather than a full context so a tracestate cannot leak.
pub fn inject(parent: &TraceParent) -> String {
    parent.to_string()
}

/// The traceparent in a hop header, or `None` if it is empty, longer than
/// [`MAX_HOP_HEADER`] bytes, or invalid. Never an error.
pub fn extract(value: &str) -> Option<TraceParent> {
    if value.is_empty() || value.len() > MAX_HOP_HEADER {
        return None;
    }
    TraceParent::parse(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trip() {
        let parent = extract(VALID).unwrap();
        assert_eq!(inject(&parent), VALID);
        assert_eq!(extract(&inject(&parent)), Some(parent));
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(extract(""), None);
    }

    #[test]
    fn invalid_is_none() {
        for bad in [
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,x",
        ] {
            assert_eq!(extract(bad), None, "{bad}");
        }
    }

    #[test]
    fn oversized_is_none() {
        let at_limit = format!("cc-{}-{}", &VALID[3..], "a".repeat(MAX_HOP_HEADER - 56));
        assert_eq!(at_limit.len(), MAX_HOP_HEADER);
        assert!(extract(&at_limit).is_some());
        let over = format!("{at_limit}a");
        assert_eq!(extract(&over), None);
    }
}
