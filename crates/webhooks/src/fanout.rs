//! Fan-out: each committed event becomes one delivery per enabled endpoint that wants it,
//! read from the events feed after a stored position that moves in the same transaction as
//! the deliveries it produced, so an event is fanned out once even across crashes and
//! replicas.

use chrono::{DateTime, Utc};
use domain::event::{Event, Position, TypeFilter};
use storage::PgPool;
use storage::events::{self, FeedFilter};
use storage::webhooks::deliveries::{self, NewDelivery, Subscriber};

/// The channel new events are announced on.
pub const EVENTS_CHANNEL: &str = events::CHANNEL;

/// Events read per transaction.
const PAGE: i64 = 500;

/// What a fan-out pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Deliveries queued.
    pub queued: u64,
    /// Whether committed events wait behind a transaction still running: run again soon.
    pub held_back: bool,
}

/// The body of a delivery of `event`: Standard Webhooks' `{type, timestamp, data}`, with the
/// event as the feed shows it in `data`.
pub fn payload(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "type": event.event_type,
        "timestamp": event.occurred_at,
        "data": event,
    })
}

struct Wanted {
    subscriber: Subscriber,
    types: TypeFilter,
}

impl Wanted {
    fn of(subscriber: Subscriber) -> Option<Self> {
        let patterns = subscriber.event_types.clone().unwrap_or_default();
        match TypeFilter::parse(patterns.iter().map(String::as_str)) {
            Ok(types) => Some(Self { subscriber, types }),
            Err(_) => {
                tracing::warn!(endpoint = %subscriber.id, "an endpoint's stored event types no longer parse; it gets nothing until they are fixed");
                None
            }
        }
    }

    fn wants(&self, event: &Event) -> bool {
        self.subscriber
            .tenant_id
            .is_none_or(|tenant| event.tenant_id == Some(tenant))
            && self.types.matches(&event.event_type)
            && event.occurred_at >= self.subscriber.created_at
    }
}

/// Fans out every event not fanned out yet, queuing deliveries due at `now`. Does nothing
/// while another replica is fanning out (it takes these events).
pub async fn fan_out(pool: &PgPool, now: DateTime<Utc>) -> Result<FanOut, sqlx::Error> {
    let mut done = FanOut::default();
    loop {
        let mut transaction = storage::begin(pool).await?;
        let Some(stored) = deliveries::lock_fanout_position(&mut transaction).await? else {
            return Ok(done);
        };
        let after = match stored.as_deref().map(Position::from_cursor) {
            Some(Ok(position)) => position,
            None => Position::START,
            Some(Err(_)) => {
                tracing::error!(
                    "the stored fan-out position is not a feed cursor; starting from the current horizon"
                );
                events::horizon(pool).await?
            }
        };
        // Read on a connection of its own: this transaction holds the position row (and so
        // a transaction id), which would hold back the horizon of a read made inside it.
        let mut reader = pool.acquire().await?;
        let page = events::feed(&mut reader, &FeedFilter::default(), after, PAGE).await?;
        drop(reader);
        let wanted: Vec<Wanted> = deliveries::subscribers(&mut transaction)
            .await?
            .into_iter()
            .filter_map(Wanted::of)
            .collect();
        let queued: Vec<NewDelivery> = page
            .events
            .iter()
            .flat_map(|stored| {
                let event = &stored.event;
                wanted
                    .iter()
                    .filter(|endpoint| endpoint.wants(event))
                    .map(|endpoint| NewDelivery {
                        endpoint_id: endpoint.subscriber.id,
                        event_id: Some(event.id),
                        message_id: event.id.to_string(),
                        event_type: event.event_type.clone(),
                        payload: payload(event),
                    })
            })
            .collect();
        done.queued += deliveries::enqueue(&mut transaction, &queued, now).await?;
        deliveries::set_fanout_position(&mut transaction, &page.next.cursor()).await?;
        storage::commit(transaction).await?;
        done.held_back = page.held_back;
        if i64::try_from(page.events.len()).unwrap_or(0) < PAGE {
            return Ok(done);
        }
    }
}
