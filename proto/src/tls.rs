//! TLS on relay links (rustls, with ring as the only crypto provider).
//!
//! A link uses TLS exactly when its URL is `https://`; it is never
//! downgraded to plain HTTP/2 (a URL of that scheme with no TLS fails).
//! TLS protects the link's metadata (server ids, hop headers, frame sizes
//! and timing); the session inside is Noise end to end either way.
//!
//! - [`TlsSettings`]: how a dialling side checks the far end's certificate
//!   (the system's roots, or the CA certificates of a PEM file).
//! - `ServerTls` (feature `server`): a listener's certificate chain and
//!   key, read from PEM files.
//! - [`failure_in`]: what kind of TLS failure, if any, lies in an error's
//!   chain (by type, never by message).

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, TrustAnchor};

/// The ALPN protocol both ends agree on: HTTP/2.
#[cfg(feature = "server")]
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Certificates and keys that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate {
        /// The file (or what the bytes are).
        what: String,
    },
    /// A PEM section could not be decoded.
    #[error("{what}: not valid PEM: {reason}")]
    Pem {
        /// The file (or what the bytes are).
        what: String,
        /// The decoder's words.
        reason: String,
    },
    /// A certificate cannot be a trust root.
    #[error("{what}: a certificate in it cannot be used as a CA: {source}")]
    BadCa {
        /// The file (or what the bytes are).
        what: String,
        /// Why.
        source: rustls::Error,
    },
    /// A file holds no private key.
    #[error("{what}: no PEM private key in it")]
    NoKey {
        /// The file (or what the bytes are).
        what: String,
    },
    /// The certificate and key cannot serve TLS (e.g. they do not match).
    #[error("the certificate and key cannot serve TLS: {0}")]
    Config(#[source] rustls::Error),
    /// `https://` with the system's roots, and the system has none.
    #[error(
        "no CA certificates found on this system (SSL_CERT_FILE, SSL_CERT_DIR or the usual \
         places): give a CA file"
    )]
    NoSystemRoots,
    /// A certificate chain does not verify for a name.
    #[error("the certificate is not valid for {name}: {source}")]
    NotValid {
        /// The name checked.
        name: String,
        /// Why.
        source: rustls::Error,
    },
    /// The TLS settings could not be applied to a link.
    #[cfg(feature = "channel")]
    #[error("TLS settings: {0}")]
    Link(#[source] tonic::transport::Error),
}

