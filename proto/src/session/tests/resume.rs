//! Resume: a session outliving its link. The link is cut at each point of
//! a call; the client comes back over a new link to a new exec-server
//! machine that adopts the detached one, and gets every event exactly once
//! and in order, its stdin taken exactly once; a resume that is stale, from
//! another key or too late is refused and says what was lost.

use super::*;
use crate::session::server::Tombstone;

fn resumable() -> Pair {
    let client = Limits {
        resumable: true,
        ..Limits::client()
    };
    let server = Limits {
        resumable: true,
        ..Limits::server()
    };
    let mut p = Pair::with(client, server);
    p.run();
    assert!(p.client.is_ready(), "{:?}", p.client_events);
    p.client_events.clear();
    p.server_events.clear();
    p
}

impl Pair {
    /// The link breaks: whatever was on the wire is lost and both ends see
    /// it go. Both must detach.
    fn cut(&mut self) {
        self.up = Wire::default();
        self.down = Wire::default();
        let now = self.now;
        self.client_reads = true;
        self.server_reads = true;
        self.client.handle_link_end(None, now);
        self.server.handle_link_end(None, now);
        self.run();
        assert!(self.client.is_detached(), "{:?}", self.client_events);
        assert!(self.server.is_detached(), "{:?}", self.server_events);
        assert!(
            matches!(
                self.client_events.last(),
                Some(ClientEvent::Detached { .. })
            ),
            "{:?}",
            self.client_events
        );
        assert!(
            matches!(
                self.server_events.last(),
                Some(ServerEvent::Detached { .. })
            ),
            "{:?}",
            self.server_events
        );
    }

    /// The client starts a new link to a new exec-server machine, which
    /// answers the hello-less resume; returns the detached machine and the
    /// token the client asked for.
    fn relink(&mut self) -> (ServerSession<Tag>, Bytes) {
        let key = self.client_key.clone();
        let server_pub = self.server_pub;
        self.client.reattach(&key, &server_pub, self.now).unwrap();
        let fresh = ServerSession::new(Arc::clone(&self.acceptor), self.server_limits, self.now);
        let parked = std::mem::replace(&mut self.server, fresh);
        self.server_events.clear();
        self.run();
        let token = self
            .server_events
            .iter()
            .find_map(|e| match e {
                ServerEvent::Resume { token } => Some(token.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no resume asked: {:?}", self.server_events));
        (parked, token)
    }

    /// [`relink`](Self::relink), and the new machine adopts the old.
    fn resume(&mut self) -> server::Adopted {
        let (parked, token) = self.relink();
        assert_eq!(parked.resume_token(), Some(token.as_ref()));
        assert!(self.server.may_resume(&parked));
        let adopted = self.server.adopt(parked, self.now);
        self.run();
        assert!(
            self.client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::Resumed { expired: false, .. })),
            "{:?}",
            self.client_events
        );
        assert!(!self.client.is_detached());
        adopted
    }

    /// The call's output as the client received it, in order.
    fn client_output(&self, id: u64) -> (Vec<u64>, Vec<u8>, Option<Kind>) {
        let mut seqs = Vec::new();
        let mut bytes = Vec::new();
        let mut last = None;
        for (call, seq, kind, is_last) in self.client_calls() {
            if call != id {
                continue;
            }
            seqs.push(seq);
            if let Kind::Stdout(d) = &kind {
                bytes.extend_from_slice(d);
            }
            if is_last {
                last = Some(kind);
            }
        }
        (seqs, bytes, last)
    }

    /// What the client was told of a call it lost: the bytes lost (stdout,
    /// stderr), the exit, and whether the whole session had expired.
    fn lost(&self, id: u64) -> (Option<(u64, u64)>, Option<Exited>, bool) {
        self.client_events
            .iter()
            .find_map(|e| match e {
                ClientEvent::Lost {
                    call_id,
                    lost,
                    exit,
                    expired,
                } if *call_id == id => Some((*lost, *exit, *expired)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no loss reported: {:?}", self.client_events))
    }

    fn stdin_at_server(&self, id: u64) -> Vec<u8> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Stdin { call_id, data } if *call_id == id => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

fn assert_in_order(seqs: &[u64]) {
    let want: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, want, "every event once, in order");
}

/// Call `id`'s events reached the client once each, in order, ending with
/// `last`; its output was `bytes`, when given.
fn assert_output(p: &Pair, id: u64, bytes: Option<&[u8]>, last: Kind) {
    let (seqs, got, end) = p.client_output(id);
    assert_in_order(&seqs);
    if let Some(bytes) = bytes {
        assert_eq!(got, bytes);
    }
    assert_eq!(end, Some(last));
}

#[test]
fn a_session_that_cannot_resume_ends_with_its_link() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.up = Wire::default();
    p.down = Wire::default();
    let now = p.now;
    p.client.handle_link_end(None, now);
    p.server.handle_link_end(None, now);
    p.run();
    assert!(!p.client.is_detached() && !p.server.is_detached());
    assert!(p.client_end().is_some_and(Result::is_err));
    assert!(p.server_end().is_some_and(Result::is_err));
}

#[test]
fn output_lost_mid_call_is_sent_again_exactly_once() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, out("one "));
    // What follows is on the wire when it breaks.
    p.client_reads = false;
    p.push(id, out("two "));
    p.push(id, out("three"));
    p.cut();
    let adopted = p.resume();
    assert_eq!(adopted.events, 2, "{adopted:?}");
    assert_eq!(adopted.bytes, 9);
    assert!(
        p.client_events.iter().any(|e| matches!(
            e,
            ClientEvent::Resumed { replayed, .. } if replayed == &[(id, 9)]
        )),
        "{:?}",
        p.client_events
    );
    assert_eq!(adopted.dropped, 0);
    // The process goes on over the new link.
    p.push(id, out(" four"));
    p.push(id, exit(3));
    assert_output(&p, id, Some(b"one two three four"), exit(3));
}

#[test]
fn a_call_that_exited_while_its_final_event_was_lost_still_ends() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.client_reads = false;
    p.push(id, out("done"));
    p.push(id, exit(0));
    p.cut();
    // The exec-server kept the finished call for the resume.
    assert_eq!(p.server.call_ids(), vec![id]);
    p.resume();
    assert_output(&p, id, Some(b"done"), exit(0));
    // Once the client has it, the exec-server forgets the call.
    p.client.ping(p.now).unwrap();
    p.run();
    assert!(p.server.call_ids().is_empty(), "{:?}", p.server.call_ids());
}

