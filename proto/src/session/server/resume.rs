//! A session outliving its link, on the exec-server: the token and secret
//! it is offered with, the detach when its link breaks, and its adoption by
//! the machine of a new link whose client proves it may resume it (see
//! [`crate::session::resume`]).

use std::collections::BTreeMap;

use ring::rand::SecureRandom;

use super::resumable::{Account, Adopted, Resumable, Tombstone};
use super::{Call, ServerSession, State, Stdin};
use crate::pb::session::{Resumed, ResumedCall, StdinAck, envelope::Body, terminal_event};
use crate::session::resume::{ResumeSecret, TOKEN_LEN};
use crate::session::{LinkFailure, LinkFailureKind, Now, SessionError};
use crate::session::{output, stdin};

/// The close a session given up by its client ends with.
pub(crate) const ABANDONED: &str = "abandoned by the client";

impl<T> ServerSession<T> {
    /// A resume token for the hello answer (empty: resume not offered),
    /// and the secret to check a resume against.
    pub(super) fn offer_resume(&mut self) -> bytes::Bytes {
        if !self.shared.limits.resumable {
            return bytes::Bytes::new();
        }
        let Some(hash) = self
            .shared
            .transport
            .as_ref()
            .map(|t| t.handshake_hash().to_vec())
        else {
            return bytes::Bytes::new();
        };
        let mut token = [0u8; TOKEN_LEN];
        if ring::rand::SystemRandom::new().fill(&mut token).is_err() {
            return bytes::Bytes::new();
        }
        self.resumable = Some(Resumable {
            token,
            secret: ResumeSecret::from_handshake(&hash),
            proven: None,
        });
        bytes::Bytes::copy_from_slice(&token)
    }

    /// Whether a link that broke with `error` leaves the session detached
    /// (kept for a resume) rather than over: a resume was offered, the
    /// session was established, and the link was lost (not a violation, a
    /// corrupt record or a close).
    pub(super) fn detachable(&self, error: &SessionError) -> bool {
        self.resumable.is_some()
            && self.state == State::Ready
            && matches!(
                error,
                SessionError::LinkEnded
                    | SessionError::LinkFailed(_)
                    | SessionError::LinkClosed(_)
                    | SessionError::Timeout(crate::session::Stage::Idle)
            )
    }

    /// Whether the link broke and the session waits for a resume.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The token a resume of this session names, if it may be resumed.
    pub fn resume_token(&self) -> Option<&[u8]> {
        self.resumable.as_ref().map(|r| r.token.as_slice())
    }

    /// Whether `parked` (a detached session, or one whose link this end
    /// has not yet found broken) is the one this session's client asked to
    /// resume, and the client may: the same token, the same client key,
    /// and a proof made with its secret over this session's own handshake
    /// (so a resume seen before, or made by another key, is refused). The
    /// secret is the one the last resume moved to or, until the client
    /// has proved that one, the one it proved then: a client whose last
    /// resume was answered over a link that broke before the answer
    /// arrived never had the next. A session that is over (its grace
    /// expired) cannot be resumed.
    pub fn may_resume(&self, parked: &ServerSession<T>) -> bool {
        let (Some(asked), Some(resumable), Some(hash)) = (
            self.asked.as_ref(),
            parked.resumable.as_ref(),
            self.shared.transport.as_ref().map(|t| t.handshake_hash()),
        ) else {
            return false;
        };
        (parked.detached || !parked.shared.is_over())
            && asked.token.as_ref() == resumable.token.as_slice()
            && self.client.is_some()
            && parked.client == self.client
            && resumable.proved(hash, &asked.proof).is_some()
    }

    /// Gives up this session's link for a new one its client has proved it
    /// holds ([`may_resume`](Self::may_resume)): the client found the old
    /// link broken before this end did (a network that dropped packets
    /// rather than the connection). The session detaches at once, its
    /// calls kept, ready to be adopted.
    pub fn supersede(&mut self, now: Now) {
        if self.detached || self.shared.is_over() || self.resumable.is_none() {
            return;
        }
        let why = LinkFailure::new(
            LinkFailureKind::Superseded,
            "the client resumed the session over a new link",
        );
        self.handle_link_end(Some(why), now);
    }

