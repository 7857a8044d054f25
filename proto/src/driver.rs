//! The one async driver of a session machine, for either end (in the
//! manner of quinn's `ConnectionDriver`): it hands the machine frames from
//! the link, local input and timer expiries, sends what the machine
//! transmits until the link is full, and hands its events to the
//! [`Endpoint`] beside it (the client's call routing, the exec-server's
//! processes). Everything the two ends say to each other is decided by the
//! machine; the driver only moves bytes and time. It also runs a machine
//! with no link ([`drive_detached`]: a session whose link broke, waiting
//! for its client to come back), and it is the one place a machine's
//! events are handed to its endpoint ([`deliver_events`]).
//!
//! It is also the edge between the machines and gRPC: a link's error
//! status becomes the session core's [`LinkFailure`] here (the machines
//! name no tonic or tokio type).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::pb::tunnel::Frame;
use crate::relay_link::FrameSender;
use crate::session::{
    ClientEvent, ClientSession, LinkFailure, LinkFailureKind, Now, ServerEvent, ServerSession,
    Transmit,
};

/// A session machine, as the driver sees it.
pub trait Machine: Send {
    /// What the machine tells its endpoint.
    type Event: Send;
    /// What marked messages hand back once they have left.
    type Tag: Send;
    /// A frame from the link.
    fn handle_frame(&mut self, frame: Frame, now: Now);
    /// The link ended (`failure`: it broke).
    fn handle_link_end(&mut self, failure: Option<LinkFailure>, now: Now);
    /// Timers due at `now`.
    fn handle_timeout(&mut self, now: Now);
    /// The local side is done (shutdown, or no more local input).
    fn close(&mut self, now: Now);
    /// The next frame to send.
    fn poll_transmit(&mut self, now: Now) -> Option<Transmit<Self::Tag>>;
    /// Whether a frame waits to be sent.
    fn has_transmit(&self) -> bool;
    /// Whether our half of the link should end now (true once).
    fn poll_end_link(&mut self) -> bool;
    /// The next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// An event the endpoint cannot take yet.
    fn defer(&mut self, event: Self::Event);
    /// When timers are next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Whether frames are read now.
    fn wants_frames(&self) -> bool;
    /// Whether local input is taken now.
    fn wants_input(&self) -> bool;
    /// Whether the session is over and everything taken.
    fn is_done(&self) -> bool;
    /// Whether its link broke and it waits for a new one, its calls kept
    /// (see [`drive_detached`]).
    fn is_detached(&self) -> bool;
}

/// What woke an endpoint's [`wait`](Endpoint::wait).
#[derive(Debug)]
pub enum Wake<I> {
    /// Local input for the machine.
    Input(I),
    /// The event the endpoint refused may be offered again.
    Ready,
    /// There will be no more local input: the session should close.
    Closed,
}

/// What an endpoint did with an event.
#[derive(Debug)]
pub enum Delivery<E> {
    /// It took it.
    Taken,
    /// It cannot take it yet: the machine holds it until [`Wake::Ready`].
    Later(E),
}

/// The local side of a session: where the machine's events go and where
/// its input comes from.
pub trait Endpoint<M: Machine>: Send {
    /// Local input (caller commands, process events).
    type Input: Send;
    /// Waits for local input (only asked for while `accepting`) or, while
    /// `blocked`, for room to take the event it refused.
    fn wait(
        &mut self,
        accepting: bool,
        blocked: bool,
    ) -> impl Future<Output = Wake<Self::Input>> + Send;
    /// Applies local input to the machine.
    fn apply(&mut self, machine: &mut M, input: Self::Input, now: Now);
    /// Takes an event, or hands it back if it cannot take it yet.
    fn deliver(&mut self, machine: &mut M, event: M::Event, now: Now) -> Delivery<M::Event>;
    /// A frame left: the marked messages it completed, and the envelope
    /// stream's sent offset.
    fn transmitted(&mut self, done: Vec<M::Tag>, sent: u64, now: Now);
    /// Whether the driver should stop and give the link back: the session
    /// goes on elsewhere (detached, waiting for a new link; or a resume,
    /// handed to the session it names). Asked after events are delivered.
    /// For a [detached](drive_detached) session: the endpoint holds a new
    /// link to take it over.
    fn hand_over(&self) -> bool {
        false
    }
    /// The session is about to close (shutdown, or no more local input):
    /// the last chance to queue what must go before the close (it is sent
    /// first).
    fn closing(&mut self, _machine: &mut M, _now: Now) {}
}