#[test]
fn a_cut_before_the_call_started_resumes_the_call() {
    let mut p = resumable();
    let id = p.exec(false);
    p.client_reads = false;
    p.cut();
    p.resume();
    p.push(id, started());
    p.push(id, exit(0));
    assert_output(&p, id, None, exit(0));
}

#[test]
fn a_request_lost_with_the_link_is_sent_again_and_runs_once_with_its_stdin() {
    let mut p = resumable();
    // The request and some stdin are on the wire when it breaks: the
    // exec-server never had the call.
    p.server_reads = false;
    let id = p.exec(true);
    p.client
        .write_stdin(id, Bytes::from_static(b"sent before the cut"), p.now)
        .unwrap();
    p.client.close_stdin(id, None, p.now).unwrap();
    p.run();
    p.cut();
    p.resume();
    let runs = p
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Exec { call_id, .. } if *call_id == id))
        .count();
    assert_eq!(runs, 1, "{:?}", p.server_events);
    assert_eq!(p.stdin_at_server(id), b"sent before the cut");
    assert!(
        !p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Lost { .. })),
        "{:?}",
        p.client_events
    );
    p.push(id, started());
    p.push(id, exit(0));
    assert_output(&p, id, None, exit(0));
}

#[test]
fn a_request_that_arrived_is_not_sent_again_after_a_resume() {
    let mut p = resumable();
    let id = p.exec(false);
    // It arrived (the exec-server holds it) but nothing came back yet.
    p.client_reads = false;
    p.cut();
    p.resume();
    let runs = p
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Exec { call_id, .. } if *call_id == id))
        .count();
    assert_eq!(runs, 0, "{:?}", p.server_events);
}

