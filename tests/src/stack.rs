//! A relay and exec-servers in this process, on loopback.

use std::net::SocketAddr;

use exec_server::{ExecServerConfig, ExecServerHandle};
use proto::keys::{AuthorizedKeys, StaticKeypair};
use rex_client::{Client, ClientConfig, Target};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{FixtureError, Result};

/// A listener for a relay on `127.0.0.1:0`.
async fn bind_loopback() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| FixtureError::io("binding the relay's listener", e))
}

/// A running relay.
pub struct TestRelay {
    /// Its address.
    pub addr: SocketAddr,
    /// Cancel to stop it.
    pub shutdown: CancellationToken,
    /// Its task.
    pub task: JoinHandle<std::result::Result<(), relay::RelayError>>,
    /// Its counters (connections, unauthenticated sessions, queued bytes,
    /// registrations).
    pub stats: relay::RelayStats,
}

impl TestRelay {
    /// Starts a relay with default settings on `127.0.0.1:0`.
    pub async fn start() -> Result<Self> {
        Self::start_with(relay::RelayConfig::default()).await
    }

    /// Starts a relay with `config` on `127.0.0.1:0`.
    pub async fn start_with(config: relay::RelayConfig) -> Result<Self> {
        Self::serve_on(bind_loopback().await?, config)
    }

    /// Starts a relay with `config` on `127.0.0.1:0` in the fleet whose
    /// directory is the etcd at `etcd_url` (its lease living `ttl`) and
    /// whose key is `fleet_secret`.
    pub async fn start_in_fleet(
        config: relay::RelayConfig,
        etcd_url: &str,
        ttl: std::time::Duration,
        fleet_secret: &[u8],
    ) -> Result<Self> {
        Self::start_in_fleet_at(config, etcd_url, ttl, fleet_secret, |addr| {
            format!("http://{addr}")
        })
        .await
    }

    /// [`TestRelay::start_in_fleet`], its peers told to dial the URL
    /// `advertise` gives for its listening address (e.g. a link emulator's
    /// in front of it).
    pub async fn start_in_fleet_at(
        mut config: relay::RelayConfig,
        etcd_url: &str,
        ttl: std::time::Duration,
        fleet_secret: &[u8],
        advertise: impl FnOnce(SocketAddr) -> String,
    ) -> Result<Self> {
        config.fleet = Some(relay::config::FleetConfig::new(std::sync::Arc::new(
            relay::fleet::Fleet::from_secret(fleet_secret),
        )));
        let listener = bind_loopback().await?;
        let addr = listener
            .local_addr()
            .map_err(|e| FixtureError::io("reading the relay listener's address", e))?;
        let mut directory =
            relay::directory::DirectoryConfig::new(vec![etcd_url.to_owned()], advertise(addr));
        directory.ttl = ttl;
        config.directory = Some(directory);
        Self::serve_on(listener, config)
    }

    fn serve_on(listener: TcpListener, config: relay::RelayConfig) -> Result<Self> {
        let addr = listener
            .local_addr()
            .map_err(|e| FixtureError::io("reading the relay listener's address", e))?;
        let shutdown = CancellationToken::new();
        let relay = relay::Relay::new(config)
            .map_err(|e| FixtureError::start("the relay", e.to_string()))?;
        let stats = relay.stats();
        let task = tokio::spawn(relay.serve(listener, shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            task,
            stats,
        })
    }

    /// The relay's directory, if it was started in a fleet.
    pub fn directory(&self) -> Option<&relay::directory::Directory> {
        self.stats.directory.as_ref()
    }

    /// The URL clients and exec-servers dial.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A running exec-server.
pub struct TestServer {
    /// Its key.
    pub key: StaticKeypair,
    /// Its handle.
    pub handle: ExecServerHandle,
    /// Cancel to stop it.
    pub shutdown: CancellationToken,
}

impl TestServer {
    /// Starts an exec-server registered with `relay_url` (and listening
    /// directly if `listen`), authorizing `clients`.
    pub async fn start(
        relay_url: Option<String>,
        listen: bool,
        clients: &[&StaticKeypair],
    ) -> Result<Self> {
        Self::start_configured(relay_url, listen, clients, |_| {}).await
    }

    /// [`TestServer::start`], letting `configure` change the settings
    /// (e.g. give it a metadata store) before it starts.
    pub async fn start_configured(
        relay_url: Option<String>,
        listen: bool,
        clients: &[&StaticKeypair],
        configure: impl FnOnce(&mut ExecServerConfig),
    ) -> Result<Self> {
        let key = StaticKeypair::generate()
            .map_err(|e| FixtureError::start("the exec-server", format!("no key: {e}")))?;
        let mut config = ExecServerConfig::new(
            key.clone(),
            AuthorizedKeys::from_keys(clients.iter().map(|k| k.public())),
        );
        config.relays = relay_url.into_iter().collect();
        config.listen = listen.then(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(&mut config);
        let shutdown = CancellationToken::new();
        let mut handle = exec_server::start(config, shutdown.clone())
            .await
            .map_err(|e| FixtureError::start("the exec-server", e))?;
        if !handle.wait_registered().await {
            return Err(FixtureError::start(
                "the exec-server",
                "it stopped before registering with the relay",
            ));
        }
        Ok(Self {
            key,
            handle,
            shutdown,
        })
    }

    /// The direct URL (when listening).
    pub fn direct_url(&self) -> Result<String> {
        let addr = self
            .handle
            .local_addr()
            .ok_or_else(|| FixtureError::Start {
                what: "the exec-server's direct listener".into(),
                reason: "the exec-server does not listen directly".into(),
            })?;
        Ok(format!("http://{addr}"))
    }
}

/// A relay, one exec-server registered with it, and one authorized client key.
pub struct Stack {
    /// The relay.
    pub relay: TestRelay,
    /// The exec-server.
    pub server: TestServer,
    /// The authorized client key.
    pub client_key: StaticKeypair,
}

impl Stack {
    /// Starts a relay and an exec-server (also listening directly).
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// [`Stack::start`] with the exec-server's settings changed by
    /// `configure` first.
    pub async fn start_with(configure: impl FnOnce(&mut ExecServerConfig)) -> Result<Self> {
        let relay = TestRelay::start().await?;
        let client_key = StaticKeypair::generate()
            .map_err(|e| FixtureError::start("the stack's client", format!("no key: {e}")))?;
        let server =
            TestServer::start_configured(Some(relay.url()), true, &[&client_key], configure)
                .await?;
        Ok(Self {
            relay,
            server,
            client_key,
        })
    }

    /// A client through the relay.
    pub fn client(&self) -> Client {
        Client::new(self.client_config())
    }

    /// Settings for a client through the relay.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(
            self.client_key.clone(),
            self.server.key.public(),
            Target::Relay(self.relay.url()),
        )
    }

    /// A client connected straight to the exec-server.
    pub fn direct_client(&self) -> Result<Client> {
        Ok(Client::new(ClientConfig::new(
            self.client_key.clone(),
            self.server.key.public(),
            Target::Direct(self.server.direct_url()?),
        )))
    }
}
