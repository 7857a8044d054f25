//! The relay's forwards of a call's frames, brought home on the client's
//! frames (`HopTiming`, in clear: the relay holds no session key) and
//! placed on the client's clock, so that a client with no collector sees
//! the relay's stage and the time on the wire split into its legs:
//! client → relay → exec-server and back.
//!
//! The relay's clock is placed from the tightest source there is (the
//! rule: [`crate::placement`]): the same kernel as ours (the relay's boot
//! id digest, told on its timings), both kernels synchronized, else the
//! call itself, as NTP does from four timestamps: the exec request leaving
//! the client (t1), reaching the relay (t2, the relay's clock), the final
//! event leaving the relay (t3) and reaching the client (t4). That
//! estimate is the midpoint of the offsets under which both forwards lie
//! between the request leaving and the final event arriving (there is
//! none when they cannot), and half their spread is its bound. The
//! exec-server's stages are then placed between the two forwards (the
//! request reached it after the relay forwarded it, and the final event
//! left it before the relay received it), which causality always allows.
//! A session that crossed two relays of a fleet brings both relays'
//! forwards (each tells its place on the path): the second relay's are
//! placed the same way between the first's, and the exec-server's stages
//! between the second's. The timings are untrusted input: only those
//! naming the call's trace and dispatch, with sane times, are placed, at
//! most [`MAX_HOP_TIMINGS`].

use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanId, TraceId};
use proto::limits::MAX_HOP_TIMINGS;
use proto::pb::tunnel::{HopDirection, HopTiming};
use proto::session::peer_clock::{Offset, Status};

use super::offset::{CausalBounds, at, nanos, push_placed_by};
use crate::remote::{RELAY, RemoteSpan};
use crate::spans;

/// A call's relay forwards on the client's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedHops {
    /// The forwards, as the relays' `relay.forward` spans.
    pub spans: Vec<RemoteSpan>,
    /// The client's relay's.
    pub first: RelayHop,
    /// When the session crossed two relays of a fleet, the second's (the
    /// relay the client's forwarded it to), placed between the first's.
    pub second: Option<RelayHop>,
}

/// One relay's forwards of the exec request and of the final event on the
/// client's clock, and the offset used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayHop {
    /// The exec request's forward (start, end).
    pub to_server: (SystemTime, SystemTime),
    /// The final event's forward (start, end).
    pub to_client: (SystemTime, SystemTime),
    /// Its clock minus ours, and the source.
    pub offset: Offset,
}

impl PlacedHops {
    /// The relay next to the exec-server (the second, if any): the
    /// exec-server's work lies between its forwards.
    pub fn nearest_server(&self) -> &RelayHop {
        self.second.as_ref().unwrap_or(&self.first)
    }
}

/// What the client saw of the call on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Legs {
    /// The exec request left (the end of its `relay.frame.send`).
    pub request_left: SystemTime,
    /// The final event's frame arrived.
    pub final_arrived: SystemTime,
}

/// Places `timings` (as received, any number) for the call of `trace_id`
/// whose dispatch is `dispatch`, `local` being what this process reads of
/// its own clock; `None` when they do not hold both the request's and the
/// final event's forward at the client's relay, or no offset puts both
/// between the request leaving and the final event arriving. When the
/// session crossed two relays of a fleet, the second relay's forwards are
/// placed the same way between the first's (left out if they do not fit).
pub fn place(
    timings: &[HopTiming],
    trace_id: TraceId,
    dispatch: SpanId,
    legs: Legs,
    local: &Status,
) -> Option<PlacedHops> {
    let trace = trace_id.to_bytes();
    let dispatch = u64::from_be_bytes(dispatch.to_bytes());
    let span_max = nanos(legs.final_arrived) - nanos(legs.request_left);
    let sane: Vec<&HopTiming> = timings
        .iter()
        .filter(|t| {
            t.trace_id.as_ref() == trace && t.span_id != 0 && i128::from(t.duration_ns) <= span_max
        })
        .take(MAX_HOP_TIMINGS * 4)
        .collect();
    let to_server = |t: &&HopTiming| t.direction == HopDirection::ToServer as i32;
    let to_client = |t: &&HopTiming| t.direction == HopDirection::ToClient as i32;
    // The chain of forwards: toward the exec-server, the client's relay
    // forwards the dispatch's frames and the second relay the first's
    // forwards; toward the client, the second relay forwards the
    // dispatch's and the client's relay the second's.
    let second_back: Vec<u64> = sane
        .iter()
        .filter(|t| t.path_hop == 1 && to_client(t) && t.parent_span_id == dispatch)
        .map(|t| t.span_id)
        .collect();
    let first: Vec<&HopTiming> = sane
        .iter()
        .copied()
        .filter(|t| {
            t.path_hop == 0
                && (t.parent_span_id == dispatch
                    || (to_client(t) && second_back.contains(&t.parent_span_id)))
        })
        .collect();
    let first_out: Vec<u64> = first
        .iter()
        .filter(|t| to_server(t))
        .map(|t| t.span_id)
        .collect();
    let second: Vec<&HopTiming> = sane
        .iter()
        .copied()
        .filter(|t| {
            t.path_hop == 1
                && ((to_server(t) && first_out.contains(&t.parent_span_id))
                    || (to_client(t) && t.parent_span_id == dispatch))
        })
        .collect();
    let (mut spans, first) = place_relay(&first, trace_id, legs, local)?;
    let between = Legs {
        request_left: first.to_server.1,
        final_arrived: first.to_client.0,
    };
    let second = if second.is_empty() {
        None
    } else {
        place_relay(&second, trace_id, between, local)
    };
    let second = second.map(|(placed, hop)| {
        spans.extend(placed);
        hop
    });
    Some(PlacedHops {
        spans,
        first,
        second,
    })
}

