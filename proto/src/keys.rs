//! Static X25519 keys and their text form.
//!
//! A public key's text form is standard base64 of its 32 bytes (44
//! characters), the same string `keygen` prints, `--server` takes and an
//! authorized-keys file lists. A private key file holds the base64 of the
//! 32-byte private key on one line and is created with mode 0600.
//!
//! A private key file readable or writable by anyone but its owner is
//! refused, as ssh refuses one.
//!
//! An authorized-keys line may start with options, as ssh's does:
//! `from="10.0.0.0/8,192.168.1.7"` (the key is admitted only from those
//! source addresses, on direct connections), `no-env` (the key may not set
//! environment variables) and `env-allow="TERM,LANG"` (only those). See
//! [`KeyOptions`].
//!
//! An exec-server's id is derived from its public key
//! ([`PublicKey::server_id`]), so only the holder of the private key can
//! register under it.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Length of an X25519 key in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// Errors reading, parsing or writing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not base64 of exactly 32 bytes.
    #[error("not a valid key: expected 44 characters of base64 encoding 32 bytes")]
    Malformed,
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file does not hold a valid private key.
    #[error("key file {path} does not hold a valid private key")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A public key file does not hold a valid public key.
    #[error(
        "{path} does not hold a public key (the 44-character key printed by `exec-server keygen`)"
    )]
    BadPublicKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A private key file can be read or written by others.
    #[error(
        "permissions {mode:04o} for key file {path} are too open: a private key must be \
         accessible by its owner only (chmod 600 {path}); refusing to use it"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of an authorized-keys file is not a key.
    #[error("{path}:{line}: not a valid public key")]
    BadAuthorizedKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line of an authorized-keys file has options that cannot be used.
    #[error("{path}:{line}: {problem}")]
    BadKeyOptions {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: OptionsError,
    },
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Wraps a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        <[u8; KEY_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| KeyError::Malformed)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The exec-server id for this key: the first 16 bytes of
    /// SHA-256("rex server id" || key), as 32 lowercase hex digits.
    pub fn server_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"rex server id");
        h.update(self.0);
        let digest = h.finalize();
        let mut out = String::with_capacity(32);
        for b in &digest[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Reads a public key from a file: its first line that is neither
    /// blank nor a `#` comment, up to any whitespace (so the output of
    /// `exec-server keygen` or an authorized-keys line both work).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file_text(&text, path)
    }

    /// [`PublicKey::read_file`] on the text of the file at `path` (named
    /// in errors).
    pub fn from_file_text(text: &str, path: &Path) -> Result<Self, KeyError> {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| KeyError::BadPublicKeyFile {
                path: path.to_path_buf(),
            })
    }

    /// Writes the key as one line (mode 0644), over any file already
    /// there: what `keygen` writes beside a new private key.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)
            .map_err(err)?;
        f.write_all(format!("{self}\n").as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }

    /// A short, non-secret label for logs: the first 8 characters of the text form.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s.chars().take(8).collect()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = decode_key(s.trim())?;
        Ok(Self(bytes))
    }
}

fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    if s.len() != 44 {
        return Err(KeyError::Malformed);
    }
    let v = STANDARD.decode(s).map_err(|_| KeyError::Malformed)?;
    <[u8; KEY_LEN]>::try_from(v.as_slice()).map_err(|_| KeyError::Malformed)
}

/// Where `keygen` writes the public half of the private key file `key`:
/// beside it, `.pub` added to its name (`server.key` -> `server.key.pub`).
pub(crate) fn public_key_path(key: &Path) -> std::path::PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    std::path::PathBuf::from(name)
}

