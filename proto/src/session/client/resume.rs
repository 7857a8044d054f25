//! A session outliving its link, on the client: the token the exec-server
//! offered, the detach when the link breaks (calls kept), the new link's
//! handshake and resume, and where each call stands after it (stdin sent
//! again from what arrived, calls the exec-server no longer has reported
//! lost). See [`crate::session::resume`].

use super::resumable::{Abandonment, ReattachError, Resumable};
use super::{ClientEvent, ClientSession, State};
use crate::keys::{PublicKey, StaticKeypair};
use crate::noise::ClientHandshake;
use crate::pb::session::{OutputAck, Resume, ResumeCall, Resumed, envelope::Body};
use crate::session::output;
use crate::session::resume::ResumeSecret;
use crate::session::shared::{Shared, handshake_frame};
use crate::session::{Now, SessionError, Stage, Violation};

impl<T> ClientSession<T> {
    /// The hello answer's token: the session can be resumed (if this end
    /// wants resumes).
    pub(super) fn offered(&mut self, token: &bytes::Bytes) {
        let hash = self
            .shared
            .transport
            .as_ref()
            .map(|t| t.handshake_hash().to_vec());
        self.resumable = match hash {
            Some(hash) if !token.is_empty() && self.shared.limits.resumable => Some(Resumable {
                token: token.clone(),
                secret: ResumeSecret::from_handshake(&hash),
            }),
            _ => None,
        };
    }

    /// Whether a link that broke with `error` leaves the session detached:
    /// it can be resumed, it was established (or being resumed), and the
    /// link was lost or a new one did not come up (not a violation or a
    /// corrupt record).
    pub(super) fn detachable(&self, error: &SessionError) -> bool {
        if self.resumable.is_none() || self.abandoning {
            return false;
        }
        let lost = matches!(
            error,
            SessionError::LinkEnded
                | SessionError::LinkFailed(_)
                | SessionError::LinkClosed(_)
                | SessionError::Timeout(Stage::Idle)
        );
        match self.state {
            State::Ready => lost,
            // A new link that did not come up: another may.
            State::Reattaching { .. } | State::Resuming => {
                lost || matches!(error, SessionError::Refused(_) | SessionError::Timeout(_))
            }
            State::Handshaking { .. } | State::Hello { .. } => false,
        }
    }

    /// Whether the link broke and the calls wait for a resume.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Starts a new link for a detached session: a fresh Noise handshake
    /// with the same keys (its first frame is the next to send); once the
    /// exec-server proves its key, the resume is asked for.
    pub fn reattach(
        &mut self,
        key: &StaticKeypair,
        server: &PublicKey,
        now: Now,
    ) -> Result<(), ReattachError> {
        if !self.detached {
            return Err(ReattachError::NotDetached);
        }
        let limits = self.shared.limits;
        let route = server.server_id();
        let (hs, msg1) =
            ClientHandshake::start(key, server, route.as_bytes(), now.wall, limits.noise)?;
        let mut shared = Shared::new(limits, now);
        shared.send_clear(handshake_frame(msg1));
        self.shared = shared;
        self.state = State::Reattaching { hs: Box::new(hs) };
        self.deadline = Some(now.at + limits.handshake_timeout);
        self.detached = false;
        Ok(())
    }

    /// Gives up on a detached session: it ends with `error` (the one its
    /// link broke with), and every call with it.
    pub fn give_up(&mut self, error: SessionError, _now: Now) {
        if !self.detached {
            return;
        }
        self.detached = false;
        self.orphaned = self.calls.len();
        self.calls.clear();
        self.stdin_queued = 0;
        self.events.end(ClientEvent::Ended(Err(error)));
    }

    /// What it takes to give this session up, when the exec-server may
    /// still be running calls of it that this end has lost: the session
    /// is detached, or ended with an error (a corrupt record, a timeout)
    /// while calls were open, and the exec-server offered resumes. `None`
    /// when there is nothing to end there.
    pub fn abandonment(&self) -> Option<Abandonment> {
        let calls = if self.detached {
            self.calls.len()
        } else if matches!(self.shared.end(), Some(Err(_))) {
            self.orphaned
        } else {
            0
        };
        let resumable = self.resumable.clone().filter(|_| calls > 0)?;
        Some(Abandonment { resumable, calls })
    }

    /// A machine that gives up the session `abandonment` names: a fresh
    /// Noise handshake with the same keys (its first frame is the next to
    /// send), then the resume with the proof and `abandon` set and no
    /// calls. The exec-server ends the session's processes at once
    /// (rather than keeping them for its resume grace) and says so;
    /// [`ClientEvent::Abandoned`] reports the answer, and the machine
    /// closes.
    pub fn abandon(
        key: &StaticKeypair,
        server: &PublicKey,
        limits: crate::session::Limits,
        abandonment: Abandonment,
        now: Now,
    ) -> Result<Self, SessionError> {
        let mut machine = Self::new(key, server, limits, now)?;
        let State::Handshaking { hs } = std::mem::replace(&mut machine.state, State::Resuming)
        else {
            return Err(SessionError::Protocol(Violation::UnexpectedFrame));
        };
        machine.state = State::Reattaching { hs };
        machine.resumable = Some(abandonment.resumable);
        machine.abandoning = true;
        Ok(machine)
    }

