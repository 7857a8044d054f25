//! Tools some tests need (tmux, chromium, etcd) may be missing where the
//! tests run: such a test then skips with a notice, unless the tool's
//! `REX_REQUIRE_*` variable is `1` (CI sets it after installing the tool),
//! which makes the absence a failure.

/// Whether a tool `test` needs is here: `found`; otherwise prints a skip
/// notice naming `tool` and returns false, or panics when `require` (the
/// variable's name) is set to `1`.
pub fn present(test: &str, found: bool, tool: &str, require: &str) -> bool {
    if found {
        return true;
    }
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("{test}: {tool} is required ({require}=1) but cannot be run");
    }
    eprintln!("{test}: skipped: {tool} is not installed (set {require}=1 to make this a failure)");
    false
}