/// Places one relay's forwards (`ours`, already checked to be the call's)
/// between `legs`.
fn place_relay(
    ours: &[&HopTiming],
    trace_id: TraceId,
    legs: Legs,
    local: &Status,
) -> Option<(Vec<RemoteSpan>, RelayHop)> {
    let direction = |t: &&&HopTiming, d: HopDirection| t.direction == d as i32;
    // The exec request is the first traced message toward the server; the
    // final event the last toward the client.
    let out = ours
        .iter()
        .filter(|t| direction(t, HopDirection::ToServer))
        .min_by_key(|t| t.arrived_unix_nanos)?;
    let back = ours
        .iter()
        .filter(|t| direction(t, HopDirection::ToClient))
        .max_by_key(|t| t.arrived_unix_nanos)?;
    let t2 = i128::from(out.arrived_unix_nanos);
    let d2 = i128::from(out.duration_ns);
    let t3 = i128::from(back.arrived_unix_nanos);
    let d3 = i128::from(back.duration_ns);
    // Both forwards between the request leaving (t1) and the final event
    // arriving (t4): t2 - o >= t1 and t3 + d3 - o <= t4 (and the request's
    // forward before the final event's, on the relay's clock).
    // The estimate is their midpoint: it fits whenever any offset does.
    let causal = CausalBounds::between(t2, t3 + d3, legs.request_left, legs.final_arrived);
    if causal.is_empty() || t2 + d2 > t3 {
        return None;
    }
    let two_way = causal.two_way()?;
    let relay = out
        .clock
        .as_ref()
        .or(back.clock.as_ref())
        .map(Status::from_wire)
        .unwrap_or_default();
    let chosen = proto::session::peer_clock::choose_with(local, &relay, Some(two_way));
    // An exact source that contradicts what the call saw (a clock stepped
    // mid-call) is not believed: the call's own estimate is.
    let chosen = match chosen {
        Some(c) if causal.contains(i128::from(c.offset_nanos)) => c,
        _ => two_way,
    };
    let offset = i128::from(chosen.offset_nanos);
    let place_one = |t: &HopTiming| -> Option<RemoteSpan> {
        let start = at(i128::from(t.arrived_unix_nanos) - offset)?;
        let end = at(i128::from(t.arrived_unix_nanos) + i128::from(t.duration_ns) - offset)?;
        let direction = if t.direction == HopDirection::ToServer as i32 {
            "to_server"
        } else {
            "to_client"
        };
        let mut attributes = vec![
            KeyValue::new("rex.direction", direction),
            KeyValue::new("rex.frame.bytes", i64::from(t.frame_bytes)),
        ];
        push_placed_by(&mut attributes, &chosen, None);
        let host: String = t.host.chars().take(64).collect();
        if !host.is_empty() {
            attributes.push(KeyValue::new(crate::host::HOST_NAME, host));
        }
        Some(RemoteSpan {
            service: RELAY,
            trace_id,
            span_id: SpanId::from_bytes(t.span_id.to_be_bytes()),
            parent: SpanId::from_bytes(t.parent_span_id.to_be_bytes()),
            name: spans::RELAY_FORWARD,
            start,
            end,
            error: false,
            attributes,
        })
    };
    let out_span = place_one(out)?;
    let back_span = place_one(back)?;
    let to_server = (out_span.start, out_span.end);
    let to_client = (back_span.start, back_span.end);
    let mut placed: Vec<RemoteSpan> = ours
        .iter()
        .filter(|t| t.span_id != out.span_id && t.span_id != back.span_id)
        .filter_map(|t| place_one(t))
        .collect();
    placed.push(out_span);
    placed.push(back_span);
    placed.dedup_by_key(|s| s.span_id);
    Some((
        placed,
        RelayHop {
            to_server,
            to_client,
            offset: chosen,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::session::peer_clock::Source;
    use std::time::Duration;

    const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
    const DISPATCH: u64 = 0x00f0_67aa_0ba9_02b7;

    fn t(ns: i128) -> SystemTime {
        at(ns).unwrap()
    }

    fn timing(id: u64, dir: HopDirection, arrived: u64, dur: u64) -> HopTiming {
        HopTiming {
            trace_id: TRACE.to_be_bytes().to_vec().into(),
            parent_span_id: DISPATCH,
            span_id: id,
            direction: dir as i32,
            arrived_unix_nanos: arrived,
            duration_ns: dur,
            frame_bytes: 100,
            host: "relay-host".into(),
            clock: None,
            path_hop: 0,
        }
    }

    /// Client clock: the request leaves at 1000, the final event arrives
    /// at 2000.
    fn legs() -> Legs {
        Legs {
            request_left: t(1000),
            final_arrived: t(2000),
        }
    }

    fn place_with(timings: &[HopTiming]) -> Option<PlacedHops> {
        place(
            timings,
            TraceId::from_bytes(TRACE.to_be_bytes()),
            SpanId::from_bytes(DISPATCH.to_be_bytes()),
            legs(),
            &Status::default(),
        )
    }

    #[test]
    fn forwards_land_between_the_request_and_the_answer_on_our_clock() {
        // The relay runs 1,000,000 ns ahead and forwards out at 1100..1120
        // and back at 1880..1890 (our clock).
        let ahead = 1_000_000;
        let timings = [
            timing(1, HopDirection::ToServer, 1100 + ahead, 20),
            timing(2, HopDirection::ToClient, 1500 + ahead, 5),
            timing(3, HopDirection::ToClient, 1880 + ahead, 10),
        ];
        let placed = place_with(&timings).unwrap();
        // ((1100 - 1000) + (1890 - 2000)) / 2 = -5 besides the skew.
        assert_eq!(placed.first.offset.offset_nanos, 1_000_000 - 5);
        assert_eq!(placed.first.offset.source, Source::TwoWay);
        // Feasible offsets run from 1890 - 2000 to 1100 - 1000 besides
        // the skew: half that spread is the bound.
        assert_eq!(placed.first.offset.bound, Duration::from_nanos(105));
        assert_eq!(placed.first.to_server, (t(1105), t(1125)));
        assert_eq!(placed.first.to_client, (t(1885), t(1895)));
        assert_eq!(placed.spans.len(), 3);
        for s in &placed.spans {
            assert_eq!(s.service, RELAY);
            assert_eq!(s.name, spans::RELAY_FORWARD);
            assert_eq!(s.parent, SpanId::from_bytes(DISPATCH.to_be_bytes()));
            assert!(s.start >= legs().request_left && s.end <= legs().final_arrived);
        }
    }

    #[test]
    fn the_estimate_is_the_middle_of_what_fits_and_misfits_are_left_out() {
        // A path slow one way.
        let placed = place_with(&[
            timing(1, HopDirection::ToServer, 1010, 5),
            timing(2, HopDirection::ToClient, 1400, 5),
        ])
        .unwrap();
        // ((10) + (1405 - 2000)) / 2 = -292, between -595 and 10.
        assert_eq!(placed.first.offset.offset_nanos, -292);
        assert!(placed.first.to_server.0 >= legs().request_left);
        assert!(placed.first.to_client.1 <= legs().final_arrived);
        // Forwards that cannot both fit, or that overlap on the relay's
        // clock: nothing is placed.
        assert!(
            place_with(&[
                timing(1, HopDirection::ToServer, 1100, 5),
                timing(2, HopDirection::ToClient, 3100, 5),
            ])
            .is_none()
        );
        assert!(
            place_with(&[
                timing(1, HopDirection::ToServer, 1100, 500),
                timing(2, HopDirection::ToClient, 1300, 5),
            ])
            .is_none()
        );
    }

    #[test]
    fn other_calls_timings_and_half_sets_are_not_placed() {
        let mut other = timing(1, HopDirection::ToServer, 1100, 5);
        other.parent_span_id = 7;
        let back = timing(2, HopDirection::ToClient, 1850, 5);
        assert!(place_with(&[other, back.clone()]).is_none());
        assert!(place_with(std::slice::from_ref(&back)).is_none());
        let mut foreign = timing(1, HopDirection::ToServer, 1100, 5);
        foreign.trace_id = vec![1u8; 16].into();
        assert!(place_with(&[foreign, back]).is_none());
    }

    #[test]
    fn a_relay_on_our_kernel_is_placed_on_its_raw_times() {
        // A path slow one way (10 out, 595 back): the call's estimate
        // would split it evenly; the relay says it runs on our kernel.
        let boot = Some([4; 16]);
        let ours = Status {
            boot,
            max_error: None,
        };
        let told = Some(ours.to_wire());
        let mut out = timing(1, HopDirection::ToServer, 1010, 5);
        let mut back = timing(2, HopDirection::ToClient, 1400, 5);
        out.clock = told.clone();
        back.clock = told;
        let placed = place(
            &[out.clone(), back.clone()],
            TraceId::from_bytes(TRACE.to_be_bytes()),
            SpanId::from_bytes(DISPATCH.to_be_bytes()),
            legs(),
            &ours,
        )
        .unwrap();
        assert_eq!(placed.first.offset.source, Source::SameHost);
        assert_eq!(placed.first.offset.offset_nanos, 0);
        assert_eq!(placed.first.to_server, (t(1010), t(1015)));
        assert_eq!(placed.first.to_client, (t(1400), t(1405)));
        let attrs = &placed.spans[0].attributes;
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_SOURCE, "same-host")));
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_BOUND, 0i64)));
        // Told the same boot id but with times no shared clock could give
        // (the forward before the request left): the call's own estimate.
        out.arrived_unix_nanos = 900;
        let placed = place(
            &[out, back],
            TraceId::from_bytes(TRACE.to_be_bytes()),
            SpanId::from_bytes(DISPATCH.to_be_bytes()),
            legs(),
            &ours,
        )
        .unwrap();
        assert_eq!(placed.first.offset.source, Source::TwoWay);
    }

    #[test]
    fn a_second_relay_of_a_fleet_is_placed_between_the_first_relays_forwards() {
        // The client's relay runs 1_000 ahead of us and forwards out at
        // 1100..1110 and back at 1880..1890 (our clock); the second relay
        // runs 5_000 ahead and forwards at 1200..1205 and 1700..1710.
        let (a, b) = (1_000u64, 5_000u64);
        let mut b_out = timing(2, HopDirection::ToServer, 1200 + b, 5);
        let mut b_back = timing(3, HopDirection::ToClient, 1700 + b, 10);
        let mut a_back = timing(4, HopDirection::ToClient, 1880 + a, 10);
        b_out.path_hop = 1;
        b_back.path_hop = 1;
        b_out.parent_span_id = 1; // the first relay's forward of the request
        a_back.parent_span_id = 3; // the second relay's forward of the final event
        let a_out = timing(1, HopDirection::ToServer, 1100 + a, 10);
        let placed = place_with(&[a_out.clone(), b_out.clone(), b_back.clone(), a_back]).unwrap();
        // ((1100 - 1000) + (1890 - 2000)) / 2 = -5 besides its 1_000.
        assert_eq!(placed.first.offset.offset_nanos, 1_000 - 5);
        assert_eq!(placed.first.to_server, (t(1105), t(1115)));
        assert_eq!(placed.first.to_client, (t(1885), t(1895)));
        let inner = placed.second.expect("the second relay placed");
        // Between 1115 and 1885: ((1200 - 1115) + (1710 - 1885)) / 2 = -45
        // besides its 5_000.
        assert_eq!(inner.offset.offset_nanos, 5_000 - 45);
        assert_eq!(inner.to_server, (t(1245), t(1250)));
        assert_eq!(inner.to_client, (t(1745), t(1755)));
        assert!(inner.to_server.0 >= placed.first.to_server.1);
        assert!(inner.to_client.1 <= placed.first.to_client.0);
        assert_eq!(placed.nearest_server(), &inner);
        assert_eq!(placed.spans.len(), 4);
        let parent = |id: u64| {
            placed
                .spans
                .iter()
                .find(|s| s.span_id == SpanId::from_bytes(id.to_be_bytes()))
                .map(|s| s.parent)
                .unwrap()
        };
        assert_eq!(parent(2), SpanId::from_bytes(1u64.to_be_bytes()));
        assert_eq!(parent(4), SpanId::from_bytes(3u64.to_be_bytes()));

        // A second relay's forwards that name no forward of the first are
        // not the call's: the first relay alone is placed.
        let mut stray = b_out;
        stray.parent_span_id = 99;
        let alone = place_with(&[
            a_out,
            stray,
            b_back,
            timing(4, HopDirection::ToClient, 1880 + a, 10),
        ])
        .unwrap();
        assert_eq!(alone.second, None);
        assert_eq!(alone.spans.len(), 2);
    }
}