#[test]
fn stdin_in_flight_is_sent_again_and_taken_exactly_once() {
    let mut p = resumable();
    let id = p.exec(true);
    p.push(id, started());
    p.client
        .write_stdin(id, Bytes::from_static(b"arrived "), p.now)
        .unwrap();
    p.run();
    // This stdin is on the wire when it breaks: the exec-server never has it.
    p.server_reads = false;
    p.client
        .write_stdin(id, Bytes::from_static(b"lost "), p.now)
        .unwrap();
    p.client.close_stdin(id, None, p.now).unwrap();
    p.run();
    p.cut();
    p.resume();
    let mut closes = 0;
    for e in &p.server_events {
        if matches!(e, ServerEvent::StdinClose { call_id, .. } if *call_id == id) {
            closes += 1;
        }
    }
    // Before the cut and after the resume, in order, once.
    let before: Vec<u8> = b"arrived ".to_vec();
    let after = p.stdin_at_server(id);
    assert_eq!(after, b"lost ", "sent again, from where it stopped");
    assert_eq!([before, after].concat(), b"arrived lost ");
    assert_eq!(closes, 1);
}

#[test]
fn stdin_the_exec_server_had_is_not_sent_again() {
    let mut p = resumable();
    let id = p.exec(true);
    p.push(id, started());
    // The exec-server has it, but its process has not taken it.
    p.server_consumes = false;
    p.client
        .write_stdin(id, Bytes::from_static(b"held"), p.now)
        .unwrap();
    p.run();
    assert_eq!(p.stdin_at_server(id), b"held");
    p.cut();
    p.resume();
    assert!(p.stdin_at_server(id).is_empty(), "{:?}", p.server_events);
}

#[test]
fn a_session_resumes_again_after_a_second_cut() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    for word in ["a", "b", "c"] {
        p.client_reads = false;
        p.push(id, out(word));
        p.cut();
        p.resume();
    }
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"abc"), exit(0));
}

#[test]
fn a_stale_resume_is_refused() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    let stale = p.client.resume_state();
    p.cut();
    p.resume();
    // The client proves the secret that resume moved it to: the old one,
    // superseded, proves nothing now.
    p.cut();
    p.resume();
    p.cut();
    p.client.set_resume_state(stale);
    let (parked, _) = p.relink();
    assert!(!p.server.may_resume(&parked));
}

#[test]
fn a_resume_whose_answer_was_lost_resumes_again_with_the_secret_it_proved() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.client_reads = false;
    p.push(id, out("kept"));
    p.cut();
    // The exec-server adopts the session and answers; the new link breaks
    // before the answer arrives.
    let (parked, _) = p.relink();
    assert!(p.server.may_resume(&parked));
    let _ = p.server.adopt(parked, p.now);
    assert!(p.client.resume_state().is_some());
    p.cut();
    // The client never had the answer, nor the secret it names: the
    // exec-server still takes the one it proved, and nothing is lost.
    let adopted = p.resume();
    assert_eq!(adopted.bytes, 4);
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"kept"), exit(0));
    assert!(
        !p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Lost { .. })),
        "{:?}",
        p.client_events
    );
    // And both ends agree on the secret that resume moved them to.
    p.cut();
    p.resume();
}

#[test]
fn a_resume_from_another_key_is_refused() {
    let (client_key, server_key) = keys();
    let thief = StaticKeypair::generate().unwrap();
    let acceptor = Arc::new(Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public(), thief.public()]),
    ));
    let client_limits = Limits {
        resumable: true,
        ..Limits::client()
    };
    let server_limits = Limits {
        resumable: true,
        ..Limits::server()
    };
    let pair = |key: &StaticKeypair| {
        let mut p = Pair::from_parts(
            key,
            &server_key.public(),
            Arc::clone(&acceptor),
            client_limits,
            server_limits,
        );
        p.run();
        assert!(p.client.is_ready());
        p
    };
    let mut p = pair(&client_key);
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    // Another authorized client that learnt the token, and even the secret.
    let mut other = pair(&thief);
    other.client_events.clear();
    other.server_events.clear();
    other.cut();
    other.client.set_resume_state(p.client.resume_state());
    let (_, token) = other.relink();
    assert_eq!(p.server.resume_token(), Some(token.as_ref()));
    assert!(!other.server.may_resume(&p.server));
    // The session's own client still can.
    p.resume();
}