/// The machine's first flight: what it sends before the link is open
/// (handshake message 1, with early data when it carries a call), so that
/// it rides with the link's opening (a relay's `Open`) instead of a round
/// trip after it. The endpoint is told of each frame as of one sent
/// ([`Endpoint::transmitted`]); the driver sends the rest once the link is
/// open.
pub fn first_flight<M, E>(machine: &mut M, endpoint: &mut E, now: Now) -> Vec<Frame>
where
    M: Machine,
    E: Endpoint<M>,
{
    let mut frames = Vec::new();
    while let Some(t) = machine.poll_transmit(now) {
        frames.push(t.frame);
        let at = after_send(now, &t.done);
        endpoint.transmitted(t.done, t.sent, at);
    }
    frames
}

/// Hands the machine's events to the endpoint, in order, until there are
/// none or the endpoint cannot take one: that one goes back to the
/// machine ([`Machine::defer`]), the next the machine gives, and `true` is
/// returned (nothing more is offered until the endpoint's
/// [`Wake::Ready`]). The one place events are delivered: the drivers below
/// and any code that moves a machine between them (a failed reattach, a
/// session given up) call it.
pub fn deliver_events<M, E>(machine: &mut M, endpoint: &mut E, now: Now) -> bool
where
    M: Machine,
    E: Endpoint<M>,
{
    while let Some(event) = machine.poll_event() {
        if let Delivery::Later(event) = endpoint.deliver(machine, event, now) {
            machine.defer(event);
            return true;
        }
    }
    false
}

/// How [`drive_link`] stopped.
pub struct Driven<M, E, S> {
    /// The machine.
    pub machine: M,
    /// The endpoint.
    pub endpoint: E,
    /// The link's two halves, when the endpoint asked for a hand-over
    /// (the sending half is gone once the machine ended it).
    pub link: Option<(S, Option<FrameSender>)>,
}

/// Runs a session until it is over: `inbound` and `outbound` are the link's
/// two halves, `shutdown` closes the session cleanly when it completes.
/// Returns the machine and the endpoint (for their final state).
pub async fn drive<M, E, S, F>(
    machine: M,
    endpoint: E,
    inbound: S,
    outbound: FrameSender,
    shutdown: F,
) -> (M, E)
where
    M: Machine,
    E: Endpoint<M>,
    S: Stream<Item = Result<Frame, Status>> + Unpin + Send,
    F: Future<Output = ()> + Send,
{
    let d = drive_link(machine, endpoint, inbound, outbound, shutdown).await;
    (d.machine, d.endpoint)
}

/// How long a link whose sending half is gone is still read: what the peer
/// sent before its end (its close, say) may still be on its way in. A
/// relay that has forwarded a session's last frames lets go of both halves
/// of the stream, and the transport may drop ours (the reset) before the
/// last frames it holds have been read.
const READ_AFTER_SEND_GONE: Duration = Duration::from_secs(2);