/// A static X25519 key pair. The private half is never printed: `Debug`
/// shows only the public key.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl StaticKeypair {
    /// Generates a new key pair from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        // Any pattern over X25519 generates the same kind of key pair.
        const X25519_PARAMS: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
        let builder = snow::Builder::new(
            X25519_PARAMS
                .parse()
                .map_err(|e: snow::Error| KeyError::Generate(e.to_string()))?,
        );
        let kp = builder
            .generate_keypair()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let private =
            <[u8; KEY_LEN]>::try_from(kp.private.as_slice()).map_err(|_| KeyError::Malformed)?;
        let public = PublicKey::from_slice(&kp.public)?;
        Ok(Self { private, public })
    }

    /// Rebuilds a key pair from its private half.
    pub fn from_private(private: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        let public = x25519_public(&private)?;
        Ok(Self {
            private,
            public: PublicKey(public),
        })
    }

    /// Generates a key pair, writes its private half to a new file (mode
    /// 0600, never overwriting) and its public half beside it, to
    /// [`public_key_path`] (mode 0644, as ssh-keygen does): what both
    /// `keygen` commands do.
    pub fn generate_to_file(path: &Path) -> Result<Self, KeyError> {
        let kp = Self::generate()?;
        kp.write_file(path)?;
        kp.public.write_file(&public_key_path(path))?;
        Ok(kp)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private half, for the Noise state machines only.
    pub fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Reads a private key file; refuses one that anyone but its owner
    /// may read or write ([`KeyError::TooOpen`]).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_key_file_text(&text, path)
    }

    /// The private key in the text of a key file at `path` (named in
    /// errors): its first line that is neither blank nor a `#` comment.
    pub fn from_key_file_text(text: &str, path: &Path) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| KeyError::BadKeyFile {
                path: path.to_path_buf(),
            })?;
        let private = decode_key(line).map_err(|_| KeyError::BadKeyFile {
            path: path.to_path_buf(),
        })?;
        Self::from_private(private)
    }

    /// Writes the private key to a new file with mode 0600. Refuses to
    /// overwrite an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        let line = format!("{}\n", STANDARD.encode(self.private));
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Computes the X25519 public key for a private key with snow's DH
/// resolver (the same implementation the sessions use).
fn x25519_public(private: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], KeyError> {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| KeyError::Generate("X25519 is not available".into()))?;
    dh.set(private);
    <[u8; KEY_LEN]>::try_from(dh.pubkey().get(..KEY_LEN).unwrap_or_default())
        .map_err(|_| KeyError::Malformed)
}

/// Why the options of an authorized-keys line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// An option this exec-server does not know (refused rather than
    /// ignored: an ignored restriction would admit more than meant).
    #[error("unknown key option {0:?} (known: from=\"CIDR,...\", no-env, env-allow=\"NAME,...\")")]
    Unknown(String),
    /// A quoted value is not closed.
    #[error("unterminated quote in the key options")]
    Unterminated,
    /// An option that takes a value has none (or one that needs none has one).
    #[error("key option {0} needs a quoted value")]
    MissingValue(&'static str),
    /// `from=` names something that is not an address or CIDR block.
    #[error("from=: {0:?} is not an IP address or CIDR block")]
    BadAddress(String),
    /// `env-allow=` names something that is not a variable name.
    #[error("env-allow=: {0:?} is not an environment variable name")]
    BadName(String),
    /// `no-env` and `env-allow=` together.
    #[error("no-env and env-allow= contradict each other")]
    Contradiction,
}

/// An IP address block (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits.saturating_sub(prefix));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OptionsError::BadAddress(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which environment variables a key may set on its commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EnvPolicy {
    /// Any (the default).
    #[default]
    Any,
    /// None (`no-env`).
    None,
    /// Only these names (`env-allow="A,B"`).
    Only(Vec<String>),
}

impl EnvPolicy {
    /// Whether a command of this key may set `name`.
    pub fn allows(&self, name: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::None => false,
            Self::Only(names) => names.iter().any(|n| n.as_bytes() == name),
        }
    }
}

/// Where a session comes from, for `from=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not known: through a relay (the exec-server sees only the relay,
    /// and the relay's word for the client's address could not be
    /// checked), or a link that gave no peer address.
    Unknown,
    /// A direct connection from this peer address.
    Direct(IpAddr),
}

/// The options of one authorized key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyOptions {
    /// `from=`: the source addresses admitted (none given: any). A key with
    /// `from=` is admitted on direct connections only.
    pub from: Option<Vec<Cidr>>,
    /// `no-env` / `env-allow=`.
    pub env: EnvPolicy,
}

impl KeyOptions {
    /// Whether a session from `origin` is admitted.
    pub fn admits(&self, origin: Origin) -> bool {
        match (&self.from, origin) {
            (None, _) => true,
            (Some(_), Origin::Unknown) => false,
            (Some(blocks), Origin::Direct(ip)) => blocks.iter().any(|b| b.contains(ip)),
        }
    }

    /// Parses the options field of a line (`opt,opt="v,w",...`).
    pub fn parse(text: &str) -> Result<Self, OptionsError> {
        let mut options = Self::default();
        let mut no_env = false;
        let mut allow: Option<Vec<String>> = None;
        for (name, value) in split_options(text)? {
            match (name.as_str(), value) {
                ("from", Some(v)) => {
                    let blocks = v
                        .split(',')
                        .map(|b| b.trim().parse())
                        .collect::<Result<Vec<Cidr>, _>>()?;
                    options.from.get_or_insert_with(Vec::new).extend(blocks);
                }
                ("no-env", None) => no_env = true,
                ("env-allow", Some(v)) => {
                    for n in v.split(',').map(str::trim) {
                        let valid = !n.is_empty()
                            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if !valid {
                            return Err(OptionsError::BadName(n.to_owned()));
                        }
                        allow.get_or_insert_with(Vec::new).push(n.to_owned());
                    }
                }
                ("from", None) => return Err(OptionsError::MissingValue("from=")),
                ("env-allow", None) => return Err(OptionsError::MissingValue("env-allow=")),
                _ => return Err(OptionsError::Unknown(name)),
            }
        }
        options.env = match (no_env, allow) {
            (true, Some(_)) => return Err(OptionsError::Contradiction),
            (true, None) => EnvPolicy::None,
            (false, Some(names)) => EnvPolicy::Only(names),
            (false, None) => EnvPolicy::Any,
        };
        Ok(options)
    }
}