#[test]
fn a_late_resume_is_told_what_was_lost() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    // Delivered (not yet acknowledged): not lost.
    p.push(id, out("seen"));
    p.client_reads = false;
    p.push(id, out("never seen"));
    p.push(id, exit(9));
    p.cut();
    let (parked, _) = p.relink();
    // The grace expired: the endpoint kept only what the calls lost.
    let tombstone: Tombstone = parked.tombstone();
    drop(parked);
    p.server.refuse_resume(Some(&tombstone), p.now);
    p.run();
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { expired: true, .. })),
        "{:?}",
        p.client_events
    );
    let (lost, ended, expired) = p.lost(id);
    // Exactly what never arrived: "seen" did.
    assert_eq!(lost, Some((10, 0)));
    assert_eq!(
        ended,
        Some(Exited {
            status: Some(exited::Status::Code(9))
        })
    );
    assert!(expired);
    // The link goes on as a new session.
    assert!(p.client.is_ready());
    let again = p.exec(false);
    p.push(again, started());
    p.push(again, exit(0));
    assert_eq!(p.client_output(again).2, Some(exit(0)));
}

#[test]
fn a_client_that_gives_up_ends_its_calls() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    p.client.give_up(SessionError::LinkEnded, p.now);
    p.run();
    assert!(p.client_end().is_some_and(Result::is_err));
    assert_eq!(p.client.open_calls(), 0);
}

#[test]
fn a_detached_exec_server_keeps_what_its_processes_write() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    // While nobody is connected, the process goes on writing.
    let pushed = p.server.push(id, out("while away"), None, None, p.now);
    assert!(pushed.is_ok(), "{pushed:?}");
    p.server.push(id, exit(0), None, None, p.now).unwrap();
    let adopted = p.resume();
    assert_eq!(adopted.events, 2);
    assert_output(&p, id, Some(b"while away"), exit(0));
}

#[test]
fn a_finished_call_trimmed_before_its_end_arrived_is_accounted_exactly_or_said_unknown() {
    // The exec-server keeps one finished call for a resume; the client
    // (which stopped reading) has three whose final events it never got.
    let client = Limits {
        resumable: true,
        ..Limits::client()
    };
    let server = Limits {
        resumable: true,
        max_calls: 1,
        ..Limits::server()
    };
    let mut p = Pair::with(client, server);
    p.run();
    assert!(p.client.is_ready());
    p.client.max_calls_for_tests(8);
    // The first call's start and first output arrive; nothing after.
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = p.exec(false);
        ids.push(id);
        p.push(id, started());
        p.push(id, out("seen "));
        p.client_reads = false;
        p.push(id, out("unseen"));
        p.push(id, exit(n));
    }
    // Only the newest finished call is still held.
    assert_eq!(p.server.call_ids(), vec![ids[2]]);
    p.cut();
    p.resume();
    // The oldest: its account was dropped too (one is kept): unknown.
    let (lost, ended, expired) = p.lost(ids[0]);
    assert_eq!((lost, ended, expired), (None, None, false));
    // The next: what it produced less what arrived, and its exit.
    let (lost, ended, expired) = p.lost(ids[1]);
    assert_eq!(lost, Some((11, 0)));
    assert_eq!(
        ended,
        Some(Exited {
            status: Some(exited::Status::Code(1))
        })
    );
    assert!(!expired);
    // The one still held comes back whole.
    let (seqs, bytes, last) = p.client_output(ids[2]);
    assert_in_order(&seqs);
    assert_eq!(bytes, b"seen unseen");
    assert_eq!(last, Some(exit(2)));
}

#[test]
fn a_detached_session_expires_when_its_grace_has_passed_and_a_late_client_is_told_exactly() {
    let grace = Duration::from_secs(60);
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, out("seen "));
    p.client_reads = false;
    p.push(id, out("unseen"));
    p.cut();
    // The grace is the detached machine's own timer.
    let detached_at = p.now.at;
    assert_eq!(p.server.poll_timeout(), Some(detached_at + grace));
    // Its processes go on meanwhile.
    p.server.push(id, out(" later"), None, None, p.now).unwrap();
    // Not yet over just before the grace ends...
    p.advance(grace - Duration::from_millis(1));
    assert!(p.server.is_detached(), "{:?}", p.server_events);
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Expired { .. }))
    );
    // ...over once it has: the last event, with what the calls produced.
    p.advance(Duration::from_millis(1));
    assert!(!p.server.is_detached());
    let tombstone = match p.server_events.last() {
        Some(ServerEvent::Expired { tombstone }) => tombstone.clone(),
        other => panic!("expected the expiry last: {other:?}"),
    };
    assert_eq!(tombstone.client, Some(p.client_key.public()));
    assert_eq!(tombstone.calls[&id].stdout_total, 17);
    assert_eq!(tombstone.calls[&id].exit, None, "still running at expiry");
    assert!(p.server.is_done());
    assert_eq!(p.server.poll_timeout(), None);
    // Nothing more can be pushed, and the session cannot be resumed.
    assert!(p.server.push(id, out("x"), None, None, p.now).is_err());
    let (parked, _) = p.relink();
    assert!(!p.server.may_resume(&parked));
    p.server.refuse_resume(Some(&tombstone), p.now);
    p.run();
    // The client knows it received 5 bytes of the 17: 12 were lost.
    let (lost, ended, expired) = p.lost(id);
    assert_eq!((lost, ended, expired), (Some((12, 0)), None, true));
}

