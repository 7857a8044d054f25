//! The HTTP/2 stream window of one served connection, which a service may
//! widen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

use crate::relay_link::CONNECTION_WINDOW;

/// The HTTP/2 window each stream of one served connection gets, which a
/// service may widen for the whole connection: every request carries its
/// connection's in its extensions. Only widened, never narrowed, and at
/// most HTTP/2's largest.
#[derive(Clone, Debug)]
pub struct StreamWindow(Arc<WindowState>);

#[derive(Debug)]
struct WindowState {
    wanted: AtomicU32,
    changed: Notify,
}

impl StreamWindow {
    pub(super) fn new(bytes: u32) -> Self {
        Self(Arc::new(WindowState {
            wanted: AtomicU32::new(bytes),
            changed: Notify::new(),
        }))
    }

    /// Makes every stream's window of this connection, open or to come, at
    /// least `bytes` (the peer is told at once).
    pub fn widen(&self, bytes: u32) {
        let bytes = bytes.min(CONNECTION_WINDOW);
        if self.0.wanted.fetch_max(bytes, Ordering::Relaxed) < bytes {
            self.0.changed.notify_one();
        }
    }

    /// Widens the connection for a client whose session has authenticated:
    /// each stream gets [`MAX_CLIENT_WINDOW`](crate::routing::MAX_CLIENT_WINDOW)
    /// and its margin, so that what the client sends (a call's stdin) is
    /// held by the call's own window, which follows the path, and not by the
    /// link's 1 MiB (which held stdin across a 50 ms round trip to about
    /// 15 MiB/s).
    pub fn widen_for_authenticated_client(&self) {
        self.widen(crate::routing::authenticated_client_stream_window());
    }

    /// The window asked for.
    pub fn wanted(&self) -> u32 {
        self.0.wanted.load(Ordering::Relaxed)
    }

    pub(super) async fn changed(&self) {
        self.0.changed.notified().await;
    }
}