/// [`drive`], which also stops when the endpoint asks for a
/// [hand-over](Endpoint::hand_over), giving the link back.
pub async fn drive_link<M, E, S, F>(
    mut machine: M,
    mut endpoint: E,
    mut inbound: S,
    outbound: FrameSender,
    shutdown: F,
) -> Driven<M, E, S>
where
    M: Machine,
    E: Endpoint<M>,
    S: Stream<Item = Result<Frame, Status>> + Unpin + Send,
    F: Future<Output = ()> + Send,
{
    let mut out = Some(outbound);
    let mut inbound_open = true;
    let mut input_open = true;
    let mut blocked = false;
    let mut shut = false;
    // Set once the sending half is gone: when the link is given up if the
    // peer's half has not ended by then.
    let mut send_gone: Option<Instant> = None;
    tokio::pin!(shutdown);
    // The clock is read once per wake-up, and that reading serves the
    // rest of the turn.
    let mut now = Now::system();
    loop {
        if !blocked {
            blocked = deliver_events(&mut machine, &mut endpoint, now);
        }
        if endpoint.hand_over() {
            return Driven {
                machine,
                endpoint,
                link: Some((inbound, out)),
            };
        }
        // Send until the link is full.
        while let Some(tx) = out.as_ref().filter(|_| machine.has_transmit()) {
            let Ok(permit) = tx.try_reserve() else { break };
            let Some(t) = machine.poll_transmit(now) else {
                break;
            };
            now = after_send(now, &t.done);
            permit.send(Ok(t.frame));
            endpoint.transmitted(t.done, t.sent, now);
        }
        if machine.poll_end_link() {
            out = None;
        }
        if machine.is_done() {
            return Driven {
                machine,
                endpoint,
                link: None,
            };
        }
        let deadline = machine.poll_timeout();
        let sending = out.is_some() && machine.has_transmit();
        let reading = inbound_open && machine.wants_frames();
        let accepting = input_open && machine.wants_input();
        let mut link_gone = false;
        tokio::select! {
            biased;
            () = &mut shutdown, if !shut => {
                shut = true;
                now = Now::system();
                endpoint.closing(&mut machine, now);
                machine.close(now);
            }
            permit = reserve(out.as_ref()), if sending => {
                now = Now::system();
                match permit {
                    Some(permit) => {
                        if let Some(t) = machine.poll_transmit(now) {
                            now = after_send(now, &t.done);
                            permit.send(Ok(t.frame));
                            endpoint.transmitted(t.done, t.sent, now);
                        }
                    }
                    // The link's sending half is gone: so is the link.
                    None => link_gone = true,
                }
            }
            frame = inbound.next(), if reading => {
                now = Now::system();
                match frame {
                    Some(Ok(frame)) => machine.handle_frame(frame, now),
                    Some(Err(status)) => {
                        inbound_open = false;
                        machine.handle_link_end(Some(status.into()), now);
                    }
                    // The peer's half ended after ours was gone: the link
                    // broke, as far as this end can tell.
                    None if send_gone.is_some() => {
                        inbound_open = false;
                        machine.handle_link_end(Some(send_half_gone()), now);
                    }
                    None => {
                        inbound_open = false;
                        machine.handle_link_end(None, now);
                    }
                }
            }
            () = sleep_until(send_gone), if inbound_open && send_gone.is_some() => {
                now = Now::system();
                inbound_open = false;
                machine.handle_link_end(Some(send_half_gone()), now);
            }
            wake = endpoint.wait(accepting, blocked) => {
                now = Now::system();
                match wake {
                    Wake::Input(input) => endpoint.apply(&mut machine, input, now),
                    Wake::Ready => blocked = false,
                    Wake::Closed => {
                        input_open = false;
                        endpoint.closing(&mut machine, now);
                        machine.close(now);
                    }
                }
            }
            () = sleep_until(deadline) => {
                now = Now::system();
                machine.handle_timeout(now);
            }
        }
        if link_gone {
            out = None;
            if inbound_open {
                // What the peer sent first is read before the link is
                // given up (for a bounded time).
                send_gone = Some(now.at + READ_AFTER_SEND_GONE);
            } else {
                machine.handle_link_end(Some(send_half_gone()), now);
            }
        }
    }
}

/// How [`drive_detached`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The endpoint holds a new link to take the session over
    /// ([`Endpoint::hand_over`]).
    HandedOver,
    /// The machine is no longer detached and every event is taken: the
    /// session is over (its grace passed).
    Over,
    /// `shutdown` completed first; the machine is still detached.
    Shutdown,
}

/// Runs a [detached](Machine::is_detached) machine, one with no link: its
/// timers, the endpoint's local input (taken throughout: what a detached
/// session is given is kept for its next link) and its events, until the
/// endpoint has a link to take the session over, the machine is no longer
/// detached (its events all taken), or `shutdown` completes. Checked in
/// that order each turn, and woken by shutdown first, then the deadline,
/// then the endpoint.
pub async fn drive_detached<M, E, F>(machine: &mut M, endpoint: &mut E, shutdown: F) -> Detached
where
    M: Machine,
    E: Endpoint<M>,
    F: Future<Output = ()> + Send,
{
    let mut input_open = true;
    let mut blocked = false;
    tokio::pin!(shutdown);
    let mut now = Now::system();
    loop {
        if !blocked {
            blocked = deliver_events(machine, endpoint, now);
        }
        if endpoint.hand_over() {
            return Detached::HandedOver;
        }
        if !blocked && !machine.is_detached() {
            return Detached::Over;
        }
        let deadline = machine.poll_timeout();
        tokio::select! {
            biased;
            () = &mut shutdown => return Detached::Shutdown,
            () = sleep_until(deadline) => {
                now = Now::system();
                machine.handle_timeout(now);
            }
            wake = endpoint.wait(input_open, blocked) => {
                now = Now::system();
                match wake {
                    Wake::Input(input) => endpoint.apply(machine, input, now),
                    Wake::Ready => blocked = false,
                    // Nothing to close without a link: the session waits
                    // on for one, or for its end.
                    Wake::Closed => input_open = false,
                }
            }
        }
    }
}

