//! A database that goes away under a running service, without touching the shared server:
//! the service reaches its database through a TCP relay that the test cuts ([`DbRelay`]),
//! or the test runs a PostgreSQL server of its own that it stops and starts ([`OwnServer`]).

use std::path::Path;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use url::Url;

/// A relay from a loopback port to a test database's server.
pub struct DbRelay {
    url: String,
    port: u16,
    upstream: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Relays every connection `listener` accepts to `upstream` until `stopping` changes; the
/// relayed connections end with the task.
fn relay(
    listener: TcpListener,
    upstream: String,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Dropped with the task: aborts every relayed connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stopping.changed() => return,
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { continue };
                    let upstream = upstream.clone();
                    connections.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        }
    })
}

impl DbRelay {
    /// Relays to the server of `database_url`; [`DbRelay::url`] names the same database
    /// through the relay.
    pub async fn start(database_url: &str) -> Self {
        let mut url = Url::parse(database_url).expect("a database URL");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(port)).expect("a port");
        let (stop, stopping) = watch::channel(false);
        let task = relay(listener, upstream.clone(), stopping);
        Self {
            url: url.into(),
            port,
            upstream,
            stop,
            task: Some(task),
        }
    }

    /// The database's URL through the relay.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database goes away: every open connection breaks, and new ones are refused.
    pub async fn cut(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The database comes back on the same address.
    ///
    /// # Panics
    /// When the relay is running, or its port was taken meanwhile.
    pub async fn resume(&mut self) {
        assert!(self.task.is_none(), "the relay is running");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the relay's port again");
        let (stop, stopping) = watch::channel(false);
        self.stop = stop;
        self.task = Some(relay(listener, self.upstream.clone(), stopping));
    }
}

impl Drop for DbRelay {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A PostgreSQL server only this test uses, in `target/<name>` of the project, on a free
/// loopback port; stopped when dropped (its data stays for the next run).
pub struct OwnServer {
    cluster: devcluster::Cluster,
}

impl OwnServer {
    /// Starts the cluster `name` (initialising it on first use). Name it after the test:
    /// two tests running at once must not share one.
    pub async fn start(name: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cluster = devcluster::Cluster::named(&root, name, crate::serving::free_port())
            .unwrap_or_else(|error| panic!("cluster {name}: {error}"));
        let server = Self { cluster };
        server.blocking(devcluster::Cluster::restart).await;
        server
    }

    /// Like [`OwnServer::start`], the server serving TLS with `cert_pem` and `key_pem`.
    pub async fn start_with_tls(name: &str, cert_pem: &str, key_pem: &str) -> Self {
        let server = Self::start(name).await;
        let cluster = server.cluster.clone();
        let (cert_pem, key_pem) = (cert_pem.to_owned(), key_pem.to_owned());
        tokio::task::spawn_blocking(move || cluster.use_tls(&cert_pem, &key_pem))
            .await
            .expect("the certificates were written")
            .unwrap_or_else(|error| panic!("{error}"));
        server.blocking(devcluster::Cluster::restart).await;
        server
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// Stops the server as an operator's fast shutdown does: every session is ended, new
    /// connections are refused, committed data stays.
    pub async fn stop(&self) {
        self.blocking(devcluster::Cluster::stop).await;
    }

    /// Starts the stopped server again on the same port.
    pub async fn start_again(&self) {
        self.blocking(|cluster| cluster.ensure_running().map(drop))
            .await;
    }

    async fn blocking(
        &self,
        action: fn(&devcluster::Cluster) -> Result<(), devcluster::ClusterError>,
    ) {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || action(&cluster))
            .await
            .expect("the cluster tool ran")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.stop() {
            eprintln!("warning: test cluster not stopped: {error}");
        }
    }
}
