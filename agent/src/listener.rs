//! The agent's socket: made in its private directory (mode 0600), never
//! taking over a live agent's (a stale one, whose agent died, is removed).

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::place::{self, PlaceError};

/// Why the agent's socket could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Its directory is not private, or cannot be made.
    #[error(transparent)]
    Place(#[from] PlaceError),
    /// Another agent answers at the socket.
    #[error("an agent is already running at {}", .0.display())]
    Running(PathBuf),
    /// The socket could not be made.
    #[error("cannot listen at {}: {source}", path.display())]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's socket, listening ([`bind`]); [`serve`](crate::serve)
/// removes it when the agent stops.
#[derive(Debug)]
pub struct Listener {
    pub(crate) listener: UnixListener,
    pub(crate) socket: PathBuf,
}

/// Makes the socket, refusing to take over a live agent's (a stale one is
/// removed).
pub async fn bind(socket: &Path) -> Result<Listener, BindError> {
    place::prepare_dir(socket)?;
    let listen = |source| BindError::Listen {
        path: socket.to_path_buf(),
        source,
    };
    if socket.exists() {
        use std::io::ErrorKind;
        match UnixStream::connect(socket).await {
            // Someone listens (if busy, still there).
            Ok(_) => return Err(BindError::Running(socket.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(BindError::Running(socket.to_path_buf()));
            }
            // Nobody listens: a stale socket of an agent that died.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                let _ = std::fs::remove_file(socket);
            }
            Err(e) => return Err(listen(e)),
        }
    }
    let listener = UnixListener::bind(socket).map_err(listen)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
    Ok(Listener {
        listener,
        socket: socket.to_path_buf(),
    })
}