#[test]
fn a_resume_whose_handshake_times_out_detaches_again_and_a_later_one_succeeds() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.client_reads = false;
    p.push(id, out("kept"));
    p.cut();
    // A new link whose far end never answers the handshake.
    let key = p.client_key.clone();
    let server_pub = p.server_pub;
    p.client.reattach(&key, &server_pub, p.now).unwrap();
    let fresh = ServerSession::new(Arc::clone(&p.acceptor), p.server_limits, p.now);
    let parked = std::mem::replace(&mut p.server, fresh);
    p.server_frozen = true;
    let seen = p.client_events.len();
    let timeout = Limits::client().handshake_timeout;
    p.advance(timeout - Duration::from_millis(1));
    assert_eq!(p.client_events.len(), seen, "{:?}", p.client_events);
    p.advance(Duration::from_millis(1));
    // Detached again (not ended): its calls wait for the next attempt.
    assert!(p.client.is_detached(), "{:?}", p.client_events);
    assert!(
        matches!(
            &p.client_events[seen..],
            [ClientEvent::Detached {
                error: SessionError::Timeout(Stage::Handshake)
            }]
        ),
        "{:?}",
        p.client_events
    );
    assert!(p.client_end().is_none());
    assert_eq!(p.client.open_calls(), 1);
    // The next attempt reaches the exec-server, which still has it.
    p.server = parked;
    p.server_frozen = false;
    p.up = Wire::default();
    p.down = Wire::default();
    p.client_reads = true;
    let adopted = p.resume();
    assert_eq!(adopted.bytes, 4);
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"kept"), exit(0));
}

#[test]
fn a_detached_call_whose_window_is_full_takes_no_more_until_acknowledged_after_the_resume() {
    use crate::session::output::{MIN_WINDOW, cost};
    let client = Limits {
        resumable: true,
        output_window: MIN_WINDOW,
        ..Limits::client()
    };
    let server = Limits {
        resumable: true,
        ..Limits::server()
    };
    let mut p = Pair::with(client, server);
    p.run();
    assert!(p.client.is_ready());
    assert_eq!(p.server.output_window(), MIN_WINDOW);
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    // While nobody is connected, the process writes until its window is
    // full: then its output is refused (its endpoint stops reading it).
    let chunk = || Kind::Stdout(Bytes::from(vec![b'z'; crate::limits::MAX_CHUNK]));
    let mut pushed = 0u64;
    loop {
        match p.server.push(id, chunk(), None, None, p.now) {
            Ok(_) => pushed += 1,
            Err(CallError::OutputWindow(call)) => {
                assert_eq!(call, id);
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(pushed > 0);
    assert!(p.server.retained() <= u64::from(MIN_WINDOW));
    // Still refused however long the session stays detached.
    p.advance(Duration::from_secs(30));
    assert!(matches!(
        p.server.push(id, chunk(), None, None, p.now),
        Err(CallError::OutputWindow(_))
    ));
    // Resumed: everything kept arrives; the window frees only as the
    // client's caller takes it.
    p.resume();
    let events: Vec<(u64, Kind)> = p
        .client_calls()
        .into_iter()
        .filter(|(call, ..)| *call == id)
        .map(|(_, seq, kind, _)| (seq, kind))
        .collect();
    assert_eq!(events.len() as u64, 1 + pushed);
    assert!(matches!(
        p.server.push(id, chunk(), None, None, p.now),
        Err(CallError::OutputWindow(_))
    ));
    let (last_seq, _) = events.last().cloned().unwrap();
    let taken: u64 = events.iter().map(|(_, k)| cost(k)).sum();
    p.client.output_taken(id, last_seq, taken, p.now);
    p.run();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::OutputAcked { call_id, .. } if *call_id == id)),
        "{:?}",
        p.server_events
    );
    p.push(id, out("more"));
    p.push(id, exit(0));
    assert_output(&p, id, None, exit(0));
}

