//! `relay tls-init`: a private CA and a relay certificate signed by it,
//! for relays that have no certificate from a public CA.
//!
//! In the directory: `ca.pem` (the CA certificate: give it to clients
//! and exec-servers as their CA file), `ca.key` (the CA's private key),
//! `relay.pem` and `relay.key` (the relay's certificate and key). Keys are
//! written mode 0600 and never overwritten. A CA already in the directory
//! (made here before) signs the new certificate, so several relays, or a
//! renewed certificate, share one CA file.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use proto::tls::{TlsSettings, pem};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// The CA certificate file in the directory.
const CA_CERT: &str = "ca.pem";
/// The CA's private key file.
const CA_KEY: &str = "ca.key";
/// The relay's certificate file.
const RELAY_CERT: &str = "relay.pem";
/// The relay's private key file.
const RELAY_KEY: &str = "relay.key";
/// How long the CA is valid, in days.
const CA_DAYS: u32 = 3650;
/// The CA's name (fixed, so that a CA made before can sign again).
const CA_NAME: &str = "rex relay CA";

/// What to make.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// The directory (made, mode 0700, if missing).
    pub dir: PathBuf,
    /// The host names and IP addresses clients dial the relay by.
    pub names: Vec<String>,
    /// How long the relay's certificate is valid, in days.
    pub days: u32,
    /// With a relay certificate and key already there, keep them and
    /// succeed (instead of refusing).
    pub if_missing: bool,
}

/// How long a relay's certificate is valid when no validity is given, in
/// days.
pub const DEFAULT_DAYS: u32 = 825;

impl InitOptions {
    /// A CA (unless `dir` has one) and a certificate for the relay's
    /// `names` in `dir`, valid for [`DEFAULT_DAYS`]; a certificate already
    /// there is refused.
    pub fn new(dir: PathBuf, names: Vec<String>) -> Self {
        Self {
            dir,
            names,
            days: DEFAULT_DAYS,
            if_missing: false,
        }
    }
}

/// What was done. Exhaustive on purpose: `relay tls-init` tells each
/// outcome, so a new one does not build until it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A certificate was made; `new_ca` if the CA was made too.
    Made {
        /// Whether the CA is new.
        new_ca: bool,
    },
    /// The relay's certificate and key were there already (kept).
    Kept,
}

/// Why nothing (or not everything) could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// No name was given.
    #[error("give at least one --name (the host name or address clients dial)")]
    NoName,
    /// A name is neither a DNS name nor an IP address.
    #[error("--name {0:?}: not a DNS name or an IP address")]
    BadName(String),
    /// A validity of zero days (or one too long to express).
    #[error("--days: between 1 and 36500")]
    BadDays,
    /// The relay's files are there already.
    #[error(
        "{} already exists: keep it (--if-missing), or move it and {} away to make new ones",
        cert.display(),
        RELAY_KEY
    )]
    Exists {
        /// The certificate file.
        cert: PathBuf,
    },
    /// Only one of the CA's two files is there.
    #[error("{} is there without {}: both or neither", present.display(), missing.display())]
    HalfCa {
        /// The file that is there.
        present: PathBuf,
        /// The file that is not.
        missing: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Key or certificate generation failed, or the CA's key is unusable.
    #[error("{what}: {source}")]
    Generate {
        /// What was being made or read.
        what: String,
        /// Why.
        source: rcgen::Error,
    },
    /// The CA's key file holds no usable key.
    #[error(transparent)]
    CaKey(#[from] proto::tls::TlsError),
    /// The certificate made does not verify under the CA file (a CA in
    /// the directory that was not made here).
    #[error("the new certificate does not verify under {}: {source}", ca.display())]
    Verify {
        /// The CA file.
        ca: PathBuf,
        /// Why.
        source: proto::tls::TlsError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

fn generated(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// The CA's parameters: the same every time (only its key differs), so
/// that a CA's key read back signs with the same issuer name.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The date (UTC) `days` from today (negative: before).
fn ymd(days: i64) -> Result<(i32, u8, u8), CertError> {
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days))
        .map_err(|_| CertError::BadDays)?;
    let month = u8::try_from(date.month()).map_err(|_| CertError::BadDays)?;
    let dom = u8::try_from(date.day()).map_err(|_| CertError::BadDays)?;
    Ok((i32::from(date.year()), month, dom))
}

/// Valid from yesterday (a little clock skew is no reason to refuse)
/// until `days` from today.
fn validity(params: &mut CertificateParams, days: u32) -> Result<(), CertError> {
    let (y, m, d) = ymd(-1)?;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(i64::from(days))?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never shorter than it should be.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Writes `data` to a new file at `path` (never over an existing one)
/// with `mode`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))
}

fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    if !valid {
        return Err(CertError::BadName(name.to_owned()));
    }
    name.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| CertError::BadName(name.to_owned()))
}

