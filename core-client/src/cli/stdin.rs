//! `exec`'s stdin, sent to the remote command as it is read. A stdin that
//! is the null device (`< /dev/null`, as scripts and CI runners give) is
//! at its end before it is read: the remote stdin is closed at once, with
//! no reader thread started for it (reading stdin otherwise takes one).

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{FileType, Stat, fstat, stat};
use tokio::io::AsyncReadExt;

/// Starts sending this process's stdin to the call `control` steers, as
/// a task of `tasks`; it ends at stdin's end (closing the remote stdin),
/// or when the call no longer takes stdin.
pub(super) fn pump(tasks: &lifecycle::Tasks, control: rex_client::Controller) {
    if is_null_device(io::stdin().as_fd()) {
        tasks.spawn(tracing::debug_span!("stdin"), async move {
            let _ = control.close_stdin().await;
        });
        return;
    }
    tasks.spawn(tracing::debug_span!("stdin"), async move {
        let mut stdin = tokio::io::stdin();
        // Read into spare capacity: memory is touched only as it is
        // written, never zeroed first.
        let mut buf = Vec::with_capacity(proto::limits::MAX_CHUNK);
        loop {
            buf.clear();
            match stdin.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if control.write_stdin(&buf).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = control.close_stdin().await;
    });
}

/// Whether `fd` is the null device (the character device `/dev/null`
/// names); false when either cannot be looked at.
fn is_null_device(fd: impl AsFd) -> bool {
    match (fstat(fd), stat("/dev/null")) {
        (Ok(ours), Ok(null)) => same_device(&ours, &null),
        _ => false,
    }
}

/// Whether two files are the same character device.
fn same_device(a: &Stat, b: &Stat) -> bool {
    let char_device = |s: &Stat| FileType::from_raw_mode(s.st_mode) == FileType::CharacterDevice;
    char_device(a) && char_device(b) && a.st_rdev == b.st_rdev
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_null_device_is_told_from_files_pipes_and_other_devices() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(is_null_device(&null));
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(!is_null_device(&zero), "/dev/zero is not at its end");
        let file = tempfile::tempfile().unwrap();
        assert!(!is_null_device(&file));
        let (reader, _writer) = rustix::pipe::pipe().unwrap();
        assert!(!is_null_device(&reader));
    }
}