/// The link's end when its sending half went first.
fn send_half_gone() -> LinkFailure {
    LinkFailure::new(LinkFailureKind::Broken, "the link closed")
}

async fn reserve(
    tx: Option<&FrameSender>,
) -> Option<tokio::sync::mpsc::Permit<'_, Result<Frame, Status>>> {
    tx?.reserve().await.ok()
}

/// Waits until `deadline` (a machine's next timer, or any other), or
/// forever without one: the one timer wait of the session drivers and the
/// loops beside them.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Implements [`Machine`] for a session machine by delegating to its own
/// methods of the same names.
macro_rules! machine {
    ($machine:ident, $event:ident) => {
        impl<T: Send> Machine for $machine<T> {
            type Event = $event;
            type Tag = T;
            fn handle_frame(&mut self, frame: Frame, now: Now) {
                $machine::handle_frame(self, frame, now);
            }
            fn handle_link_end(&mut self, failure: Option<LinkFailure>, now: Now) {
                $machine::handle_link_end(self, failure, now);
            }
            fn handle_timeout(&mut self, now: Now) {
                $machine::handle_timeout(self, now);
            }
            fn close(&mut self, now: Now) {
                $machine::shutdown(self, now);
            }
            fn poll_transmit(&mut self, now: Now) -> Option<Transmit<T>> {
                $machine::poll_transmit(self, now)
            }
            fn has_transmit(&self) -> bool {
                $machine::has_transmit(self)
            }
            fn poll_end_link(&mut self) -> bool {
                $machine::poll_end_link(self)
            }
            fn poll_event(&mut self) -> Option<$event> {
                $machine::poll_event(self)
            }
            fn defer(&mut self, event: $event) {
                $machine::defer(self, event);
            }
            fn poll_timeout(&self) -> Option<Instant> {
                $machine::poll_timeout(self)
            }
            fn wants_frames(&self) -> bool {
                $machine::wants_frames(self)
            }
            fn wants_input(&self) -> bool {
                $machine::wants_input(self)
            }
            fn is_done(&self) -> bool {
                $machine::is_done(self)
            }
            fn is_detached(&self) -> bool {
                $machine::is_detached(self)
            }
        }
    };
}

machine!(ClientSession, ClientEvent);
machine!(ServerSession, ServerEvent);

/// A link's error status as the session core knows it: its kind from the
/// status code, the reason a relay named in its details
/// ([`crate::routing::refusal`]), its words, and the status itself as the
/// source.
impl From<Status> for LinkFailure {
    fn from(status: Status) -> Self {
        use tonic::Code;
        let kind = match status.code() {
            Code::Unavailable | Code::Unknown => LinkFailureKind::Broken,
            Code::Cancelled => LinkFailureKind::Cancelled,
            Code::NotFound => LinkFailureKind::NotFound,
            Code::ResourceExhausted => LinkFailureKind::Exhausted,
            Code::DeadlineExceeded => LinkFailureKind::TimedOut,
            _ => LinkFailureKind::Refused,
        };
        LinkFailure::new(kind, status.message())
            .with_refusal(crate::routing::refusal(&status))
            .with_source(std::sync::Arc::new(status))
    }
}

