//! A database that goes away under a running service, without touching the shared server:
//! the service reaches its database through a TCP relay that the test cuts.

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
