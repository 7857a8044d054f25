//! What a session is held for, as a request names it: the targets (relays
//! in order, or a direct address), the exec-server's key, the client's key
//! and the CA file, checked; with the client's key file and the warm policy
//! the request asks for.

use std::path::PathBuf;

use bytes::Bytes;
use proto::keys::PublicKey;
use proto::pb::agent as wire;
use rex_client::{Target, WarmPolicy};

/// What a session is held for (the pool's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    /// The targets, in the order they are tried.
    pub(crate) targets: Vec<Target>,
    /// The exec-server's key.
    pub(crate) server: PublicKey,
    /// The client's public key.
    pub(crate) client: PublicKey,
    /// The CA certificates `https://` relays are checked against (`None`:
    /// the system's).
    pub(crate) ca_file: Option<PathBuf>,
}

/// A request's route, checked: the route, the client's key file and the
/// warm policy asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The route.
    pub(crate) route: Route,
    /// The client's key file (absolute), which the agent reads itself.
    pub(crate) key_file: PathBuf,
    /// The server's warm policy (`None`: the agent's own).
    pub(crate) warm: Option<WarmPolicy>,
}

/// What the agent needs of a request's route, or why it cannot be used.
pub(crate) fn route_of(route: &wire::Route) -> Result<Asked, String> {
    let key = |bytes: &Bytes, what: &str| -> Result<PublicKey, String> {
        let array: [u8; 32] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| format!("the {what} key is not 32 bytes"))?;
        Ok(PublicKey::from_bytes(array))
    };
    let targets: Vec<Target> = if route.direct.is_empty() {
        route.relays.iter().cloned().map(Target::Relay).collect()
    } else {
        vec![Target::Direct(route.direct.clone())]
    };
    if targets.is_empty() {
        return Err("no relay or direct address".into());
    }
    let key_file = PathBuf::from(&route.key_file);
    if !key_file.is_absolute() {
        return Err("the key file's path must be absolute".into());
    }
    let ca_file = (!route.ca_file.is_empty()).then(|| PathBuf::from(&route.ca_file));
    if ca_file.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err("the CA file's path must be absolute".into());
    }
    let warm = route.warm.as_ref().map(|w| {
        if w.off {
            WarmPolicy::off()
        } else {
            WarmPolicy::every(std::time::Duration::from_millis(w.interval_ms))
        }
    });
    Ok(Asked {
        route: Route {
            targets,
            server: key(&route.server_key, "exec-server's")?,
            client: key(&route.client_key, "client's")?,
            ca_file,
        },
        key_file,
        warm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_names_its_route_or_is_refused() {
        let key = proto::keys::StaticKeypair::generate().unwrap().public();
        let mut r = wire::Route {
            relays: vec!["http://a:1".into(), "http://b:2".into()],
            server_key: Bytes::copy_from_slice(key.as_bytes()),
            client_key: Bytes::copy_from_slice(key.as_bytes()),
            key_file: "/k".into(),
            ..Default::default()
        };
        let asked = route_of(&r).unwrap();
        assert_eq!(asked.route.targets.len(), 2);
        assert_eq!(asked.route.server, key);
        assert_eq!(asked.key_file, PathBuf::from("/k"));
        assert_eq!(asked.warm, None, "the agent's own policy");
        r.warm = Some(wire::WarmOption {
            off: false,
            interval_ms: 1500,
        });
        assert_eq!(
            route_of(&r).unwrap().warm,
            Some(WarmPolicy::every(Duration::from_millis(1500)))
        );
        r.warm = Some(wire::WarmOption {
            off: true,
            interval_ms: 0,
        });
        assert_eq!(route_of(&r).unwrap().warm, Some(WarmPolicy::off()));
        r.direct = "http://d:3".into();
        assert_eq!(
            route_of(&r).unwrap().route.targets,
            vec![Target::Direct("http://d:3".into())]
        );
        r.key_file = "relative".into();
        assert!(route_of(&r).unwrap_err().contains("absolute"));
        r.key_file = "/k".into();
        r.server_key = Bytes::from_static(b"short");
        assert!(route_of(&r).unwrap_err().contains("32 bytes"));
    }
}