#[test]
fn a_resume_takes_over_a_session_whose_link_this_end_has_not_found_broken() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.client_reads = false;
    p.push(id, out("in flight"));
    // Only the client sees the link go (packets dropped, no reset): the
    // exec-server's machine is still attached to it.
    p.up = Wire::default();
    p.down = Wire::default();
    p.client_reads = true;
    p.server_frozen = true;
    let now = p.now;
    p.client.handle_link_end(None, now);
    p.run();
    assert!(p.client.is_detached());
    assert!(!p.server.is_detached());
    // Nothing of the old link reaches the new one.
    p.up = Wire::default();
    p.down = Wire::default();
    p.server_frozen = false;
    let (mut held, _) = p.relink();
    assert!(!held.is_detached() && !held.is_over());
    // Its client proves it holds the session: the old link is given up.
    assert!(p.server.may_resume(&held));
    held.supersede(p.now);
    assert!(held.is_detached());
    let adopted = p.server.adopt(held, p.now);
    p.run();
    assert_eq!(adopted.bytes, 9);
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"in flight"), exit(0));
}

impl Pair {
    /// The client machine gives up its session over a new link to a new
    /// exec-server machine, which adopts the one it names; returns what
    /// the adoption gave back.
    fn abandon_over_new_link(&mut self) -> server::Adopted {
        let abandonment = self
            .client
            .abandonment()
            .unwrap_or_else(|| panic!("nothing to give up: {:?}", self.client_events));
        let client_limits = Limits {
            resumable: true,
            ..Limits::client()
        };
        let giver = ClientSession::abandon(
            &self.client_key,
            &self.server_pub,
            client_limits,
            abandonment,
            self.now,
        )
        .unwrap();
        self.client = giver;
        self.client_events.clear();
        self.up = Wire::default();
        self.down = Wire::default();
        let fresh = ServerSession::new(Arc::clone(&self.acceptor), self.server_limits, self.now);
        let parked = std::mem::replace(&mut self.server, fresh);
        self.server_events.clear();
        self.run();
        assert!(
            self.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::Resume { .. })),
            "{:?}",
            self.server_events
        );
        assert!(self.server.may_resume(&parked));
        let adopted = self.server.adopt(parked, self.now);
        self.run();
        adopted
    }
}

#[test]
fn a_client_that_gives_up_a_detached_session_ends_its_calls_at_the_exec_server() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    assert_eq!(p.client.abandonment().map(|a| a.calls()), Some(1));
    p.client.give_up(SessionError::LinkEnded, p.now);
    p.run();
    assert_eq!(p.client.abandonment().map(|a| a.calls()), Some(1));
    let adopted = p.abandon_over_new_link();
    assert!(adopted.abandoned);
    assert_eq!(adopted.dropped, 1);
    assert_eq!(adopted.events, 0, "nothing is sent again");
    assert!(p.server.call_ids().is_empty(), "its process ends");
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Abandoned { expired: false })),
        "{:?}",
        p.client_events
    );
    // Both ends are done with it.
    assert!(
        p.client_end().is_some_and(Result::is_ok),
        "{:?}",
        p.client_events
    );
    assert!(
        p.server_end().is_some_and(Result::is_ok),
        "{:?}",
        p.server_events
    );
}

#[test]
fn a_session_ended_by_a_corrupt_record_is_given_up_at_the_exec_server() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    // A relay flips a bit on the way to the client: the client ends the
    // session; the exec-server sees only its link go, and keeps it.
    p.client_reads = false;
    p.push(id, out("tampered"));
    let mut frame = p.down.frames.pop_back().unwrap();
    let mut bytes = frame.payload.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    frame.payload = bytes.into();
    p.down.frames.push_back(frame);
    p.client_reads = true;
    p.run();
    assert!(
        matches!(p.client_end(), Some(Err(SessionError::Transport(_)))),
        "{:?}",
        p.client_events
    );
    p.server.handle_link_end(None, p.now);
    p.run();
    assert!(p.server.is_detached());
    assert_eq!(p.client.abandonment().map(|a| a.calls()), Some(1));
    let adopted = p.abandon_over_new_link();
    assert!(adopted.abandoned);
    assert!(p.server.call_ids().is_empty());
}

