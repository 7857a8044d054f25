//! Keys and known servers: `keygen` (the default identity when no --out),
//! `pubkey`, and `trust`.

use std::path::{Path, PathBuf};

use proto::keys::{KeyError, PublicKey, StaticKeypair};

use super::context::Context;
use super::error::CliError;
use super::parse::TrustArgs;

/// The default identity's path, or why there is none.
fn default_key() -> Result<PathBuf, CliError> {
    crate::paths::default_key().ok_or_else(|| {
        CliError::usage(
            "no config directory is known (set XDG_CONFIG_HOME or HOME), or give --out FILE",
        )
    })
}

/// Runs `keygen`: writes `out`, or the default identity (its directory
/// made with mode 0700), never over an existing file.
pub(crate) fn keygen(out: Option<&Path>) -> Result<u8, CliError> {
    let (path, default) = match out {
        Some(p) => (p.to_path_buf(), false),
        None => (default_key()?, true),
    };
    if default && let Some(dir) = path.parent() {
        crate::paths::create_private_dir(dir)
            .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let kp = StaticKeypair::generate_to_file(&path).map_err(|e| match e {
        KeyError::Write { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            CliError::usage(format!(
                "{} already exists; not overwriting a key (remove it first, or give --out FILE)",
                path.display()
            ))
        }
        e => CliError::usage(e.to_string()),
    })?;
    println!("{}", kp.public());
    if default {
        eprintln!(
            "core-client: wrote the private key to {} (the default identity); the line above is \
             its public key, for the exec-server's authorized keys",
            path.display()
        );
    }
    Ok(0)
}

/// Runs `pubkey`: the public half of `key`, or of the default identity.
pub(crate) fn pubkey(key: Option<&Path>) -> Result<u8, CliError> {
    let path = match key {
        Some(p) => p.to_path_buf(),
        None => default_key()?,
    };
    let kp = StaticKeypair::read_file(&path).map_err(|e| CliError::usage(e.to_string()))?;
    println!("{}", kp.public());
    Ok(0)
}

/// Runs `trust`: records NAME's key in the known servers.
pub(crate) fn trust(args: &TrustArgs, mut ctx: Context) -> Result<u8, CliError> {
    if !crate::config::keys::valid_name(&args.name) {
        return Err(CliError::usage(format!(
            "`{}` cannot name a server (letters, digits, `.`, `_` and `-`, not starting with `-`)",
            args.name
        )));
    }
    let key: PublicKey = match (&args.server, &args.server_file) {
        (Some(text), _) => text.parse().map_err(|_| {
            CliError::usage(
                "--server: not a valid public key (expected the 44-character key printed by \
                 `exec-server keygen`)",
            )
        })?,
        (None, Some(path)) => {
            PublicKey::read_file(path).map_err(|e| CliError::usage(e.to_string()))?
        }
        (None, None) => {
            return Err(CliError::usage(
                "give --server PUBKEY or --server-file PATH",
            ));
        }
    };
    if crate::paths::known_servers().is_none() {
        return Err(CliError::usage(
            "no config directory is known to keep the known servers in (set XDG_CONFIG_HOME or HOME)",
        ));
    }
    let offered = if args.server.is_some() {
        "flag --server".to_owned()
    } else {
        "flag --server-file".to_owned()
    };
    let relay = match &args.relay {
        Some(typed) => Some(
            crate::address::RelayAddress::parse(typed)
                .map_err(|e| CliError::usage(format!("--relay: {e}")))?
                .url()
                .to_owned(),
        ),
        None => None,
    };
    let known = &mut ctx.known;
    match known.check(&args.name, &key, &offered) {
        Ok(true) => {
            let recorded = known.by_name(&args.name).and_then(|k| k.relay.clone());
            if relay.is_none() || relay == recorded {
                eprintln!(
                    "core-client: `{}` is already known with this key (id {})",
                    args.name,
                    key.server_id()
                );
                return Ok(0);
            }
            known.replace(&args.name, key, relay.as_deref())?;
        }
        Ok(false) => known.add(Some(&args.name), key, relay.as_deref())?,
        Err(_) if args.replace => known.replace(&args.name, key, relay.as_deref())?,
        Err(changed) => return Err(CliError::failed(changed.to_string())),
    }
    eprintln!(
        "core-client: `{}` (id {}) is now a known server ({})",
        args.name,
        key.server_id(),
        known.path().display()
    );
    Ok(0)
}
