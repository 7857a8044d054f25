//! Process limits a service sets at start.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors a service keeps for itself beyond its connections (the
/// listener, log and export sockets, files, child pipes).
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open descriptors to the hard limit; returns
/// the soft limit in force afterwards (the old one if it could not be
/// raised).
pub fn raise_nofile() -> Result<u64, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        Err(_) => Ok(soft),
    }
}

/// The most connections `nofile` descriptors allow once the descriptors a
/// service keeps for itself are kept back (at least 1).
pub fn connections_within(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let after = raise_nofile().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(after, soft);
        assert_eq!(soft, hard);
        assert_eq!(connections_within(1024), 960);
        assert_eq!(connections_within(10), 1);
    }
}
