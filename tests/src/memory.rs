//! A live process's memory: its resident size, and searching it
//! (`/proc/PID/mem`, readable regions from `/proc/PID/maps`) for a byte
//! string, which is how the compose tests show that the relay never holds
//! a command's plaintext.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::error::{FixtureError, Result};

/// Bytes read at a time (a match across two reads is still found).
const CHUNK: usize = 1 << 20;

/// What a search of a process's memory found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes read.
    pub bytes: u64,
    /// Occurrences of the needle.
    pub hits: usize,
}

/// The resident memory of process `pid` (`VmRSS`), KiB; `None` if it is
/// gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Counts the occurrences of `needle` in every readable mapping of process
/// `pid`. Mappings that cannot be read (guard pages, `[vvar]`) are skipped.
/// Needs the right to ptrace the process (root, or the same user with
/// ptrace allowed).
pub fn scan(pid: u32, needle: &[u8]) -> Result<Scan> {
    if needle.is_empty() {
        return Err(FixtureError::output("memory scan", "empty needle"));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| FixtureError::io(format!("reading /proc/{pid}/maps"), e))?;
    let mut mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| FixtureError::io(format!("opening /proc/{pid}/mem"), e))?;
    let mut found = Scan::default();
    let mut buf = vec![0u8; CHUNK + needle.len()];
    for line in maps.lines() {
        let Some((start, end)) = readable_range(line) else {
            continue;
        };
        let mut at = start;
        // Bytes carried over from the previous chunk, so that a match
        // spanning two chunks is counted once.
        let mut carry = 0usize;
        while at < end {
            let want = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
            if mem.seek(SeekFrom::Start(at)).is_err() {
                break;
            }
            let Ok(n) = mem.read(&mut buf[carry..carry + want]) else {
                break;
            };
            if n == 0 {
                break;
            }
            let filled = carry + n;
            found.hits += count(&buf[..filled], needle);
            found.bytes += n as u64;
            at += n as u64;
            carry = (needle.len() - 1).min(filled);
            buf.copy_within(filled - carry..filled, 0);
        }
    }
    Ok(found)
}

/// The address range of a readable mapping line of `/proc/PID/maps`.
fn readable_range(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    ))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_what_a_process_holds_and_nothing_it_never_saw() {
        let held = format!("memscan-{:032x}", rand::random::<u128>());
        let never = format!("memscan-{:032x}", rand::random::<u128>());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("REX_MEMSCAN_MARKER", &held)
            .spawn()
            .unwrap();
        // Give exec time to lay out the new image's environment.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let found = scan(child.id(), held.as_bytes()).unwrap();
        let not_found = scan(child.id(), never.as_bytes()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.hits >= 1, "{found:?}");
        assert_eq!(not_found.hits, 0, "{not_found:?}");
        assert!(not_found.bytes > 0);
    }

    #[test]
    fn maps_lines_are_parsed() {
        assert_eq!(
            readable_range("7f00-7f10 r-xp 00000000 08:01 1 /bin/x"),
            Some((0x7f00, 0x7f10))
        );
        assert_eq!(readable_range("7f00-7f10 ---p 00000000 00:00 0"), None);
        assert_eq!(
            readable_range("ffffffffff600000-ffffffffff601000 --xp 0 0 0 [vsyscall]"),
            None
        );
        assert_eq!(count(b"abcabcab", b"abc"), 2);
    }
}
