//! Where the metadata database lives by default, and how private
//! directories are made.

use std::path::{Path, PathBuf};

/// The variable that moves the data directory (the binaries' `--data-dir`
/// reads it too).
pub const DATA_DIR_ENV: &str = "REX_DATA_DIR";

/// `$REX_DATA_DIR` if set and non-empty, else the user data dir's `rex`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("rex")))
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
