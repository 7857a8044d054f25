//! The exec-servers' early-data tickets the CLI was given, kept between
//! its runs (`DATA_DIR/early_tickets`): a cold `exec` sends its command in
//! handshake message 1 with the ticket of the exec-server's current run,
//! so that it runs from there, one round trip in all. Without one (the
//! first `exec` to a server, or the first after it restarted) the command
//! is sent again after the handshake, and the answer's ticket is kept for
//! the next.
//!
//! One line per exec-server, `SERVER_ID HEX_TICKET`, newest last, at most
//! [`MAX_TICKETS`]; written whole to a temporary file and renamed, mode
//! 0600. Not a secret (a ticket only names a run), and never needed: a
//! file that cannot be read or written costs a round trip, nothing else.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rex_client::EarlyTicket;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "early_tickets";

/// The most exec-servers whose tickets are kept (the oldest go first).
pub(crate) const MAX_TICKETS: usize = 256;

/// The file's largest size read (a longer one is ignored).
const MAX_FILE: u64 = 64 * 1024;

/// The tickets file of a data directory.
#[derive(Debug, Clone)]
pub(crate) struct Tickets {
    path: PathBuf,
}

impl Tickets {
    /// The tickets file in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE),
        }
    }

    /// The ticket kept for the exec-server `server_id`, if any.
    pub(crate) fn get(&self, server_id: &str) -> Option<EarlyTicket> {
        self.read()
            .into_iter()
            .rev()
            .find(|(id, _)| id == server_id)
            .map(|(_, t)| t)
    }

    /// Keeps `ticket` for `server_id` (replacing its earlier one), unless
    /// it is the one kept already.
    pub(crate) fn put(&self, server_id: &str, ticket: EarlyTicket) -> std::io::Result<()> {
        let mut all = self.read();
        if all.iter().any(|(id, t)| id == server_id && *t == ticket) {
            return Ok(());
        }
        all.retain(|(id, _)| id != server_id);
        all.push((server_id.to_owned(), ticket));
        let skip = all.len().saturating_sub(MAX_TICKETS);
        let mut text = String::new();
        for (id, t) in all.iter().skip(skip) {
            text.push_str(id);
            text.push(' ');
            text.push_str(&hex(t.as_bytes()));
            text.push('\n');
        }
        if let Some(dir) = self.path.parent() {
            crate::paths::create_private_dir(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let written = (|| {
            let mut f = private_file(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Every entry that reads as one (others are skipped).
    fn read(&self) -> Vec<(String, EarlyTicket)> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        if meta.len() > MAX_FILE {
            return Vec::new();
        }
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let (id, t) = line.split_once(' ')?;
                let bytes: [u8; rex_client::TICKET_LEN] = unhex(t)?.try_into().ok()?;
                Some((id.to_owned(), EarlyTicket::from_bytes(bytes)))
            })
            .collect()
    }
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ticket(b: u8) -> EarlyTicket {
        EarlyTicket::from_bytes([b; rex_client::TICKET_LEN])
    }

    #[test]
    fn a_ticket_kept_is_found_again_and_replaced_by_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let tickets = Tickets::in_dir(&dir.path().join("data"));
        assert_eq!(tickets.get("a"), None);
        tickets.put("a", ticket(1)).unwrap();
        tickets.put("b", ticket(2)).unwrap();
        assert_eq!(tickets.get("a"), Some(ticket(1)));
        tickets.put("a", ticket(3)).unwrap();
        assert_eq!(tickets.get("a"), Some(ticket(3)));
        assert_eq!(tickets.get("b"), Some(ticket(2)));
        let text = std::fs::read_to_string(dir.path().join("data").join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("data").join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_file_holds_at_most_its_bound_the_oldest_going_first() {
        let dir = tempfile::tempdir().unwrap();
        let tickets = Tickets::in_dir(dir.path());
        for i in 0..=MAX_TICKETS {
            tickets.put(&format!("s{i}"), ticket(1)).unwrap();
        }
        assert_eq!(tickets.read().len(), MAX_TICKETS);
        assert_eq!(tickets.get("s0"), None);
        assert_eq!(tickets.get(&format!("s{MAX_TICKETS}")), Some(ticket(1)));
    }

    #[test]
    fn lines_that_are_not_tickets_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "garbage\nb zz\nc 0101\na 07070707070707070707070707070707\n",
        )
        .unwrap();
        let tickets = Tickets::in_dir(dir.path());
        assert_eq!(tickets.get("a"), Some(ticket(7)));
        assert_eq!(tickets.get("b"), None);
        assert_eq!(tickets.get("c"), None);
    }
}
