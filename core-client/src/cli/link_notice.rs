//! What `exec` says of its session's link while a command runs. On a
//! terminal (stderr is one), a link lost for longer than [`NOTICE_AFTER`]
//! is one line ("link lost; reconnecting through URL"), and its return one
//! more ("link back after N s"); a blip shorter than that is not said.
//! Elsewhere nothing, unless `-v`, whose lines say every loss and resume.
//! Read from the session's [`LinkState`] watch, never from logs.

use std::time::{Duration, Instant};

use rex_client::LinkState;

use super::verbose::Verbose;

/// How long a link must have been lost before the terminal is told.
pub(super) const NOTICE_AFTER: Duration = Duration::from_millis(1500);

/// The notices of one command.
#[derive(Debug)]
pub(super) struct LinkNotice {
    /// Whether stderr is a terminal (the notices are said at all).
    terminal: bool,
    /// Whether the terminal is in raw mode (lines end in CR LF).
    raw: bool,
    verbose: Verbose,
    /// The current outage: since when, the URL being dialled, and whether
    /// the terminal has been told.
    lost: Option<(Instant, String, bool)>,
}

impl LinkNotice {
    pub(super) fn new(terminal: bool, raw: bool, verbose: Verbose) -> Self {
        Self {
            terminal,
            raw,
            verbose,
            lost: None,
        }
    }

    /// A new state of the link: what to say now (`-v` says its own lines
    /// itself).
    pub(super) fn seen(&mut self, state: &LinkState) -> Option<String> {
        match state {
            LinkState::Reconnecting { since, trying } => {
                match &mut self.lost {
                    Some((_, url, _)) => url.clone_from(trying),
                    None => {
                        self.verbose.say(
                            1,
                            format_args!("link lost: resuming the session through {trying}"),
                        );
                        self.lost = Some((*since, trying.clone(), false));
                    }
                }
                None
            }
            LinkState::Up { via, outage } => {
                let (_, _, told) = self.lost.take()?;
                let secs = outage.unwrap_or_default().as_secs_f64();
                self.verbose.say(
                    1,
                    format_args!("session resumed through {via} after {secs:.1}s"),
                );
                told.then(|| self.line(&format!("link back after {secs:.1} s")))
            }
            LinkState::Ended => {
                self.lost = None;
                None
            }
            // A state this version does not know says nothing.
            _ => None,
        }
    }

    /// When the loss is to be told, if it is and has not been.
    pub(super) fn due(&self) -> Option<Instant> {
        match &self.lost {
            Some((since, _, false)) if self.terminal => Some(*since + NOTICE_AFTER),
            _ => None,
        }
    }

    /// The loss's line, once [`due`](Self::due).
    pub(super) fn tell(&mut self) -> Option<String> {
        let (_, url, told) = self.lost.as_mut()?;
        if *told || !self.terminal {
            return None;
        }
        *told = true;
        let text = format!("link lost; reconnecting through {url}");
        Some(self.line(&text))
    }

    /// A line for stderr, whole.
    fn line(&self, text: &str) -> String {
        if self.raw {
            format!("\r\ncore-client: {text}\r\n")
        } else {
            format!("core-client: {text}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(since: Instant, url: &str) -> LinkState {
        LinkState::Reconnecting {
            since,
            trying: url.into(),
        }
    }

    fn up(secs: u64) -> LinkState {
        LinkState::Up {
            via: "http://r2".into(),
            outage: Some(Duration::from_secs(secs)),
        }
    }

    #[test]
    fn a_long_outage_is_told_once_and_its_end_with_it() {
        let mut n = LinkNotice::new(true, false, Verbose(0));
        let t = Instant::now();
        assert_eq!(n.due(), None);
        assert_eq!(n.seen(&lost(t, "http://r1")), None);
        assert_eq!(n.due(), Some(t + NOTICE_AFTER));
        assert_eq!(n.seen(&lost(t, "http://r2")), None);
        assert_eq!(
            n.tell().as_deref(),
            Some("core-client: link lost; reconnecting through http://r2\n")
        );
        assert_eq!(n.due(), None);
        assert_eq!(n.tell(), None);
        assert_eq!(
            n.seen(&up(5)).as_deref(),
            Some("core-client: link back after 5.0 s\n")
        );
        // The next outage is its own.
        assert_eq!(n.seen(&lost(t, "http://r1")), None);
        assert!(n.due().is_some());
    }

    #[test]
    fn a_blip_is_not_told() {
        let mut n = LinkNotice::new(true, true, Verbose(0));
        let t = Instant::now();
        n.seen(&lost(t, "http://r1"));
        assert_eq!(n.seen(&up(1)), None);
        assert_eq!(n.due(), None);
        assert_eq!(n.tell(), None);
    }

    #[test]
    fn nothing_is_told_off_a_terminal() {
        let mut n = LinkNotice::new(false, false, Verbose(0));
        n.seen(&lost(Instant::now(), "http://r1"));
        assert_eq!(n.due(), None);
        assert_eq!(n.tell(), None);
        assert_eq!(n.seen(&up(9)), None);
    }

    #[test]
    fn raw_mode_lines_end_in_cr_lf() {
        let mut n = LinkNotice::new(true, true, Verbose(0));
        n.seen(&lost(Instant::now(), "http://r1"));
        assert_eq!(
            n.tell().as_deref(),
            Some("\r\ncore-client: link lost; reconnecting through http://r1\r\n")
        );
    }
}