    /// Takes over `parked`, the session the client asked to resume (checked
    /// with [`may_resume`](Self::may_resume)): its calls and what they kept
    /// come to this link. The client is told where each call stands, and
    /// every event it has not had is sent again, in order. Calls the
    /// client no longer knows are dropped (their processes end: the
    /// endpoint sees them gone from [`call_ids`](Self::call_ids)).
    pub fn adopt(&mut self, mut parked: ServerSession<T>, now: Now) -> Adopted {
        let Some(asked) = self.asked.take() else {
            return Adopted::default();
        };
        let hash = self
            .shared
            .transport
            .as_ref()
            .map(|t| t.handshake_hash().to_vec())
            .unwrap_or_default();
        self.resumable = parked.resumable.take().and_then(|r| {
            let proved = r.proved(&hash, &asked.proof)?.clone();
            Some(Resumable {
                token: r.token,
                secret: proved.next(&hash),
                proven: Some(proved),
            })
        });
        self.output_window = parked.output_window;
        self.acks_when_asked = asked.acks_when_asked;
        self.highest_call = parked.highest_call;
        self.trimmed = std::mem::take(&mut parked.trimmed);
        let mut calls = std::mem::take(&mut parked.calls);
        // An ask sent while the link was breaking may be lost: it is sent
        // again after the replay.
        for call in calls.values_mut() {
            if call.ack == super::Ask::Sent {
                call.ack = super::Ask::Wanted;
            }
        }
        // A client that gives the session up wants none of its calls.
        let wanted: BTreeMap<u64, u64> = asked
            .calls
            .iter()
            .filter(|_| !asked.abandon)
            .map(|c| (c.call_id, c.next_seq))
            .collect();
        let mut adopted = Adopted {
            abandoned: asked.abandon,
            ..Adopted::default()
        };
        // Calls the client has done with (or forgotten) end here.
        calls.retain(|id, call| {
            let keep = wanted.contains_key(id);
            if !keep && !call.finished {
                adopted.dropped += 1;
            }
            keep
        });
        let mut answer = Vec::new();
        for (&call_id, &from) in &wanted {
            match calls.get(&call_id) {
                // Nothing is ever dropped from what a call keeps (its
                // process waits for credit instead), so nothing is lost.
                Some(call) => answer.push(ResumedCall {
                    call_id,
                    known: true,
                    stdin_received: call.received.received(),
                    stdin_consumed: call.received.consumed(),
                    stdin_closed: call.stdin == Stdin::Closed,
                    replayed_bytes: {
                        let (out, err) = call.output.bytes_from(from);
                        out + err
                    },
                    ..ResumedCall::default()
                }),
                // Its request never arrived (the link broke first): it
                // never ran, and the client sends it again.
                None if call_id > self.highest_call => answer.push(ResumedCall {
                    call_id,
                    known: false,
                    unsent: true,
                    ..ResumedCall::default()
                }),
                // Trimmed (its final event kept too long unacknowledged):
                // what it produced and how it ended, when still known.
                None => answer.push(
                    self.trimmed
                        .iter()
                        .find(|(id, _)| *id == call_id)
                        .map_or_else(
                            || ResumedCall {
                                call_id,
                                known: false,
                                ..ResumedCall::default()
                            },
                            |(_, account)| account.answer(call_id),
                        ),
                ),
            }
        }
        let resumed = Resumed {
            expired: false,
            calls: answer,
            resume_token: bytes::Bytes::new(),
            output_window: self.output_window,
            max_processes: u32::try_from(self.shared.limits.max_calls).unwrap_or(u32::MAX),
            stdin_window: self.shared.limits.stdin_window,
            login_shell: self.acceptor.login_shell,
            span_batch_max: self.acceptor.span_batch_max,
        };
        self.calls = calls;
        self.state = State::Ready;
        self.deadline = None;
        if self.send(0, None, Body::Resumed(resumed), now).is_err() {
            return adopted;
        }
        // What the client has not had, again, in order; and the stdin
        // acknowledgements it may have missed.
        let mut replay = Vec::new();
        for (&call_id, call) in &self.calls {
            let from = wanted.get(&call_id).copied().unwrap_or(u64::MAX);
            for event in call.output.kept_since(from) {
                replay.push((call_id, call.trace.clone(), event.clone()));
            }
        }
        for (call_id, trace, event) in replay {
            if let Some(terminal_event::Kind::Stdout(d) | terminal_event::Kind::Stderr(d)) =
                &event.kind
            {
                adopted.bytes += d.len() as u64;
            }
            adopted.events += 1;
            let _ = self
                .shared
                .send(call_id, trace.as_ref(), Body::Event(event), None, now);
        }
        let acks: Vec<(u64, stdin::Ack)> = self
            .calls
            .iter_mut()
            .filter(|(_, c)| !c.finished && c.received.consumed() > 0)
            .map(|(id, c)| (*id, c.received.ack()))
            .collect();
        for (call_id, (consumed, window)) in acks {
            let _ = self.shared.send(
                call_id,
                None,
                Body::StdinAck(StdinAck { consumed, window }),
                None,
                now,
            );
        }
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for call_id in ids {
            self.send_ask(call_id, now);
        }
        if adopted.abandoned {
            self.close(ABANDONED, now);
        }
        self.after(now);
        adopted
    }