/// DER bytes as PEM text with `label` (e.g. `CERTIFICATE`, `PRIVATE
/// KEY`): base64 in lines of 64 characters between the markers.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The private key in PEM text (PKCS#8, PKCS#1 or SEC1); `what` names it
/// in errors.
pub fn private_key(
    pem: &[u8],
    what: &str,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            what: what.to_owned(),
        },
        other => TlsError::Pem {
            what: what.to_owned(),
            reason: other.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of PEM text (at least one).
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// Where a dialling side's trust comes from.
#[derive(Clone)]
enum Roots {
    /// The system's CA certificates, loaded when first needed.
    System,
    /// The CA certificates of a file (or PEM bytes), nothing else.
    Ca {
        what: String,
        anchors: Arc<[TrustAnchor<'static>]>,
    },
}

/// How a link that dials `https://` checks the far end's certificate:
/// against the system's CA certificates (the default) or against the CA
/// certificates of one PEM file only. Plain `http://` links ignore it.
#[derive(Clone)]
pub struct TlsSettings {
    roots: Roots,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TlsSettings {
    /// Trust the system's CA certificates (read once, when a TLS link is
    /// first dialled; `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
    pub fn system() -> Self {
        Self {
            roots: Roots::System,
        }
    }

    /// Trust only the CA certificates in the PEM file at `path`.
    pub fn from_ca_file(path: &Path) -> Result<Self, TlsError> {
        Self::from_ca_pem(&read(path)?, &path.display().to_string())
    }

    /// Trust only the CA certificates in `pem`; `what` names them in
    /// errors.
    pub(crate) fn from_ca_pem(pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for cert in certificates(pem, what)? {
            store.add(cert).map_err(|source| TlsError::BadCa {
                what: what.to_owned(),
                source,
            })?;
        }
        Ok(Self {
            roots: Roots::Ca {
                what: what.to_owned(),
                anchors: store.roots.into(),
            },
        })
    }

    /// Whether these are the system's roots.
    #[cfg(test)]
    pub(crate) fn is_system(&self) -> bool {
        matches!(self.roots, Roots::System)
    }

    /// What is trusted, in a few words (for `config show` and logs).
    pub fn describe(&self) -> String {
        match &self.roots {
            Roots::System => "the system's CA certificates".to_owned(),
            Roots::Ca { what, anchors } => {
                let n = anchors.len();
                format!(
                    "the CA certificate{} in {what}",
                    if n == 1 { "" } else { "s" }
                )
            }
        }
    }

    /// The trust anchors (loading the system's on first use).
    fn anchors(&self) -> Result<Arc<[TrustAnchor<'static>]>, TlsError> {
        match &self.roots {
            Roots::Ca { anchors, .. } => Ok(Arc::clone(anchors)),
            Roots::System => system_anchors().ok_or(TlsError::NoSystemRoots),
        }
    }

    /// Checks, as a client dialling `name` would, that the certificate
    /// chain in `chain_pem` (its own certificate first) is valid now under
    /// these roots.
    pub fn verify(&self, chain_pem: &[u8], name: &str) -> Result<(), TlsError> {
        use rustls::client::danger::ServerCertVerifier as _;
        let not_valid = |source| TlsError::NotValid {
            name: name.to_owned(),
            source,
        };
        let chain = certificates(chain_pem, "the certificate chain")?;
        let roots = rustls::RootCertStore {
            roots: self.anchors()?.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| not_valid(rustls::Error::General(e.to_string())))?;
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|_| not_valid(rustls::Error::UnsupportedNameType))?;
        let (end_entity, intermediates) =
            chain.split_first().ok_or_else(|| TlsError::NoCertificate {
                what: "the certificate chain".into(),
            })?;
        verifier
            .verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(not_valid)
    }

    /// tonic's client TLS settings for these roots, with a handshake
    /// bounded by `timeout`.
    #[cfg(feature = "channel")]
    pub(crate) fn client_config(
        &self,
        timeout: std::time::Duration,
    ) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        Ok(tonic::transport::ClientTlsConfig::new()
            .trust_anchors(self.anchors()?.iter().cloned())
            .timeout(timeout))
    }
}

/// The system's CA certificates, read once per process (`None` if it has
/// none that parse).
fn system_anchors() -> Option<Arc<[TrustAnchor<'static>]>> {
    static SYSTEM: OnceLock<Option<Arc<[TrustAnchor<'static>]>>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            #[cfg(feature = "channel")]
            {
                let found = rustls_native_certs::load_native_certs();
                let mut store = rustls::RootCertStore::empty();
                let (_, _) = store.add_parsable_certificates(found.certs);
                (!store.is_empty()).then(|| store.roots.into())
            }
            #[cfg(not(feature = "channel"))]
            {
                None
            }
        })
        .clone()
}

/// A listener's TLS: its certificate chain and private key.
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

#[cfg(feature = "server")]
impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

#[cfg(feature = "server")]
impl ServerTls {
    /// Reads the certificate chain (PEM, the listener's own certificate
    /// first) and its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(
            &read(cert)?,
            &cert.display().to_string(),
            &read(key)?,
            &key.display().to_string(),
        )
    }

    /// [`ServerTls::from_files`] from PEM bytes; `cert_what` and
    /// `key_what` name them in errors.
    pub(crate) fn from_pem(
        cert_pem: &[u8],
        cert_what: &str,
        key_pem: &[u8],
        key_what: &str,
    ) -> Result<Self, TlsError> {
        let chain = certificates(cert_pem, cert_what)?;
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                    what: key_what.to_owned(),
                },
                other => TlsError::Pem {
                    what: key_what.to_owned(),
                    reason: other.to_string(),
                },
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The acceptor for one connection's handshake.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// A TLS failure, as far as a person must tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The far end's certificate does not chain to a trusted CA.
    UntrustedCertificate,
    /// The certificate is not for the name (or address) dialled.
    WrongName,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// The far end does not speak TLS (e.g. a plain HTTP/2 relay).
    NotTls,
    /// The far end serves only TLS, and was dialled plain (`http://`).
    TlsRequired,
    /// The far end refused the handshake (a TLS alert).
    Refused,
    /// Another TLS failure.
    Other,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::UntrustedCertificate => "its certificate is not signed by a trusted CA",
            TlsFailure::WrongName => "its certificate is not for this host name or address",
            TlsFailure::Expired => "its certificate has expired or is not valid yet",
            TlsFailure::NotTls => "it does not speak TLS (a plain http:// listener?)",
            TlsFailure::TlsRequired => "it serves TLS only: dial it with https://",
            TlsFailure::Refused => "it refused the TLS handshake",
            TlsFailure::Other => "the TLS handshake failed",
        })
    }
}

impl TlsFailure {
    fn of(e: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => Self::UntrustedCertificate,
                C::NotValidForName | C::NotValidForNameContext { .. } => Self::WrongName,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => Self::Expired,
                _ => Self::Other,
            },
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerSentOversizedRecord => Self::NotTls,
            rustls::Error::AlertReceived(_) => Self::Refused,
            _ => Self::Other,
        }
    }
}

