//! One relay per replica between the database and its event streams: a single LISTEN
//! connection wakes one reader, which reads the feed once for everybody and broadcasts what
//! it read; each stream picks its own events out of that. A stream that falls behind or
//! finds a gap reads the feed itself from its own cursor, so nothing is lost either way.

use std::sync::Arc;
use std::time::Duration;

use domain::event::Position;
use storage::PgPool;
use storage::events::{CHANNEL, FeedFilter, StoredEvent};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

/// Batches kept for streams that are slow to take them; one that falls further behind
/// reads the feed itself.
const BACKLOG: usize = 256;
/// Events the relay reads per query.
const RELAY_PAGE: i64 = 500;
/// The first wait before reading again while committed events are held back behind a
/// running transaction (whose end is not announced unless it wrote events), or after a
/// failed read; it doubles with each further try.
const RETRY_FIRST: Duration = Duration::from_millis(10);
/// The longest such wait.
const RETRY_LONGEST: Duration = Duration::from_secs(1);

/// Events read in one go, with the feed range they cover: every event in `(from, to]`.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Where the read started (exclusive).
    pub from: Position,
    /// Where it ended (inclusive); the next batch starts here.
    pub to: Position,
    /// What it found, in feed order.
    pub events: Vec<StoredEvent>,
}

/// The replica's event relay, stream admission and shutdown signal.
pub struct EventHub {
    batches: broadcast::Sender<Arc<Batch>>,
    wake: Arc<Notify>,
    streams: Arc<Semaphore>,
    closing: watch::Sender<bool>,
}

impl EventHub {
    /// A hub admitting at most `max_streams` streams at once.
    pub(crate) fn new(max_streams: usize) -> Self {
        Self {
            batches: broadcast::channel(BACKLOG).0,
            wake: Arc::new(Notify::new()),
            streams: Arc::new(Semaphore::new(max_streams)),
            closing: watch::channel(false).0,
        }
    }

    /// Ends every event stream of this replica and admits no new one: called on shutdown,
    /// so that the serve loop's drain is not held open by streams that never finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.streams.close();
    }

    /// A slot for one more stream, while there is one.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.streams).try_acquire_owned().ok()
    }

    /// Asks the relay to read the feed: for a new stream, or one that found committed
    /// events held back (the relay then reads again until they pass).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The batches relayed from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.batches.subscribe()
    }

    /// Turns true when the replica shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Subscribes to the events channel (before returning, so no commit after it goes
/// unheard), then runs the listener and the relay.
pub(crate) async fn spawn(
    pool: &PgPool,
    hub: &EventHub,
) -> Result<Vec<JoinHandle<()>>, sqlx::Error> {
    let listener = storage::listen(pool, &[CHANNEL]).await?;
    Ok(vec![
        tokio::spawn(listen(pool.clone(), listener, Arc::clone(&hub.wake))),
        tokio::spawn(relay(
            pool.clone(),
            hub.batches.clone(),
            Arc::clone(&hub.wake),
        )),
    ])
}

/// Wakes the relay on every notification, and after each reconnection (notifications sent
/// while the connection was down are lost, so the relay reads anyway).
async fn listen(pool: PgPool, mut listener: sqlx::postgres::PgListener, wake: Arc<Notify>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            Ok(None) | Err(_) => {
                tracing::warn!("event listener lost its connection; resubscribing");
                listener = loop {
                    match storage::listen(&pool, &[CHANNEL]).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::warn!(%error, "event listener cannot resubscribe yet; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                };
                wake.notify_one();
            }
        }
    }
}

/// Reads the feed when woken (wake-ups that arrive while it reads fold into one more
/// read) and broadcasts each page, empty ones included, so that batches follow on from each
/// other and every stream hears of each read. With no stream listening it reads nothing
/// and forgets its place.
async fn relay(pool: PgPool, batches: broadcast::Sender<Arc<Batch>>, wake: Arc<Notify>) {
    let mut position = None;
    let mut retry: Option<Duration> = None;
    loop {
        match retry {
            Some(pause) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => wake.notified().await,
        }
        if batches.receiver_count() == 0 {
            position = None;
            retry = None;
            continue;
        }
        let again = match read_on(&pool, &batches, &mut position).await {
            Ok(held_back) => held_back,
            Err(error) => {
                tracing::warn!(%error, "event relay cannot read the feed; retrying");
                true
            }
        };
        retry = again.then(|| retry.map_or(RETRY_FIRST, |pause| (pause * 2).min(RETRY_LONGEST)));
    }
}

/// Reads and broadcasts everything after `position` (the horizon when unknown); returns
/// whether committed events are still held back.
async fn read_on(
    pool: &PgPool,
    batches: &broadcast::Sender<Arc<Batch>>,
    position: &mut Option<Position>,
) -> Result<bool, sqlx::Error> {
    let mut from = match *position {
        Some(from) => from,
        None => storage::events::horizon(pool).await?,
    };
    let mut conn = pool.acquire().await?;
    loop {
        let page =
            storage::events::feed(&mut conn, &FeedFilter::default(), from, RELAY_PAGE).await?;
        let full = i64::try_from(page.events.len()).is_ok_and(|read| read >= RELAY_PAGE);
        let to = page.next;
        // Sent even when empty: a stream whose cursor lies before `from` learns from it
        // that it must read the feed itself (the relay started over from the horizon).
        // No receiver left is fine: the next read starts over anyway.
        let _ = batches.send(Arc::new(Batch {
            from,
            to,
            events: page.events,
        }));
        from = to;
        *position = Some(from);
        if !full {
            return Ok(page.held_back);
        }
    }
}
