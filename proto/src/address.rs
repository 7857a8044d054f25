//! Relay addresses as people type them: `http://HOST:PORT`, `https://…`,
//! `HOST:PORT`, `HOST` (port 7600), `[::1]:7600`. A bare address means
//! plain HTTP/2 on loopback and private addresses and TLS elsewhere;
//! `https://` always means TLS (never downgraded) and `http://` plain.
//! (The session itself is Noise-encrypted end to end either way; TLS
//! hides the link's metadata.)

use std::fmt;
use std::net::IpAddr;

/// The relay's port when an address names none.
pub(crate) const DEFAULT_PORT: u16 = 7600;

/// A relay address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddress {
    typed: String,
    url: String,
    tls: bool,
}

/// An address that cannot be a relay's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay address {typed:?}: {problem}")]
pub struct AddressError {
    typed: String,
    problem: Problem,
}

/// What is wrong with an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Nothing was given.
    #[error("empty")]
    Empty,
    /// A scheme other than http or https.
    #[error("unsupported scheme {0:?} (use http://, https:// or a bare HOST[:PORT])")]
    Scheme(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// The host is not a name or an IP address.
    #[error("bad host {0:?}")]
    Host(String),
    /// An IPv6 address with a port must be bracketed.
    #[error("an IPv6 address with a port is written [ADDR]:PORT")]
    UnbracketedV6,
}

impl RelayAddress {
    /// Parses an address in any of the accepted forms.
    pub fn parse(typed: &str) -> Result<Self, AddressError> {
        let fail = |problem| AddressError {
            typed: typed.to_owned(),
            problem,
        };
        let text = typed.trim();
        if text.is_empty() {
            return Err(fail(Problem::Empty));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let (host, port) = split_host_port(authority).map_err(fail)?;
            return match scheme.to_ascii_lowercase().as_str() {
                "http" => Ok(Self {
                    typed: typed.to_owned(),
                    url: format!("http://{}:{}{path}", host.url_form(), port.unwrap_or(80)),
                    tls: false,
                }),
                "https" => Ok(Self {
                    typed: typed.to_owned(),
                    url: format!("https://{}:{}{path}", host.url_form(), port.unwrap_or(443)),
                    tls: true,
                }),
                other => Err(fail(Problem::Scheme(other.to_owned()))),
            };
        }
        let (host, port) = split_host_port(text).map_err(fail)?;
        let tls = !host.is_local();
        Ok(Self {
            typed: typed.to_owned(),
            url: format!(
                "{}://{}:{}",
                if tls { "https" } else { "http" },
                host.url_form(),
                port.unwrap_or(DEFAULT_PORT)
            ),
            tls,
        })
    }

    /// The URL dialled: `https://…` for TLS, `http://…` for plain HTTP/2.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address as it was typed.
    pub fn typed(&self) -> &str {
        &self.typed
    }