    /// Refuses the resume the client asked for: the session it names is
    /// gone (`tombstone` says what became of its calls, when known). This
    /// link goes on as a new session, which the answer names.
    pub fn refuse_resume(&mut self, tombstone: Option<&Tombstone>, now: Now) {
        let Some(asked) = self.asked.take() else {
            return;
        };
        let token = self.offer_resume();
        let limits = self.shared.limits;
        self.output_window = output::negotiate(limits.output_window, limits.output_window);
        self.acks_when_asked = asked.acks_when_asked;
        let calls = asked
            .calls
            .iter()
            .map(|c| {
                tombstone
                    .filter(|t| t.client.is_some() && t.client == self.client)
                    .and_then(|t| t.calls.get(&c.call_id))
                    .map_or_else(
                        || ResumedCall {
                            call_id: c.call_id,
                            known: false,
                            ..ResumedCall::default()
                        },
                        |account| account.answer(c.call_id),
                    )
            })
            .collect();
        let resumed = Resumed {
            expired: true,
            calls,
            resume_token: token,
            output_window: self.output_window,
            max_processes: u32::try_from(limits.max_calls).unwrap_or(u32::MAX),
            stdin_window: limits.stdin_window,
            login_shell: self.acceptor.login_shell,
            span_batch_max: self.acceptor.span_batch_max,
        };
        self.state = State::Ready;
        self.deadline = None;
        let _ = self.send(0, None, Body::Resumed(resumed), now);
        self.after(now);
    }

    /// The calls the session holds (running, or finished and kept for a
    /// resume).
    pub fn call_ids(&self) -> Vec<u64> {
        self.calls.keys().copied().collect()
    }

    /// A detached session's grace expired: what its calls (and those it
    /// trimmed) produced and how they ended, for a client that comes back
    /// late.
    pub fn tombstone(&self) -> Tombstone {
        let mut calls: BTreeMap<u64, Account> = self.trimmed.iter().copied().collect();
        calls.extend(self.calls.iter().map(|(&id, call)| (id, call.account())));
        Tombstone {
            client: self.client,
            calls,
        }
    }

    /// Whether `call` is kept only for a resume (its final event pushed).
    pub(super) fn keep_finished(&self) -> bool {
        self.resumable.is_some()
    }

    /// Removes finished calls beyond the limit of calls, oldest first (their
    /// final events would be lost to a resume; a client acknowledges them
    /// with its next message, so only a flood of short calls on a session
    /// whose client stopped talking comes here).
    pub(super) fn bound_finished(&mut self) {
        let max = self.shared.limits.max_calls;
        let mut finished: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.finished)
            .map(|(id, _)| *id)
            .collect();
        // Ids only increase: the smallest are the oldest.
        finished.sort_unstable();
        let over = (finished.len()).saturating_sub(max);
        for id in finished.into_iter().take(over) {
            if let Some(call) = self.calls.remove(&id) {
                // Its account is kept (as many as calls at most), so that a
                // client that comes back is told what it lost.
                if self.trimmed.len() >= max.max(1) {
                    self.trimmed.pop_front();
                }
                self.trimmed.push_back((id, call.account()));
            }
        }
    }
}

impl Call {
    /// Whether it is over and the client has acknowledged its every event.
    pub(super) fn settled(&self) -> bool {
        self.finished && self.output.is_empty()
    }

    /// What it produced and how it ended.
    fn account(&self) -> Account {
        Account {
            stdout_total: self.produced.0,
            stderr_total: self.produced.1,
            exit: self.exit,
        }
    }
}