    /// Message 2 of a new link: ask for the session back, proving with the
    /// secret over this handshake.
    pub(super) fn resume_handshake(&mut self, msg2: &[u8], now: Now) -> Result<(), SessionError> {
        let State::Reattaching { hs } = std::mem::replace(&mut self.state, State::Resuming) else {
            return Err(SessionError::Protocol(Violation::UnexpectedFrame));
        };
        let transport = hs.finish(msg2, now.at)?;
        let hash = transport.handshake_hash().to_vec();
        self.shared.transport = Some(transport);
        self.events.push(ClientEvent::Secured);
        let Some(resumable) = self.resumable.as_ref() else {
            return Err(SessionError::Protocol(Violation::UnexpectedFrame));
        };
        let calls = self
            .calls
            .iter()
            .map(|(&call_id, call)| ResumeCall {
                call_id,
                next_seq: call.next_seq,
            })
            .collect();
        let resume = Body::Resume(Resume {
            token: resumable.token.clone(),
            proof: bytes::Bytes::copy_from_slice(&resumable.secret.proof(&hash)),
            calls,
            abandon: self.abandoning,
            acks_when_asked: true,
        });
        self.shared
            .send(0, None, resume, None, now)
            .map_err(|_| SessionError::Protocol(Violation::UnexpectedFrame))?;
        Ok(())
    }

    /// The answer to the resume: each call where the exec-server has it
    /// (its stdin sent again from what arrived), or lost.
    pub(super) fn resumed(&mut self, answer: Resumed, now: Now) {
        if self.abandoning {
            // Given up: whatever the answer, the session is done with.
            self.state = State::Ready;
            self.deadline = None;
            self.resumable = None;
            self.events.push(ClientEvent::Abandoned {
                expired: answer.expired,
            });
            self.close(now);
            return;
        }
        let hash = self
            .shared
            .transport
            .as_ref()
            .map(|t| t.handshake_hash().to_vec())
            .unwrap_or_default();
        if answer.expired {
            // A new session: the calls are gone.
            self.resumable = (!answer.resume_token.is_empty() && self.shared.limits.resumable)
                .then(|| Resumable {
                    token: answer.resume_token.clone(),
                    secret: ResumeSecret::from_handshake(&hash),
                });
        } else if let Some(r) = self.resumable.as_mut() {
            r.secret = r.secret.next(&hash);
        }
        self.output_window =
            output::negotiate(answer.output_window, self.shared.limits.output_window);
        // A new link may be a new path: measured afresh.
        self.path_window = None;
        self.stdin_window = answer.stdin_window;
        self.login_shell = answer.login_shell;
        // Spans go only where the exec-server takes them now (it may have
        // restarted with forwarding off).
        self.forwarding.max = answer.span_batch_max;
        self.state = State::Ready;
        self.deadline = None;
        // Finished calls the exec-server kept are settled by the resume.
        self.final_acks.clear();
        let mut answered = std::collections::HashSet::new();
        let mut replayed = Vec::new();
        for c in &answer.calls {
            answered.insert(c.call_id);
            // A request the exec-server never had goes again (it never
            // ran), and its stdin from the start.
            if c.unsent
                && !answer.expired
                && let Some(call) = self.calls.get_mut(&c.call_id)
                && let Some(request) = call.request.clone()
            {
                let trace = call.trace.clone();
                let again = call.out.rewind(0, false);
                self.stdin_queued += again;
                replayed.push((c.call_id, 0));
                let _ = self
                    .shared
                    .send(c.call_id, trace.as_ref(), Body::Exec(request), None, now);
                continue;
            }
            let known = c.known && !answer.expired;
            if known {
                replayed.push((c.call_id, c.replayed_bytes));
                if let Some(call) = self.calls.get_mut(&c.call_id) {
                    let again = call.out.rewind(c.stdin_received, c.stdin_closed);
                    let _ = call.out.ack(c.call_id, c.stdin_consumed, 0);
                    self.stdin_queued += again;
                }
                continue;
            }
            if let Some(call) = self.calls.remove(&c.call_id) {
                // What it produced less what arrived here: exactly what
                // will never arrive.
                let lost = c.accounted.then(|| {
                    (
                        c.stdout_total.saturating_sub(call.received.0),
                        c.stderr_total.saturating_sub(call.received.1),
                    )
                });
                self.stdin_queued -= call.out.queued();
                self.events.push(ClientEvent::Lost {
                    call_id: c.call_id,
                    lost,
                    exit: c.exit,
                    expired: answer.expired,
                });
            }
        }
        // Calls the answer does not name are not the exec-server's either.
        let unnamed: Vec<u64> = self
            .calls
            .keys()
            .filter(|id| !answered.contains(id))
            .copied()
            .collect();
        for call_id in unnamed {
            if let Some(call) = self.calls.remove(&call_id) {
                self.stdin_queued -= call.out.queued();
            }
            self.events.push(ClientEvent::Lost {
                call_id,
                lost: None,
                exit: None,
                expired: answer.expired,
            });
        }
        self.events.push(ClientEvent::Resumed {
            expired: answer.expired,
            replayed,
        });
        // Stdin that did not arrive goes again.
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for call_id in ids {
            let _ = self.flush_stdin(call_id, now);
        }
    }

    /// Acknowledges the final events received since the last message, so
    /// that the exec-server stops keeping their calls (sent before the
    /// next message, and with keepalives).
    pub(super) fn send_final_acks(&mut self, now: Now) {
        for (call_id, seq) in std::mem::take(&mut self.final_acks) {
            let ack = Body::OutputAck(OutputAck { seq, window: 0 });
            let _ = self.shared.send(call_id, None, ack, None, now);
        }
    }
}

#[cfg(test)]
impl<T> ClientSession<T> {
    /// The token and secret this session would resume with.
    pub(in crate::session) fn resume_state(&self) -> Option<Resumable> {
        self.resumable.clone()
    }

    /// Puts back (or forges) the token and secret: a stale or stolen one.
    pub(in crate::session) fn set_resume_state(&mut self, state: Option<Resumable>) {
        self.resumable = state;
    }
}