    /// Whether the link uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::str::FromStr for RelayAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A host: a name or an IP address.
#[derive(Debug)]
enum Host<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

impl Host<'_> {
    fn url_form(&self) -> String {
        match self {
            Host::Name(n) => (*n).to_owned(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        }
    }

    /// Loopback, private or link-local: where plain HTTP/2 is the default.
    fn is_local(&self) -> bool {
        match self {
            Host::Name(n) => {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                n == "localhost" || n.ends_with(".localhost")
            }
            Host::Ip(IpAddr::V4(a)) => a.is_loopback() || a.is_private() || a.is_link_local(),
            Host::Ip(IpAddr::V6(a)) => {
                let first = a.segments()[0];
                a.is_loopback()
                    || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
                    || a.to_ipv4_mapped().is_some_and(|v4| {
                        v4.is_loopback() || v4.is_private() || v4.is_link_local()
                    })
            }
        }
    }
}

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address.
fn split_host_port(text: &str) -> Result<(Host<'_>, Option<u16>), Problem> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Problem::Port(p.to_owned()))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| Problem::Host(text.to_owned()))?;
        let ip: std::net::Ipv6Addr = inside
            .parse()
            .map_err(|_| Problem::Host(inside.to_owned()))?;
        let port = match after {
            "" => None,
            p => Some(port(
                p.strip_prefix(':')
                    .ok_or_else(|| Problem::Host(text.to_owned()))?,
            )?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    if text.matches(':').count() > 1 {
        return match text.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok((Host::Ip(IpAddr::V6(ip)), None)),
            Err(_) => Err(Problem::UnbracketedV6),
        };
    }
    let (host, port) = match text.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (text, None),
    };
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok((Host::Ip(IpAddr::V4(ip)), port));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with(['-', '.']);
    if !valid {
        return Err(Problem::Host(host.to_owned()));
    }
    Ok((Host::Name(host), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(typed: &str) -> (String, bool) {
        let a = RelayAddress::parse(typed).unwrap();
        assert_eq!(a.uses_tls(), a.url().starts_with("https://"));
        (a.url().to_owned(), a.uses_tls())
    }

    #[test]
    fn every_form_is_accepted() {
        let plain = |url: &str| (url.to_owned(), false);
        let tls = |url: &str| (url.to_owned(), true);
        // Explicit URLs: http plain, https TLS, as written.
        assert_eq!(
            parsed("http://127.0.0.1:7600"),
            plain("http://127.0.0.1:7600")
        );
        assert_eq!(
            parsed("http://relay.example:80"),
            plain("http://relay.example:80")
        );
        assert_eq!(
            parsed("http://relay.example"),
            plain("http://relay.example:80")
        );
        assert_eq!(
            parsed("https://relay.example:7600"),
            tls("https://relay.example:7600")
        );
        assert_eq!(
            parsed("https://relay.example"),
            tls("https://relay.example:443")
        );
        assert_eq!(
            parsed("HTTPS://[2001:db8::1]:9"),
            tls("https://[2001:db8::1]:9")
        );
        // TLS on loopback when asked for.
        assert_eq!(
            parsed("https://127.0.0.1:7600"),
            tls("https://127.0.0.1:7600")
        );
        // host:port and host, loopback and private: plain.
        assert_eq!(parsed("127.0.0.1:7601"), plain("http://127.0.0.1:7601"));
        assert_eq!(parsed("localhost"), plain("http://localhost:7600"));
        assert_eq!(parsed("10.1.2.3"), plain("http://10.1.2.3:7600"));
        assert_eq!(parsed("192.168.0.9:80"), plain("http://192.168.0.9:80"));
        assert_eq!(parsed("172.16.0.1"), plain("http://172.16.0.1:7600"));
        assert_eq!(parsed("169.254.1.1"), plain("http://169.254.1.1:7600"));
        // IPv6, bracketed with or without a port, or bare without one.
        assert_eq!(parsed("[::1]:7600"), plain("http://[::1]:7600"));
        assert_eq!(parsed("[::1]"), plain("http://[::1]:7600"));
        assert_eq!(parsed("::1"), plain("http://[::1]:7600"));
        assert_eq!(parsed("[fd00::5]:1"), plain("http://[fd00::5]:1"));
        assert_eq!(parsed("[fe80::1]"), plain("http://[fe80::1]:7600"));
        // Public addresses and other names: TLS.
        assert_eq!(parsed("relay.example"), tls("https://relay.example:7600"));
        assert_eq!(
            parsed("relay.example:7601"),
            tls("https://relay.example:7601")
        );
        assert_eq!(parsed("8.8.8.8"), tls("https://8.8.8.8:7600"));
        assert_eq!(
            parsed("[2001:db8::1]:7600"),
            tls("https://[2001:db8::1]:7600")
        );
    }

    #[test]
    fn nonsense_is_refused() {
        let problem = |t: &str| RelayAddress::parse(t).unwrap_err().problem;
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem("ftp://x"), Problem::Scheme("ftp".into()));
        assert_eq!(problem("host:0"), Problem::Port("0".into()));
        assert_eq!(problem("host:99999"), Problem::Port("99999".into()));
        assert_eq!(problem("host:"), Problem::Port(String::new()));
        assert_eq!(problem("::1:7600:x"), Problem::UnbracketedV6);
        assert_eq!(problem("a b"), Problem::Host("a b".into()));
        assert_eq!(problem("[::1"), Problem::Host("[::1".into()));
        assert_eq!(problem("[zz]:1"), Problem::Host("zz".into()));
        assert_eq!(problem("http://:7600"), Problem::Host(String::new()));
    }
}
