//! This host's name, for the `host.name` resource attribute and for the
//! stage summaries an exec-server sends home (so a waterfall can say which
//! host each span was made on).

use std::sync::OnceLock;

/// The OpenTelemetry attribute naming the host a span was made on.
pub const HOST_NAME: &str = "host.name";

/// The kernel's host name for this process (its UTS namespace's, so a
/// container's own), read once; `None` if it cannot be read.
pub fn name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
        let name = raw.trim();
        (!name.is_empty()).then(|| name.to_owned())
    })
    .as_deref()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_is_trimmed_and_stable() {
        let first = super::name();
        if let Some(n) = first {
            assert_eq!(n, n.trim());
            assert!(!n.is_empty());
        }
        assert_eq!(super::name(), first);
    }
}