/// The TLS failure in `err`'s chain of sources, if any: a rustls error
/// (also where an I/O error carries one), or a TLS listener's refusal of
/// a plain HTTP/2 client (its GOAWAY with `INADEQUATE_SECURITY`).
pub fn failure_in(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(TlsFailure::of(r));
        }
        if let Some(h) = e.downcast_ref::<h2::Error>()
            && h.is_remote()
            && h.reason() == Some(h2::Reason::INADEQUATE_SECURITY)
        {
            return Some(TlsFailure::TlsRequired);
        }
        // An I/O error's `source` skips the error it wraps: look inside.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(found) = failure_in(inner)
        {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        (
            pem("CERTIFICATE", ca.der()),
            pem("CERTIFICATE", leaf.der()),
            pem("PRIVATE KEY", &leaf_key.serialize_der()),
        )
    }

    #[test]
    fn pem_text_round_trips() {
        for len in [0usize, 1, 47, 48, 49, 300] {
            let der: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let text = pem("PRIVATE KEY", &der);
            assert!(text.lines().all(|l| l.len() <= 64));
            if len > 0 {
                let back = private_key(text.as_bytes(), "k").unwrap();
                assert_eq!(back.secret_der(), &der[..]);
            }
        }
    }

    #[test]
    fn a_ca_file_gives_its_roots_and_nothing_else() {
        let (ca, _, _) = ca_and_leaf();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &ca).unwrap();
        let s = TlsSettings::from_ca_file(&path).unwrap();
        assert!(!s.is_system());
        assert_eq!(s.anchors().unwrap().len(), 1);
        assert!(s.describe().contains("ca.pem"), "{}", s.describe());
        // Two CAs in one file: both trusted.
        let (other, _, _) = ca_and_leaf();
        let two = TlsSettings::from_ca_pem(format!("{ca}{other}").as_bytes(), "two").unwrap();
        assert_eq!(two.anchors().unwrap().len(), 2);
        assert!(TlsSettings::default().is_system());
    }

    #[test]
    fn a_chain_verifies_for_its_names_under_its_ca_only() {
        let (ca, leaf, _) = ca_and_leaf();
        let trusted = TlsSettings::from_ca_pem(ca.as_bytes(), "ca").unwrap();
        trusted.verify(leaf.as_bytes(), "localhost").unwrap();
        let err = trusted
            .verify(leaf.as_bytes(), "relay.example")
            .unwrap_err();
        assert!(matches!(err, TlsError::NotValid { .. }), "{err}");
        let (other_ca, _, _) = ca_and_leaf();
        let other = TlsSettings::from_ca_pem(other_ca.as_bytes(), "other").unwrap();
        // Another CA (here one of the same name): not trusted.
        let err = other.verify(leaf.as_bytes(), "localhost").unwrap_err();
        assert_eq!(
            failure_in(&err),
            Some(TlsFailure::UntrustedCertificate),
            "{err}"
        );
    }

    #[test]
    fn unusable_ca_files_are_refused_with_their_name() {
        let err = TlsSettings::from_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
        let err = TlsSettings::from_ca_pem(b"hello\n", "x.pem").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        // A key file given as the CA: no certificate in it.
        let (_, _, key) = ca_and_leaf();
        let err = TlsSettings::from_ca_pem(key.as_bytes(), "k.pem").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        // A certificate whose body is not DER.
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TlsSettings::from_ca_pem(bad.as_bytes(), "bad.pem").unwrap_err();
        assert!(matches!(err, TlsError::BadCa { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[cfg(feature = "server")]
    #[test]
    fn a_server_needs_a_matching_certificate_and_key() {
        let (ca, leaf, key) = ca_and_leaf();
        ServerTls::from_pem(leaf.as_bytes(), "c", key.as_bytes(), "k").unwrap();
        // No key in the key file.
        let err = ServerTls::from_pem(leaf.as_bytes(), "c", ca.as_bytes(), "k").unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        // Another key than the certificate's.
        let (_, _, other_key) = ca_and_leaf();
        let err = ServerTls::from_pem(leaf.as_bytes(), "c", other_key.as_bytes(), "k").unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err}");
        // No certificate.
        let err = ServerTls::from_pem(key.as_bytes(), "c", key.as_bytes(), "k").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn failures_are_found_by_type_inside_io_errors() {
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, untrusted);
        assert_eq!(failure_in(&io), Some(TlsFailure::UntrustedCertificate));
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert_eq!(failure_in(&name), Some(TlsFailure::WrongName));
        let not_tls = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let io = std::io::Error::other(not_tls);
        assert_eq!(failure_in(&io), Some(TlsFailure::NotTls));
        let plain = std::io::Error::other("refused");
        assert_eq!(failure_in(&plain), None);
    }
}