/// The time a record carrying marked messages was handed to the link (read
/// again, so that their send spans include the encoding and sealing); for
/// other records the wake's time stands. Read before the hand-over, never
/// after: once handed over, the record may reach the peer (and a relay
/// time its forward) while this thread waits to run, and a time of
/// leaving later than that would put the far end's times before it (the
/// placement of a relay's forwards, which must lie between a request
/// leaving and its answer arriving, then finds no room).
fn after_send<T>(now: Now, done: &[T]) -> Now {
    if done.is_empty() { now } else { Now::system() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::tunnel::CloseReason;

    #[test]
    fn a_status_becomes_a_typed_link_failure_with_its_cause() {
        let status = crate::routing::refuse(
            tonic::Code::ResourceExhausted,
            "the relay is busy",
            CloseReason::Busy,
        );
        let failure = LinkFailure::from(status);
        assert_eq!(failure.kind(), LinkFailureKind::Exhausted);
        assert_eq!(failure.refusal(), Some(CloseReason::Busy));
        assert_eq!(failure.message(), "the relay is busy");
        let source = std::error::Error::source(&failure).and_then(|e| e.downcast_ref::<Status>());
        assert_eq!(
            source.map(Status::code),
            Some(tonic::Code::ResourceExhausted)
        );
        // Told apart by code, never by words.
        let reset = LinkFailure::from(Status::unavailable("not found"));
        assert_eq!(reset.kind(), LinkFailureKind::Broken);
        assert_eq!(reset.refusal(), None);
        let other = LinkFailure::from(Status::aborted(""));
        assert_eq!(other.kind(), LinkFailureKind::Refused);
        assert_eq!(other.to_string(), "the far end refused");
    }

    /// A machine that always has something to send and notes what it is
    /// told, in order; over once its link ends.
    #[derive(Default)]
    struct Notes {
        told: Vec<&'static str>,
    }

    impl Machine for Notes {
        type Event = ();
        type Tag = ();
        fn handle_frame(&mut self, _frame: Frame, _now: Now) {
            self.told.push("frame");
        }
        fn handle_link_end(&mut self, failure: Option<LinkFailure>, _now: Now) {
            self.told.push(match failure {
                Some(f) if f.kind() == LinkFailureKind::Broken => "broke",
                Some(_) => "failed",
                None => "ended",
            });
        }
        fn handle_timeout(&mut self, _now: Now) {}
        fn close(&mut self, _now: Now) {}
        fn poll_transmit(&mut self, _now: Now) -> Option<Transmit<()>> {
            Some(Transmit {
                frame: crate::frames::close(CloseReason::Unspecified),
                done: Vec::new(),
                sent: 0,
            })
        }
        fn has_transmit(&self) -> bool {
            true
        }
        fn poll_end_link(&mut self) -> bool {
            false
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
        fn defer(&mut self, _event: ()) {}
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn wants_frames(&self) -> bool {
            true
        }
        fn wants_input(&self) -> bool {
            false
        }
        fn is_done(&self) -> bool {
            self.told.last().is_some_and(|t| *t != "frame")
        }
        fn is_detached(&self) -> bool {
            false
        }
    }

    /// An endpoint with no input.
    struct Quiet;

    impl Endpoint<Notes> for Quiet {
        type Input = ();
        async fn wait(&mut self, _accepting: bool, _blocked: bool) -> Wake<()> {
            std::future::pending().await
        }
        fn apply(&mut self, _machine: &mut Notes, _input: (), _now: Now) {}
        fn deliver(&mut self, _machine: &mut Notes, _event: (), _now: Now) -> Delivery<()> {
            Delivery::Taken
        }
        fn transmitted(&mut self, _done: Vec<()>, _sent: u64, _now: Now) {}
    }

    /// The peer's last frames, already in, are read when the transport has
    /// dropped our sending half first (a relay that forwarded a session's
    /// close lets go of the stream, and the reset may close our half before
    /// the close is read): the machine sees them before the link's end,
    /// which comes when the peer's half ends, or after a bounded wait.
    #[tokio::test(start_paused = true)]
    async fn what_the_peer_sent_is_read_when_our_sending_half_went_first() {
        let frame = || Ok(crate::frames::close(CloseReason::Unspecified));
        // The peer's half ends after its frame.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let inbound = futures::stream::iter([frame()]);
        let (machine, _) =
            drive(Notes::default(), Quiet, inbound, tx, std::future::pending()).await;
        assert_eq!(machine.told, ["frame", "broke"]);
        // The peer's half stays open: given up after a bounded wait.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let inbound = futures::stream::iter([frame()]).chain(futures::stream::pending());
        let started = tokio::time::Instant::now();
        let (machine, _) =
            drive(Notes::default(), Quiet, inbound, tx, std::future::pending()).await;
        assert_eq!(machine.told, ["frame", "broke"]);
        let waited = started.elapsed();
        assert!(
            waited >= READ_AFTER_SEND_GONE && waited < READ_AFTER_SEND_GONE * 2,
            "{waited:?}"
        );
        // A peer that ended first: its end is a clean one, as before.
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let inbound = futures::stream::iter([frame()]);
        let (machine, _) =
            drive(Notes::default(), Quiet, inbound, tx, std::future::pending()).await;
        assert_eq!(machine.told, ["frame", "ended"]);
    }

    /// A machine with no link, as a parked session's: it gives the events
    /// it holds in order, takes back one refused, and its timer, when due,
    /// fires once, with an event (ending its wait with `expiry` when it has
    /// one).
    #[derive(Default)]
    struct Waiting {
        events: std::collections::VecDeque<&'static str>,
        deferred: usize,
        deadline: Option<Instant>,
        timeouts: usize,
        expiry: Option<&'static str>,
        detached: bool,
    }

    impl Waiting {
        fn detached() -> Self {
            Self {
                detached: true,
                ..Self::default()
            }
        }
    }

    impl Machine for Waiting {
        type Event = &'static str;
        type Tag = ();
        fn handle_frame(&mut self, _frame: Frame, _now: Now) {}
        fn handle_link_end(&mut self, _failure: Option<LinkFailure>, _now: Now) {}
        fn handle_timeout(&mut self, _now: Now) {
            // The test's clock is tokio's, paused: its deadline has come
            // when the driver says so.
            self.timeouts += 1;
            self.deadline = None;
            match self.expiry.take() {
                Some(expiry) => {
                    self.events.push_back(expiry);
                    self.detached = false;
                }
                None => self.events.push_back("timeout"),
            }
        }
        fn close(&mut self, _now: Now) {}
        fn poll_transmit(&mut self, _now: Now) -> Option<Transmit<()>> {
            None
        }
        fn has_transmit(&self) -> bool {
            false
        }
        fn poll_end_link(&mut self) -> bool {
            false
        }
        fn poll_event(&mut self) -> Option<&'static str> {
            self.events.pop_front()
        }
        fn defer(&mut self, event: &'static str) {
            self.deferred += 1;
            self.events.push_front(event);
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.deadline
        }
        fn wants_frames(&self) -> bool {
            false
        }
        fn wants_input(&self) -> bool {
            false
        }
        fn is_done(&self) -> bool {
            self.events.is_empty()
        }
        fn is_detached(&self) -> bool {
            self.detached
        }
    }

    /// What the test feeds [`Taker`]: local input (an event for the
    /// machine to give back), room for the event it refused, or a new link
    /// (taken as input, as the exec-server's runner takes one).
    #[derive(Debug)]
    enum Step {
        Input(&'static str),
        Room,
        Link,
    }

    /// An endpoint that notes the events it takes, refuses `refuse` once,
    /// hands local input to the machine as events, and asks to hand over
    /// once given a link.
    struct Taker {
        taken: Vec<&'static str>,
        refuse: Option<&'static str>,
        steps: tokio::sync::mpsc::UnboundedReceiver<Step>,
        link: bool,
    }

    impl Taker {
        fn new() -> (Self, tokio::sync::mpsc::UnboundedSender<Step>) {
            let (tx, steps) = tokio::sync::mpsc::unbounded_channel();
            let taker = Self {
                taken: Vec::new(),
                refuse: None,
                steps,
                link: false,
            };
            (taker, tx)
        }
    }

    impl Endpoint<Waiting> for Taker {
        type Input = Step;
        async fn wait(&mut self, accepting: bool, blocked: bool) -> Wake<Step> {
            assert!(accepting, "a detached machine takes input throughout");
            match self.steps.recv().await {
                Some(Step::Room) if blocked => Wake::Ready,
                Some(Step::Room) => panic!("room offered while not blocked"),
                Some(step) => Wake::Input(step),
                None => std::future::pending().await,
            }
        }
        fn apply(&mut self, machine: &mut Waiting, step: Step, _now: Now) {
            match step {
                Step::Input(input) => machine.events.push_back(input),
                Step::Link => self.link = true,
                Step::Room => {}
            }
        }
        fn deliver(
            &mut self,
            _machine: &mut Waiting,
            event: &'static str,
            _now: Now,
        ) -> Delivery<&'static str> {
            if self.refuse == Some(event) {
                self.refuse = None;
                return Delivery::Later(event);
            }
            self.taken.push(event);
            Delivery::Taken
        }
        fn transmitted(&mut self, _done: Vec<()>, _sent: u64, _now: Now) {}
        fn hand_over(&self) -> bool {
            self.link
        }
    }

    /// Events go to the endpoint in order; one it cannot take goes back to
    /// the machine, ahead of the rest, and stops the delivery until the
    /// endpoint has room.
    #[test]
    fn events_are_delivered_in_order_and_a_refused_one_waits_first() {
        let mut machine = Waiting::default();
        machine.events.extend(["a", "b", "c"]);
        let (mut taker, _steps) = Taker::new();
        taker.refuse = Some("b");
        let now = Now::system();
        assert!(deliver_events(&mut machine, &mut taker, now));
        assert_eq!(taker.taken, ["a"]);
        assert_eq!(machine.deferred, 1);
        assert_eq!(machine.events, ["b", "c"]);
        assert!(!deliver_events(&mut machine, &mut taker, now));
        assert_eq!(taker.taken, ["a", "b", "c"]);
        assert!(machine.events.is_empty());
    }

    /// The machine's timer fires when due, and a session no longer
    /// detached (its grace passed) ends the drive once its last event is
    /// taken.
    #[tokio::test(start_paused = true)]
    async fn a_detached_drive_fires_its_timer_and_ends_with_the_session() {
        let grace = Duration::from_secs(5);
        let mut machine = Waiting::detached();
        machine.deadline = Some(Instant::now() + grace);
        machine.expiry = Some("expired");
        let (mut taker, _steps) = Taker::new();
        let started = tokio::time::Instant::now();
        let how = drive_detached(&mut machine, &mut taker, std::future::pending()).await;
        assert_eq!(how, Detached::Over);
        assert_eq!(machine.timeouts, 1);
        assert_eq!(taker.taken, ["expired"]);
        let waited = started.elapsed();
        assert!(waited >= grace && waited < grace * 2, "{waited:?}");
    }

    /// A session over is not left while an event of it waits for room.
    #[tokio::test(start_paused = true)]
    async fn a_detached_drive_waits_for_room_for_the_last_event() {
        let mut machine = Waiting::default();
        machine.events.push_back("expired");
        let (mut taker, steps) = Taker::new();
        taker.refuse = Some("expired");
        let room = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = steps.send(Step::Room);
            steps
        });
        let started = tokio::time::Instant::now();
        let how = drive_detached(&mut machine, &mut taker, std::future::pending()).await;
        assert_eq!(how, Detached::Over);
        assert_eq!(machine.deferred, 1);
        assert_eq!(taker.taken, ["expired"]);
        assert!(started.elapsed() >= Duration::from_secs(1));
        drop(room.await);
    }

    /// Local input is taken while detached, its events delivered, and a
    /// link the endpoint takes ends the drive with the machine still
    /// detached; a due timer is fired before the endpoint is heard.
    #[tokio::test(start_paused = true)]
    async fn a_link_ends_the_detached_drive() {
        let mut machine = Waiting::detached();
        machine.deadline = Instant::now().checked_sub(Duration::from_secs(1));
        let (mut taker, steps) = Taker::new();
        for step in [Step::Input("out 1"), Step::Input("out 2"), Step::Link] {
            let _ = steps.send(step);
        }
        let how = drive_detached(&mut machine, &mut taker, std::future::pending()).await;
        assert_eq!(how, Detached::HandedOver);
        assert_eq!(taker.taken, ["timeout", "out 1", "out 2"]);
        assert_eq!(machine.timeouts, 1);
        assert!(machine.is_detached());
    }

    /// Shutdown ends the drive, first of whatever is due (the events
    /// already there are delivered before).
    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_detached_drive() {
        let mut machine = Waiting::detached();
        machine.events.push_back("detached");
        machine.deadline = Some(Instant::now());
        machine.expiry = Some("expired");
        let (mut taker, steps) = Taker::new();
        let _ = steps.send(Step::Input("out"));
        let how = drive_detached(&mut machine, &mut taker, std::future::ready(())).await;
        assert_eq!(how, Detached::Shutdown);
        assert_eq!(taker.taken, ["detached"]);
        assert_eq!(machine.timeouts, 0);
        assert!(machine.is_detached());
        // Later, while it waits: the grace has not passed.
        let mut machine = Waiting::detached();
        machine.deadline = Some(Instant::now() + Duration::from_secs(60));
        let (mut taker, _steps) = Taker::new();
        let started = tokio::time::Instant::now();
        let shutdown = tokio::time::sleep(Duration::from_secs(1));
        let how = drive_detached(&mut machine, &mut taker, shutdown).await;
        assert_eq!(how, Detached::Shutdown);
        assert_eq!(machine.timeouts, 0);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(60));
    }
}
