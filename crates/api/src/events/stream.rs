//! One Server-Sent Events stream: catches up from its cursor, then follows the replica's
//! relay, reading the feed itself whenever the relay's batches do not follow on from its
//! cursor (it fell behind, or the relay started over). A heartbeat comment goes out after
//! each quiet interval; the caller's credential is checked again before events are sent
//! and at each heartbeat, and the stream ends when it no longer authenticates, when the
//! replica shuts down, or when the database cannot be read (the client resumes with
//! `Last-Event-ID`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use domain::Scope;
use domain::event::Position;
use futures::Stream;
use storage::events::{FeedFilter, FeedPage, StoredEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::hub::Batch;
use crate::AppState;

/// Events a stream reads per query when it catches up.
const CATCH_UP_PAGE: i64 = 500;

/// What a stream has queued and how far it has looked: every matching event up to
/// `cursor` is queued or sent.
#[derive(Debug)]
pub(crate) struct Follow {
    filter: FeedFilter,
    cursor: Position,
    pending: VecDeque<StoredEvent>,
    behind: bool,
}

impl Follow {
    /// A follower starting after `cursor`; `behind` when the feed must be read from there
    /// before the relay's batches are of use.
    pub(crate) fn new(filter: FeedFilter, cursor: Position, behind: bool) -> Self {
        Self {
            filter,
            cursor,
            pending: VecDeque::new(),
            behind,
        }
    }

    /// Takes the matching events of a relayed batch, or notes that the feed must be read
    /// when the batch starts after the cursor (what lies between was never seen).
    pub(crate) fn on_batch(&mut self, batch: &Batch) {
        if batch.to <= self.cursor || self.behind {
            return;
        }
        if batch.from > self.cursor {
            self.behind = true;
            return;
        }
        let (cursor, filter) = (self.cursor, &self.filter);
        self.pending.extend(
            batch
                .events
                .iter()
                .filter(|stored| stored.position > cursor && filter.matches(&stored.event))
                .cloned(),
        );
        self.cursor = batch.to;
    }

    /// The relay's batches were dropped before this stream took them.
    pub(crate) fn on_lagged(&mut self) {
        self.behind = true;
    }

    /// Takes a page read from the feed after the cursor; a full page means more follow.
    pub(crate) fn on_page(&mut self, page: FeedPage, limit: i64) {
        self.behind = i64::try_from(page.events.len()).is_ok_and(|read| read >= limit);
        self.pending.extend(page.events);
        self.cursor = self.cursor.max(page.next);
    }

    /// The next event to send.
    pub(crate) fn next_event(&mut self) -> Option<StoredEvent> {
        self.pending.pop_front()
    }
}

/// Everything one stream holds while it runs.
pub(crate) struct Subscription {
    state: AppState,
    follow: Follow,
    batches: broadcast::Receiver<Arc<Batch>>,
    closing: watch::Receiver<bool>,
    /// The bearer credential the stream was opened with, and the tenant it was bound to.
    credential: String,
    tenant_id: Option<Uuid>,
    /// Whether the credential was checked since events were last queued.
    verified: bool,
    heartbeat: Duration,
    heartbeat_due: Instant,
    /// Holds the stream's place among the replica's streams until it ends.
    _slot: OwnedSemaphorePermit,
}

/// What woke a waiting stream.
enum Woken {
    Closing,
    Relay(Result<Arc<Batch>, RecvError>),
    Quiet,
}

/// What the stream sends next, or why it ends.
enum Step {
    Send(SseEvent),
    End,
}

impl Subscription {
    /// A stream for `credential` (which authenticated a principal of `tenant_id`), taking
    /// `batches` from the relay; `slot` is its admission.
    pub(crate) fn new(
        state: AppState,
        follow: Follow,
        batches: broadcast::Receiver<Arc<Batch>>,
        credential: String,
        tenant_id: Option<Uuid>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let heartbeat = state.settings.events.heartbeat;
        Self {
            closing: state.events.closing(),
            state,
            follow,
            batches,
            credential,
            tenant_id,
            verified: true,
            heartbeat,
            heartbeat_due: Instant::now() + heartbeat,
            _slot: slot,
        }
    }

    /// Whether the credential the stream was opened with still authenticates a principal
    /// of the same tenant that may read events (revoked, expired and archived ones do not).
    async fn still_authorized(&mut self) -> bool {
        let tenant_id = self.tenant_id;
        self.verified = crate::extract::verify_credential(&self.credential, &self.state)
            .await
            .is_ok_and(|principal| {
                principal.tenant_id == tenant_id && principal.allows(Scope::EventsRead)
            });
        self.verified
    }

    async fn step(&mut self) -> Step {
        loop {
            if let Some(stored) = self.follow.next_event() {
                if !self.verified && !self.still_authorized().await {
                    return Step::End;
                }
                self.heartbeat_due = Instant::now() + self.heartbeat;
                return match SseEvent::default()
                    .id(stored.position.cursor())
                    .event(stored.event.event_type.as_str())
                    .json_data(&stored.event)
                {
                    Ok(event) => Step::Send(event),
                    Err(error) => {
                        tracing::error!(%error, "an event could not be written to a stream");
                        Step::End
                    }
                };
            }
            if self.follow.behind {
                match self.read_feed().await {
                    Ok(page) => {
                        if page.held_back {
                            self.state.events.wake();
                        }
                        self.follow.on_page(page, CATCH_UP_PAGE);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "an event stream cannot read the feed; ending it");
                        return Step::End;
                    }
                }
                self.verified = false;
                continue;
            }
            let woken = tokio::select! {
                biased;
                _ = self.closing.wait_for(|closing| *closing) => Woken::Closing,
                received = self.batches.recv() => Woken::Relay(received),
                () = tokio::time::sleep_until(self.heartbeat_due) => Woken::Quiet,
            };
            match woken {
                Woken::Closing | Woken::Relay(Err(RecvError::Closed)) => return Step::End,
                Woken::Relay(Err(RecvError::Lagged(_))) => self.follow.on_lagged(),
                Woken::Relay(Ok(batch)) => {
                    self.follow.on_batch(&batch);
                    self.verified = false;
                }
                Woken::Quiet => {
                    if !self.still_authorized().await {
                        return Step::End;
                    }
                    self.heartbeat_due = Instant::now() + self.heartbeat;
                    return Step::Send(SseEvent::default().comment("heartbeat"));
                }
            }
        }
    }

    async fn read_feed(&self) -> Result<FeedPage, sqlx::Error> {
        let mut conn = self.state.pool.acquire().await?;
        storage::events::feed(
            &mut conn,
            &self.follow.filter,
            self.follow.cursor,
            CATCH_UP_PAGE,
        )
        .await
    }

    /// The stream's body: SSE events until it ends.
    pub(crate) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
        futures::stream::unfold(self, |mut subscription| async move {
            match subscription.step().await {
                Step::Send(event) => Some((Ok(event), subscription)),
                Step::End => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::event::{Event, TypeFilter};

    use super::*;

    fn stored(xact: i64, seq: i64, event_type: &str) -> StoredEvent {
        StoredEvent {
            position: Position { xact, seq },
            event: Event {
                id: Uuid::new_v4(),
                event_type: event_type.to_owned(),
                occurred_at: chrono::Utc::now(),
                tenant_id: None,
                data: serde_json::Map::new(),
            },
        }
    }

    fn at(xact: i64, seq: i64) -> Position {
        Position { xact, seq }
    }

    fn drain(follow: &mut Follow) -> Vec<Position> {
        std::iter::from_fn(|| follow.next_event())
            .map(|stored| stored.position)
            .collect()
    }

    #[test]
    fn a_batch_that_follows_on_is_taken_from_the_cursor_on() {
        let mut follow = Follow::new(FeedFilter::default(), at(10, 5), false);
        follow.on_batch(&Batch {
            from: at(9, 0),
            to: at(12, 9),
            events: vec![
                stored(10, 4, "tenant.created"),
                stored(11, 7, "tenant.updated"),
            ],
        });
        assert_eq!(drain(&mut follow), [at(11, 7)]);
        assert!(!follow.behind);
        assert_eq!(follow.cursor, at(12, 9));
    }

    #[test]
    fn a_batch_after_a_gap_sends_the_stream_to_the_feed() {
        let mut follow = Follow::new(FeedFilter::default(), at(10, 5), false);
        follow.on_batch(&Batch {
            from: at(11, 0),
            to: at(12, 9),
            events: vec![stored(11, 7, "tenant.updated")],
        });
        assert_eq!(drain(&mut follow), []);
        assert!(
            follow.behind,
            "what lies between 10/5 and 11/0 was never seen"
        );
        assert_eq!(follow.cursor, at(10, 5));
    }

    #[test]
    fn a_lagging_stream_reads_the_feed_and_takes_nothing_twice() {
        let mut follow = Follow::new(FeedFilter::default(), at(10, 5), false);
        follow.on_lagged();
        assert!(follow.behind);
        follow.on_page(
            FeedPage {
                events: vec![stored(11, 1, "tenant.created")],
                next: at(13, i64::MAX),
                held_back: false,
            },
            CATCH_UP_PAGE,
        );
        assert!(!follow.behind);
        // A batch the relay sent before the lag, now wholly behind the cursor.
        follow.on_batch(&Batch {
            from: at(10, 0),
            to: at(12, 0),
            events: vec![stored(11, 1, "tenant.created")],
        });
        assert_eq!(drain(&mut follow), [at(11, 1)]);
    }

    #[test]
    fn a_full_page_leaves_the_stream_catching_up() {
        let mut follow = Follow::new(FeedFilter::default(), Position::START, true);
        follow.on_page(
            FeedPage {
                events: vec![
                    stored(1, 1, "tenant.created"),
                    stored(1, 2, "tenant.updated"),
                ],
                next: at(1, 2),
                held_back: false,
            },
            2,
        );
        assert!(follow.behind);
        assert_eq!(follow.cursor, at(1, 2));
    }

    #[test]
    fn batches_are_filtered_like_the_feed() {
        let filter = FeedFilter {
            types: TypeFilter::parse(["project.*"]).expect("valid"),
            tenant_id: None,
        };
        let mut follow = Follow::new(filter, Position::START, false);
        follow.on_batch(&Batch {
            from: Position::START,
            to: at(3, 3),
            events: vec![
                stored(1, 1, "tenant.created"),
                stored(2, 2, "project.created"),
            ],
        });
        assert_eq!(drain(&mut follow), [at(2, 2)]);
    }
}
