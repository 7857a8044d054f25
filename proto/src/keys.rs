//! Static X25519 keys and their text form.
//!
//! A public key's text form is standard base64 of its 32 bytes (44
//! characters), the same string `keygen` prints, `--server` takes and an
//! authorized-keys file lists. A private key file holds the base64 of the
//! 32-byte private key on one line and is created with mode 0600.
//!
//! An exec-server's id is derived from its public key
//! ([`PublicKey::server_id`]), so only the holder of the private key can
//! register under it.

use std::collections::HashSet;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Length of an X25519 key in bytes.
pub const KEY_LEN: usize = 32;

/// Errors reading, parsing or writing keys.
#[derive(Debug, thiserror::Error)]
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
    /// A line of an authorized-keys file is not a key.
    #[error("{path}:{line}: not a valid public key")]
    BadAuthorizedKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
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
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| KeyError::BadPublicKeyFile {
                path: path.to_path_buf(),
            })
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

    /// Generates a key pair and writes its private half to a new file
    /// (mode 0600, never overwriting): what both `keygen` commands do.
    pub fn generate_to_file(path: &Path) -> Result<Self, KeyError> {
        let kp = Self::generate()?;
        kp.write_file(path)?;
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

    /// Reads a private key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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

/// The set of client keys an exec-server accepts.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    keys: HashSet<PublicKey>,
}

impl AuthorizedKeys {
    /// Builds a set from keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// Parses an authorized-keys file: one key per line; blank lines and
    /// lines starting with `#` are ignored; text after the key on a line
    /// (separated by whitespace) is a comment.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let mut keys = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            let key = first.parse().map_err(|_| KeyError::BadAuthorizedKey {
                path: path.to_path_buf(),
                line: i + 1,
            })?;
            keys.insert(key);
        }
        Ok(Self { keys })
    }

    /// Reads and parses an authorized-keys file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Whether `key` is authorized.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
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