/// Splits `a,b="x,y",c` into names and optional (unquoted) values.
fn split_options(text: &str) -> Result<Vec<(String, Option<String>)>, OptionsError> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = rest[..end].to_ascii_lowercase();
        rest = &rest[end..];
        let value = if let Some(after) = rest.strip_prefix('=') {
            let quoted = after.strip_prefix('"').ok_or(OptionsError::Unterminated)?;
            let close = quoted.find('"').ok_or(OptionsError::Unterminated)?;
            rest = &quoted[close + 1..];
            Some(quoted[..close].to_owned())
        } else {
            None
        };
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err(OptionsError::Unterminated),
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Splits an authorized-keys line into its options field (if any) and the
/// rest, at the first whitespace outside quotes.
fn split_line(line: &str) -> (Option<&str>, &str) {
    let first = line.split_whitespace().next().unwrap_or("");
    if first.parse::<PublicKey>().is_ok() {
        return (None, line);
    }
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (Some(&line[..i]), line[i..].trim_start()),
            _ => {}
        }
    }
    // An open quote: everything is options (their parse says what is
    // wrong); else a lone word that is not a key.
    if quoted {
        (Some(line), line)
    } else {
        (Some(line), "")
    }
}

/// The client keys an exec-server accepts, each with its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    keys: HashMap<PublicKey, KeyOptions>,
}