#[test]
fn nothing_is_given_up_when_nothing_was_lost() {
    // A clean close, or an error with no call open: nothing to end.
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, exit(0));
    p.cut();
    assert!(p.client.abandonment().is_none());
    let mut q = resumable();
    q.client.close(q.now);
    q.run();
    assert!(q.client.abandonment().is_none());
}

#[test]
fn giving_up_a_session_the_exec_server_no_longer_has_is_answered() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.cut();
    let abandonment = p.client.abandonment().unwrap();
    let giver = ClientSession::abandon(
        &p.client_key,
        &p.server_pub,
        Limits {
            resumable: true,
            ..Limits::client()
        },
        abandonment,
        p.now,
    )
    .unwrap();
    p.client = giver;
    p.client_events.clear();
    p.up = Wire::default();
    p.down = Wire::default();
    p.server = ServerSession::new(Arc::clone(&p.acceptor), p.server_limits, p.now);
    p.run();
    // Gone (expired, or the exec-server restarted): refused, and the
    // giver is told and closes.
    p.server.refuse_resume(None, p.now);
    p.run();
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Abandoned { expired: true })),
        "{:?}",
        p.client_events
    );
    assert!(
        p.client_end().is_some_and(Result::is_ok),
        "{:?}",
        p.client_events
    );
}

/// A pair whose exec-server takes forwarded batches of up to `max` bytes,
/// its sessions resumable; and the keys.
fn resumable_forwarding(max: u32) -> (Pair, StaticKeypair, StaticKeypair) {
    let (client_key, server_key) = keys();
    let mut p = Pair::from_parts(
        &client_key,
        &server_key.public(),
        Arc::new(forwarding_acceptor(&client_key, &server_key, max)),
        Limits {
            resumable: true,
            ..Limits::client()
        },
        Limits {
            resumable: true,
            ..Limits::server()
        },
    );
    p.run();
    assert!(p.client.is_ready());
    (p, client_key, server_key)
}

fn forwarding_acceptor(client: &StaticKeypair, server: &StaticKeypair, max: u32) -> Acceptor {
    let mut acceptor = Acceptor::new(server.clone(), AuthorizedKeys::from_keys([client.public()]));
    acceptor.span_batch_max = max;
    acceptor
}

#[test]
fn a_resumed_session_forwards_spans_only_as_the_answer_says() {
    let (mut p, client_key, server_key) = resumable_forwarding(4096);
    assert_eq!(p.client.span_batch_max(), Some(4096));
    // The exec-server that answers the resume takes none now.
    p.cut();
    p.acceptor = Arc::new(forwarding_acceptor(&client_key, &server_key, 0));
    p.resume();
    assert_eq!(p.client.span_batch_max(), None);
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, exit(0));
    p.run();
    assert_eq!(
        p.client
            .forward_spans(id, Bytes::from_static(b"s"), 1, p.now),
        Err(crate::session::ForwardError::NotOffered)
    );
    // And one that takes them again, with its size.
    p.cut();
    p.acceptor = Arc::new(forwarding_acceptor(&client_key, &server_key, 2048));
    p.resume();
    assert_eq!(p.client.span_batch_max(), Some(2048));
}

#[test]
fn settling_a_finished_call_is_reported_so_the_exec_server_lets_go_of_its_credit() {
    let mut p = resumable();
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, out("done"));
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"done"), exit(0));
    // Kept (finished, its events unacknowledged) until the client says.
    assert_eq!(p.server.call_ids(), vec![id]);
    p.server_events.clear();
    p.client.ping(p.now).unwrap();
    p.run();
    assert!(p.server.call_ids().is_empty(), "{:?}", p.server.call_ids());
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::OutputAcked { call_id, .. } if *call_id == id)),
        "the endpoint is never told the call is settled: {:?}",
        p.server_events
    );
}

#[test]
fn a_client_that_does_not_resume_still_lets_the_exec_server_forget_finished_calls() {
    let server = Limits {
        resumable: true,
        ..Limits::server()
    };
    let mut p = Pair::with(Limits::client(), server);
    p.run();
    assert!(p.client.is_ready(), "{:?}", p.client_events);
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, out("done"));
    p.push(id, exit(0));
    assert_output(&p, id, Some(b"done"), exit(0));
    assert_eq!(p.server.call_ids(), vec![id]);
    p.client.ping(p.now).unwrap();
    p.run();
    assert!(p.server.call_ids().is_empty(), "{:?}", p.server.call_ids());
}
