//! The HTTP query API: the part of Jaeger v2's api_v3 the tests use, with
//! Jaeger's parameters, status codes and bodies.
//!
//! - `GET /api/v3/services` → `{"services":[...]}`, sorted.
//! - `GET /api/v3/traces?query.start_time_min=T1&query.start_time_max=T2
//!   [&query.service_name=S][&query.operation_name=O][&query.num_traces=N]
//!   [&query.duration_min=D][&query.duration_max=D][&query.raw_traces=B]`
//!   (or the camelCase names newer Jaeger prefers: `query.serviceName`,
//!   `query.startTimeMin`, `query.searchDepth`, ...): every span of each
//!   matching trace as `{"result":{"resourceSpans":[...]}}`; 400 when a
//!   time bound is missing or a parameter unparsable; 404 when nothing
//!   matches.
//! - `GET /api/v3/traces/{trace_id}[?start_time=T&end_time=T&raw_traces=B]`:
//!   the trace, same body; 400 for a malformed id; 404 for an unknown one.
//!
//! Errors are written as Jaeger writes them (Go's `http.Error`): a
//! `text/plain` body holding `{"error":{"httpCode":N,"message":"..."}}`.

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::{Value, json};

use super::otlp_json::traces_data;
use super::params::{Malformed, Params, parse_bool, parse_duration, parse_trace_id};
use super::store::{SpanStore, TraceQuery, lock};
use crate::rfc3339;

/// How many traces a search returns when it does not say (Jaeger's
/// default).
pub const DEFAULT_SEARCH_DEPTH: usize = 100;

// Each parameter's names: the canonical one first, then deprecated aliases.
const SERVICE: &[&str] = &["query.serviceName", "query.service_name"];
const OPERATION: &[&str] = &["query.operationName", "query.operation_name"];
const TIME_MIN: &[&str] = &["query.startTimeMin", "query.start_time_min"];
const TIME_MAX: &[&str] = &["query.startTimeMax", "query.start_time_max"];
const SEARCH_DEPTH: &[&str] = &[
    "query.searchDepth",
    "query.num_traces",
    "query.search_depth",
];
const DURATION_MIN: &[&str] = &["query.durationMin", "query.duration_min"];
const DURATION_MAX: &[&str] = &["query.durationMax", "query.duration_max"];
const QUERY_RAW: &[&str] = &["query.rawTraces", "query.raw_traces"];
const START_TIME: &[&str] = &["startTime", "start_time"];
const END_TIME: &[&str] = &["endTime", "end_time"];
const RAW: &[&str] = &["rawTraces", "raw_traces"];

/// The api_v3 routes over `store`.
pub(crate) fn router(store: Arc<Mutex<SpanStore>>) -> Router {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{trace_id}", get(get_trace))
        .with_state(store)
}

async fn services(State(store): State<Arc<Mutex<SpanStore>>>) -> Response {
    let services = lock(&store).services();
    ok(&json!({ "services": services }))
}

async fn find_traces(
    State(store): State<Arc<Mutex<SpanStore>>>,
    RawQuery(query): RawQuery,
) -> Response {
    match find_query(&Params::parse(query.as_deref())) {
        Ok(q) => {
            let found = lock(&store).find(&q);
            traces(&found)
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn get_trace(
    State(store): State<Arc<Mutex<SpanStore>>>,
    Path(trace_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = match parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, Malformed::new("trace_id", e)),
    };
    // The time window only narrows where Jaeger looks; a stored trace is
    // found without it. The values must still parse.
    let params = Params::parse(query.as_deref());
    let checked = time_param(&params, START_TIME)
        .and(time_param(&params, END_TIME))
        .and(bool_param(&params, RAW));
    if let Err(e) = checked {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let found = lock(&store).trace(&id).unwrap_or_default();
    traces(&found)
}

/// Why a search is refused with Jaeger's 400.
#[derive(Debug, thiserror::Error)]
enum BadSearch {
    /// A bound of the time window is missing.
    #[error("{min} and {max} are required", min = TIME_MIN[1], max = TIME_MAX[1])]
    NoWindow,
    /// The window's start is not before its end.
    #[error("{min} must be before {max}", min = TIME_MIN[1], max = TIME_MAX[1])]
    EmptyWindow,
    /// A parameter is present but unparsable.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// The search `params` ask for.
fn find_query(params: &Params) -> Result<TraceQuery, BadSearch> {
    let (Some(_), Some(_)) = (params.get(TIME_MIN), params.get(TIME_MAX)) else {
        return Err(BadSearch::NoWindow);
    };
    let start_min = time_param(params, TIME_MIN)?.unwrap_or_default();
    let start_max = time_param(params, TIME_MAX)?.unwrap_or_default();
    if start_min >= start_max {
        return Err(BadSearch::EmptyWindow);
    }
    let search_depth = match params.get(SEARCH_DEPTH) {
        None => DEFAULT_SEARCH_DEPTH,
        Some((name, value)) => match value.parse::<i64>() {
            Ok(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Ok(_) => Err(Malformed::new(name, "must be greater than 0"))?,
            Err(_) => Err(Malformed::new(
                name,
                format!("strconv.Atoi: parsing {value:?}: invalid syntax"),
            ))?,
        },
    };
    let duration = |names| -> Result<Option<i128>, Malformed> {
        match params.get(names) {
            None => Ok(None),
            Some((name, value)) => parse_duration(value)
                .map(|d| (d != 0).then_some(d))
                .map_err(|e| Malformed::new(name, e)),
        }
    };
    let text = |names| params.get(names).map(|(_, v)| v.to_owned());
    let query = TraceQuery {
        service: text(SERVICE),
        operation: text(OPERATION),
        start_min,
        start_max,
        duration_min: duration(DURATION_MIN)?,
        duration_max: duration(DURATION_MAX)?,
        search_depth,
    };
    bool_param(params, QUERY_RAW)?;
    Ok(query)
}

/// The RFC 3339 time under `names`, in Unix nanoseconds, if present.
fn time_param(params: &Params, names: &[&str]) -> Result<Option<i128>, Malformed> {
    params
        .get(names)
        .map(|(name, value)| rfc3339::parse(value).map_err(|e| Malformed::new(name, e)))
        .transpose()
}

/// The boolean under `names` (`raw_traces`: accepted, then ignored, as
/// the sink stores spans as they came), if present.
fn bool_param(params: &Params, names: &[&str]) -> Result<Option<bool>, Malformed> {
    params
        .get(names)
        .map(|(name, value)| parse_bool(value).map_err(|e| Malformed::new(name, e)))
        .transpose()
}

/// The spans found, or Jaeger's 404 if there are none.
fn traces(resource_spans: &[ResourceSpans]) -> Response {
    if resource_spans.is_empty() {
        return error(StatusCode::NOT_FOUND, "No traces found");
    }
    ok(&json!({ "result": traces_data(resource_spans) }))
}

/// 200 with `body` as JSON.
pub(crate) fn ok(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An error as Jaeger's HTTP gateway writes it.
fn error(status: StatusCode, message: impl Display) -> Response {
    let body = json!({
        "error": { "httpCode": status.as_u16(), "message": message.to_string() }
    });
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}