impl AuthorizedKeys {
    /// Builds a set from keys (no options).
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| (k, KeyOptions::default()))
                .collect(),
        }
    }

    /// Parses an authorized-keys file: one key per line, optionally after
    /// options (`from="10.0.0.0/8",no-env KEY comment`); blank lines and
    /// lines starting with `#` are ignored; text after the key on a line
    /// (separated by whitespace) is a comment. The first line naming a key
    /// counts.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let (keys, mut errors) = Self::parse_lenient(text, path);
        match errors.is_empty() {
            true => Ok(keys),
            false => Err(errors.remove(0)),
        }
    }

    /// Parses like [`parse`](Self::parse), skipping bad lines: the keys
    /// of the good lines, and an error per bad line.
    pub fn parse_lenient(text: &str, path: &Path) -> (Self, Vec<KeyError>) {
        let mut keys = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (options, rest) = split_line(line);
            let first = rest.split_whitespace().next().unwrap_or("");
            let Ok(key) = first.parse::<PublicKey>() else {
                // Bad options (an open quote, say) explain more than the key.
                errors.push(
                    match options.filter(|_| !rest.is_empty()).map(KeyOptions::parse) {
                        Some(Err(problem)) => KeyError::BadKeyOptions {
                            path: path.to_path_buf(),
                            line: i + 1,
                            problem,
                        },
                        _ => KeyError::BadAuthorizedKey {
                            path: path.to_path_buf(),
                            line: i + 1,
                        },
                    },
                );
                continue;
            };
            match options.map(KeyOptions::parse).transpose() {
                Ok(options) => {
                    keys.entry(key).or_insert(options.unwrap_or_default());
                }
                Err(problem) => errors.push(KeyError::BadKeyOptions {
                    path: path.to_path_buf(),
                    line: i + 1,
                    problem,
                }),
            }
        }
        (Self { keys }, errors)
    }

    /// Reads and parses an authorized-keys file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Whether `key` is authorized (from somewhere).
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains_key(key)
    }

    /// The options of `key`, if it is authorized.
    pub fn options(&self, key: &PublicKey) -> Option<&KeyOptions> {
        self.keys.get(key)
    }

    /// Whether `key` is authorized for a session from `origin`.
    pub fn admits(&self, key: &PublicKey, origin: Origin) -> bool {
        self.keys.get(key).is_some_and(|o| o.admits(origin))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let kp = StaticKeypair::generate().unwrap();
        let s = kp.public().to_string();
        assert_eq!(s.len(), 44);
        assert_eq!(s.parse::<PublicKey>().unwrap(), kp.public());
    }

    #[test]
    fn private_key_determines_public_key() {
        let kp = StaticKeypair::generate().unwrap();
        let again = StaticKeypair::from_private(*kp.private_bytes()).unwrap();
        assert_eq!(again.public(), kp.public());
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in ["", "abc", &"A".repeat(44), &"A".repeat(43), "!!!!"] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_file_round_trip_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let kp = StaticKeypair::generate().unwrap();
        kp.write_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = StaticKeypair::read_file(&path).unwrap();
        assert_eq!(back.public(), kp.public());
        assert!(kp.write_file(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn authorized_keys_file_with_comments() {
        let a = StaticKeypair::generate().unwrap().public();
        let b = StaticKeypair::generate().unwrap().public();
        let c = StaticKeypair::generate().unwrap().public();
        let text = format!("# team\n{a}\n\n  {b} alice@laptop\n#{c}\n");
        let keys = AuthorizedKeys::parse(&text, Path::new("ak")).unwrap();
        assert!(keys.contains(&a) && keys.contains(&b) && !keys.contains(&c));
        let err = AuthorizedKeys::parse("# x\nnot-a-key\n", Path::new("ak")).unwrap_err();
        assert_eq!(err.to_string(), "ak:2: not a valid public key");
    }

    #[test]
    fn private_key_files_open_to_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        StaticKeypair::generate()
            .unwrap()
            .write_file(&path)
            .unwrap();
        for mode in [0o644, 0o640, 0o604, 0o666, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = StaticKeypair::read_file(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::TooOpen { mode: m, .. } if m == mode),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("{mode:04o}")) && !text.contains('\n'),
                "{text}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(StaticKeypair::read_file(&path).is_ok());
        }
    }

    #[test]
    fn key_options_are_parsed_and_applied() {
        let a = StaticKeypair::generate().unwrap().public();
        let b = StaticKeypair::generate().unwrap().public();
        let c = StaticKeypair::generate().unwrap().public();
        let text = format!(
            "from=\"127.0.0.0/8,::1\",env-allow=\"TERM,LANG\" {a} alice\nno-env {b}\n{c} carol\n"
        );
        let keys = AuthorizedKeys::parse(&text, Path::new("ak")).unwrap();
        let local: IpAddr = "127.0.0.5".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(keys.admits(&a, Origin::Direct(local)));
        assert!(keys.admits(&a, Origin::Direct(mapped)));
        assert!(keys.admits(&a, Origin::Direct("::1".parse().unwrap())));
        assert!(!keys.admits(&a, Origin::Direct(remote)));
        assert!(
            !keys.admits(&a, Origin::Unknown),
            "from= needs a known address"
        );
        assert!(keys.admits(&b, Origin::Unknown) && keys.admits(&c, Origin::Unknown));
        let env = &keys.options(&a).unwrap().env;
        assert!(env.allows(b"TERM") && !env.allows(b"LD_PRELOAD") && !env.allows(b"PATH"));
        assert!(!keys.options(&b).unwrap().env.allows(b"TERM"));
        assert!(keys.options(&c).unwrap().env.allows(b"LD_PRELOAD"));
        for (bad, want) in [
            (format!("bogus {a}"), "unknown key option"),
            (format!("from=\"10.0.0.0/33\" {a}"), "not an IP address"),
            (format!("from=\"10.0.0.0/8 {a}"), "unterminated"),
            (format!("no-env,env-allow=\"A\" {a}"), "contradict"),
            (
                format!("env-allow=\"A=B\" {a}"),
                "not an environment variable name",
            ),
        ] {
            let err = AuthorizedKeys::parse(&bad, Path::new("ak")).unwrap_err();
            assert!(
                err.to_string().starts_with("ak:1: ") && err.to_string().contains(want),
                "{err}"
            );
        }
        let (lenient, errors) =
            AuthorizedKeys::parse_lenient(&format!("bogus {a}\n{b}\n"), Path::new("ak"));
        assert_eq!(errors.len(), 1);
        assert!(!lenient.contains(&a) && lenient.contains(&b));
    }

    #[test]
    fn public_key_file_takes_the_first_key_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = StaticKeypair::generate().unwrap().public();
        let path = dir.path().join("server.pub");
        std::fs::write(&path, format!("# the exec-server\n\n{key}  # prod-1\n")).unwrap();
        assert_eq!(PublicKey::read_file(&path).unwrap(), key);
        std::fs::write(&path, "# nothing\nnot-a-key\n").unwrap();
        assert!(matches!(
            PublicKey::read_file(&path),
            Err(KeyError::BadPublicKeyFile { .. })
        ));
        assert!(matches!(
            PublicKey::read_file(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn server_id_is_stable_and_distinct() {
        let a = StaticKeypair::generate().unwrap().public();
        let b = StaticKeypair::generate().unwrap().public();
        assert_eq!(a.server_id(), a.server_id());
        assert_ne!(a.server_id(), b.server_id());
        assert_eq!(a.server_id().len(), 32);
    }
}
