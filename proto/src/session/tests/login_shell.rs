//! Login shells: offered in the hello answer, asked for explicitly (never
//! an empty argv), refused by the client machine when the exec-server does
//! not offer them (an older one) and by the exec-server machine when asked
//! for wrongly.

use super::*;
use crate::pb::session::envelope::Body;

fn login_shell() -> ExecRequest {
    ExecRequest {
        login_shell: true,
        stdin: StdinMode::Pipe as i32,
        ..Default::default()
    }
}

/// A pair whose exec-server end offers login shells or not.
fn ready_offering(login_shell: bool) -> Pair {
    let (client_key, server_key) = keys();
    let mut acceptor = Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    );
    acceptor.login_shell = login_shell;
    let mut p = Pair::from_parts(
        &client_key,
        &server_key.public(),
        Arc::new(acceptor),
        Limits::client(),
        Limits::server(),
    );
    p.run();
    assert!(p.client.is_ready(), "{:?}", p.client_events);
    p
}

fn offered(p: &Pair) -> bool {
    p.client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Ready(r) => Some(r.login_shell),
            _ => None,
        })
        .unwrap()
}

fn refusals(p: &Pair) -> Vec<(u64, ExecErrorKind, &'static str)> {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Refused {
                call_id,
                kind,
                message,
                ..
            } => Some((*call_id, *kind, *message)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_hello_answer_says_whether_login_shells_are_started() {
    assert!(offered(&ready_offering(true)));
    assert!(!offered(&ready_offering(false)));
}

#[test]
fn a_login_shell_request_reaches_the_exec_server_as_one() {
    let mut p = ready_offering(true);
    p.server_events.clear();
    let id = p.client.next_call_id();
    p.client
        .start_call(id, login_shell(), None, None, p.now)
        .unwrap();
    p.run();
    let [ServerEvent::Exec { request, .. }] = p.server_events.as_slice() else {
        panic!("{:?}", p.server_events)
    };
    assert!(request.login_shell);
    assert!(request.argv.is_empty());
}

#[test]
fn the_client_machine_refuses_a_login_shell_an_exec_server_does_not_offer() {
    let mut p = ready_offering(false);
    p.server_events.clear();
    let id = p.client.next_call_id();
    let refused = p
        .client
        .start_call(id, login_shell(), None, None, p.now)
        .unwrap_err();
    assert_eq!(refused, CallError::NoLoginShell);
    assert!(refused.to_string().contains("older"), "{refused}");
    // With a command too, whatever the exec-server offers.
    let mut with_command = login_shell();
    with_command.argv = vec![Bytes::from_static(b"sh")];
    assert_eq!(
        p.client.start_call(id, with_command, None, None, p.now),
        Err(CallError::LoginShellWithCommand)
    );
    p.run();
    assert!(p.server_events.is_empty(), "{:?}", p.server_events);
    assert_eq!(p.client.open_calls(), 0);
    // A command still runs.
    p.exec(false);
}

#[test]
fn the_exec_server_machine_refuses_a_login_shell_asked_for_wrongly() {
    let mut p = ready_offering(false);
    // Sent raw, as a peer that skips the client machine's checks would.
    p.client_reads = false;
    p.client
        .shared
        .send(7, None, Body::Exec(login_shell()), None, p.now)
        .unwrap();
    p.run();
    let mut p2 = ready_offering(true);
    p2.client_reads = false;
    let mut with_command = login_shell();
    with_command.argv = vec![Bytes::from_static(b"sh")];
    p2.client
        .shared
        .send(8, None, Body::Exec(with_command), None, p2.now)
        .unwrap();
    p2.run();
    for (p, id, why) in [(&p, 7, "login shells"), (&p2, 8, "no command")] {
        let refused = refusals(p);
        assert_eq!(refused.len(), 1, "{:?}", p.server_events);
        assert_eq!(refused[0].0, id);
        assert_eq!(refused[0].1, ExecErrorKind::BadRequest);
        assert!(refused[0].2.contains(why), "{}", refused[0].2);
        assert!(
            !p.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::Exec { .. }))
        );
        assert!(p.server_end().is_none());
    }
}