/// Makes the relay's certificate (and the CA, if the directory has none)
/// as `options` say.
pub fn init(options: &InitOptions) -> Result<Outcome, CertError> {
    if options.names.is_empty() {
        return Err(CertError::NoName);
    }
    if options.days == 0 || options.days > 36_500 {
        return Err(CertError::BadDays);
    }
    let sans = options
        .names
        .iter()
        .map(|n| san(n))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = &options.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let (cert_path, key_path) = (dir.join(RELAY_CERT), dir.join(RELAY_KEY));
    if cert_path.exists() || key_path.exists() {
        if options.if_missing && cert_path.exists() && key_path.exists() {
            return Ok(Outcome::Kept);
        }
        return Err(CertError::Exists { cert: cert_path });
    }

    // The CA: the one already there, or a new one.
    let new_ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => false,
        (false, false) => true,
        (true, false) => {
            return Err(CertError::HalfCa {
                present: ca_cert,
                missing: ca_key,
            });
        }
        (false, true) => {
            return Err(CertError::HalfCa {
                present: ca_key,
                missing: ca_cert,
            });
        }
    };
    let issuer = if new_ca {
        let key = KeyPair::generate().map_err(generated("the CA's key"))?;
        let mut params = ca_params();
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_DAYS)?;
        let cert = params
            .self_signed(&key)
            .map_err(generated("the CA's certificate"))?;
        write_new(
            &ca_key,
            pem("PRIVATE KEY", &key.serialize_der()).as_bytes(),
            0o600,
        )?;
        write_new(&ca_cert, pem("CERTIFICATE", cert.der()).as_bytes(), 0o644)?;
        Issuer::new(ca_params(), key)
    } else {
        let text = std::fs::read(&ca_key).map_err(io_err(&ca_key))?;
        let what = format!("{}", ca_key.display());
        let der = proto::tls::private_key(&text, &what)?;
        let key = KeyPair::try_from(&der).map_err(generated(&what))?;
        Issuer::new(ca_params(), key)
    };

    // The relay's certificate.
    let key = KeyPair::generate().map_err(generated("the relay's key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, options.names[0].as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.serial_number = Some(random_serial());
    validity(&mut params, options.days)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generated("the relay's certificate"))?;
    let cert_pem = pem("CERTIFICATE", cert.der());
    // Checked as a client would check it, before anything is written.
    let trusted = TlsSettings::from_ca_file(&ca_cert).map_err(|source| CertError::Verify {
        ca: ca_cert.clone(),
        source,
    })?;
    for name in &options.names {
        trusted
            .verify(cert_pem.as_bytes(), name)
            .map_err(|source| CertError::Verify {
                ca: ca_cert.clone(),
                source,
            })?;
    }
    write_new(
        &key_path,
        pem("PRIVATE KEY", &key.serialize_der()).as_bytes(),
        0o600,
    )?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok(Outcome::Made { new_ca })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn options(dir: &Path, names: &[&str]) -> InitOptions {
        InitOptions {
            dir: dir.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            days: 30,
            if_missing: false,
        }
    }

    fn mode(path: PathBuf) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_and_a_relay_certificate_that_verifies_for_every_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let made = init(&options(&dir, &["relay.example", "127.0.0.1", "::1"])).unwrap();
        assert_eq!(made, Outcome::Made { new_ca: true });
        assert_eq!(mode(dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(dir.join(RELAY_KEY)), 0o600);
        assert_eq!(mode(dir.clone()), 0o700);
        let ca = TlsSettings::from_ca_file(&dir.join(CA_CERT)).unwrap();
        let chain = std::fs::read(dir.join(RELAY_CERT)).unwrap();
        for name in ["relay.example", "127.0.0.1", "::1"] {
            ca.verify(&chain, name).unwrap();
        }
        assert!(ca.verify(&chain, "other.example").is_err());
        // The pair serves TLS.
        proto::tls::ServerTls::from_files(&dir.join(RELAY_CERT), &dir.join(RELAY_KEY)).unwrap();
    }

    #[test]
    fn nothing_is_overwritten_and_the_ca_signs_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&options(dir, &["a.example"])).unwrap();
        let ca_before = std::fs::read(dir.join(CA_CERT)).unwrap();
        let cert_before = std::fs::read(dir.join(RELAY_CERT)).unwrap();
        let err = init(&options(dir, &["a.example"])).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        let keep = InitOptions {
            if_missing: true,
            ..options(dir, &["a.example"])
        };
        assert_eq!(init(&keep).unwrap(), Outcome::Kept);
        assert_eq!(std::fs::read(dir.join(RELAY_CERT)).unwrap(), cert_before);
        // Renewal: the relay's files moved away, the CA kept and reused.
        std::fs::remove_file(dir.join(RELAY_CERT)).unwrap();
        std::fs::remove_file(dir.join(RELAY_KEY)).unwrap();
        assert_eq!(
            init(&options(dir, &["b.example"])).unwrap(),
            Outcome::Made { new_ca: false }
        );
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), ca_before);
        let ca = TlsSettings::from_ca_file(&dir.join(CA_CERT)).unwrap();
        ca.verify(&std::fs::read(dir.join(RELAY_CERT)).unwrap(), "b.example")
            .unwrap();
    }

    #[test]
    fn bad_requests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(matches!(init(&options(dir, &[])), Err(CertError::NoName)));
        assert!(matches!(
            init(&options(dir, &["a b"])),
            Err(CertError::BadName(_))
        ));
        assert!(matches!(
            init(&InitOptions {
                days: 0,
                ..options(dir, &["a"])
            }),
            Err(CertError::BadDays)
        ));
        // Half a CA.
        std::fs::write(dir.join(CA_CERT), "x").unwrap();
        assert!(matches!(
            init(&options(dir, &["a"])),
            Err(CertError::HalfCa { .. })
        ));
        // A foreign CA (its key does not sign as its certificate says).
        let other = tempfile::tempdir().unwrap();
        init(&options(other.path(), &["a"])).unwrap();
        std::fs::copy(other.path().join(CA_KEY), dir.join(CA_KEY)).unwrap();
        let third = tempfile::tempdir().unwrap();
        init(&options(third.path(), &["a"])).unwrap();
        std::fs::copy(third.path().join(CA_CERT), dir.join(CA_CERT)).unwrap();
        let err = init(&options(dir, &["a"])).unwrap_err();
        assert!(matches!(err, CertError::Verify { .. }), "{err}");
        assert!(!dir.join(RELAY_CERT).exists() && !dir.join(RELAY_KEY).exists());
    }
}
