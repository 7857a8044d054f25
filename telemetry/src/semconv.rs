//! The OpenTelemetry semantic-convention attributes the project's spans and
//! resources carry, pinned to one version of the conventions, 1.27.0
//! (`SCHEMA_URL` names it on every resource). These are the
//! names a collector's user filters on (`rpc.system=grpc`,
//! `rpc.method=Open`, `error.type`, `service.version`); the project's own
//! attributes are all under `rex.*`.
//!
//! Version 1.27.0 is the one pinned because it is the last in which the
//! RPC attributes have these names without deprecation notes for them
//! ready in every backend: later versions rename `rpc.system` to
//! `rpc.system.name` and fold `rpc.service` into `rpc.method`, which
//! `opentelemetry-semantic-conventions` 0.33 (matching the pinned
//! OpenTelemetry crates) follows. `docs/spans.md` lists where each is set.

use opentelemetry::KeyValue;

/// The schema URL of the semantic-conventions version these names are
/// pinned to, on every resource.
#[cfg(feature = "export")]
pub(crate) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";

/// The remote-procedure-call system: always `grpc` here.
pub const RPC_SYSTEM: &str = "rpc.system";
/// The value of [`RPC_SYSTEM`] for gRPC.
const RPC_SYSTEM_GRPC: &str = "grpc";
/// The full name of the gRPC service (`rex.tunnel.v1.Tunnel`).
pub const RPC_SERVICE: &str = "rpc.service";
/// The gRPC method's name (`Open`).
pub const RPC_METHOD: &str = "rpc.method";
/// The server's address: the host a client dialled, or the address a
/// server was reached at.
pub const SERVER_ADDRESS: &str = "server.address";
/// The server's port.
pub const SERVER_PORT: &str = "server.port";
/// The class of a failure (a gRPC status code's name, or the kind of
/// end), on spans that failed only.
pub const ERROR_TYPE: &str = "error.type";
/// The service's version, on the resource.
pub const SERVICE_VERSION: &str = "service.version";
/// The host a span was made on, on the resource (and on spans placed
/// from another host's summary).
pub const HOST_NAME: &str = crate::host::HOST_NAME;

/// The session tunnel's gRPC service: clients call `Open` on it.
pub const TUNNEL_SERVICE: &str = "rex.tunnel.v1.Tunnel";
/// The exec-server's side of the relay: `Register` and `Accept`.
pub const REGISTRY_SERVICE: &str = "rex.tunnel.v1.Registry";
/// `Tunnel.Open`.
pub const METHOD_OPEN: &str = "Open";
/// `Registry.Register`.
pub const METHOD_REGISTER: &str = "Register";

/// The attributes of a gRPC call to `service`'s `method`.
pub fn rpc(service: &'static str, method: &'static str) -> [KeyValue; 3] {
    [
        KeyValue::new(RPC_SYSTEM, RPC_SYSTEM_GRPC),
        KeyValue::new(RPC_SERVICE, service),
        KeyValue::new(RPC_METHOD, method),
    ]
}

/// The host and port a URL (`http://host:port/...`, `https://[::1]:443`)
/// names, the port defaulting to the scheme's; `None` if it names none.
fn host_port(url: &str) -> Option<(&str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if after.is_empty() => (host, default),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// `server.address` and `server.port` for a URL (none if it names no
/// host).
pub fn server(url: &str) -> Vec<KeyValue> {
    match host_port(url) {
        Some((host, port)) => vec![
            KeyValue::new(SERVER_ADDRESS, host.to_owned()),
            KeyValue::new(SERVER_PORT, i64::from(port)),
        ],
        None => Vec::new(),
    }
}

/// `error.type` for a gRPC status code: its name as the gRPC
/// specification writes it (`UNAVAILABLE`).
pub fn grpc_error_type(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sets `attributes` on a `tracing` span's OpenTelemetry span (nothing
/// when spans are not exported); they never show in its log lines.
#[cfg(feature = "export")]
pub fn set_on(span: &tracing::Span, attributes: impl IntoIterator<Item = KeyValue>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    for kv in attributes {
        span.set_attribute(kv.key, kv.value);
    }
}

/// Marks a `tracing` span failed: `error.type` and error status.
#[cfg(feature = "export")]
pub fn fail(span: &tracing::Span, error_type: &'static str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    set_on(span, [KeyValue::new(ERROR_TYPE, error_type)]);
    span.set_status(opentelemetry::trace::Status::error(error_type));
}

/// `server.address` and `server.port` of a socket address.
pub fn server_at(addr: std::net::SocketAddr) -> [KeyValue; 2] {
    [
        KeyValue::new(SERVER_ADDRESS, addr.ip().to_string()),
        KeyValue::new(SERVER_PORT, i64::from(addr.port())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:7000"),
            Some(("127.0.0.1", 7000))
        );
        assert_eq!(
            host_port("https://relay.example/x"),
            Some(("relay.example", 443))
        );
        assert_eq!(host_port("http://relay"), Some(("relay", 80)));
        assert_eq!(host_port("https://[::1]:8443/"), Some(("::1", 8443)));
        assert_eq!(host_port("https://[::1]"), Some(("::1", 443)));
        assert_eq!(host_port("relay:7000"), None);
        assert_eq!(host_port("http://:7000"), None);
        assert_eq!(host_port("http://h:port"), None);
    }
}
