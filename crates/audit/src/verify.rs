//! Checking a chain: recomputing its events' hashes, comparing its checkpoints with the
//! events stored at their positions, and reporting every broken range, not only the first.
//!
//! Every event is checked on its own: its stored previous hash must be the stored hash of
//! the event before it, and its stored hash must be the hash of its content after that
//! previous hash. So one edited row shows as one broken range, and checking goes on to find
//! the next one.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use storage::audit::{CheckpointState, EventRow, GENESIS};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every this many events of a chain, the append records a checkpoint (the V13 migration
/// and its constraint use the same number).
pub const CHECKPOINT_EVERY: i64 = 1000;

/// The most events one full verification request recomputes; `next_after_seq` goes on.
pub const FULL_PAGE: i64 = 50 * CHECKPOINT_EVERY;

/// Events read per round trip (and hashed per blocking task).
const READ_PAGE: i64 = 2000;

/// How much of a chain a verification recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every checkpoint against the event stored at its position, then the events after
    /// the newest checkpoint. Finds a chain rewritten from any earlier point on, and any
    /// change after the newest checkpoint; it does not recompute older events.
    Incremental,
    /// Every event from the retention anchor (or `after_seq`), at most [`FULL_PAGE`] per
    /// request, each compared with the checkpoints on its way.
    Full,
}

/// What is wrong with a range of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No event is stored at these positions: rows were deleted.
    MissingEvents,
    /// An event's previous hash is not the stored hash of the event before it: rows were
    /// re-linked, reordered, or an earlier one was rewritten with its hash.
    PreviousHashMismatch,
    /// An event's content does not hash to its stored hash: the row was changed.
    ContentChanged,
    /// A checkpoint is missing, or records another hash than the event stored at its
    /// position: the chain was rewritten up to there.
    CheckpointMismatch,
    /// The chain head names positions or a last hash the stored events do not end with: the
    /// newest rows were deleted or replaced.
    TailMissing,
}

/// Consecutive positions broken for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BrokenRange {
    /// The first position.
    pub from_seq: i64,
    /// The last position (equal to `from_seq` for one event).
    pub to_seq: i64,
    /// The stored event at `from_seq`, when there is one.
    pub first_id: Option<i64>,
    /// What is wrong.
    pub reason: Reason,
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// Whether nothing checked is broken.
    pub ok: bool,
    /// How much was checked.
    pub mode: Mode,
    /// The first position recomputed.
    pub from_seq: i64,
    /// The last position recomputed (the head, unless a full check goes on).
    pub through_seq: i64,
    /// Events recomputed.
    pub events_checked: u64,
    /// Checkpoints compared with the events at their positions.
    pub checkpoints_checked: u64,
    /// Every broken range, in position order (empty when ok).
    pub broken: Vec<BrokenRange>,
    /// Full mode: pass as `after_seq` to check the next part; null when the head was
    /// reached.
    pub next_after_seq: Option<i64>,
}

/// Why a chain could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `after_seq` is not where a full check can go on from.
    #[error(
        "must be the retention anchor or a checkpoint position (a multiple of {CHECKPOINT_EVERY}) up to the chain's head: a next_after_seq this endpoint returned"
    )]
    NotACheckpoint,
    /// Reading the chain failed (or ran out of time: SQLSTATE 57014).
    #[error("reading the chain: {0}")]
    Database(#[from] sqlx::Error),
    /// The hashing task did not finish.
    #[error("hashing the chain: {0}")]
    Hashing(#[from] tokio::task::JoinError),
}

/// Checks the chain of `key` (a tenant id, or the nil uuid for events of no tenant) in
/// `mode`; a full check starts after `after_seq` when given. Reads one snapshot, each
/// statement cancelled after `statement_timeout`; hashes on the blocking pool.
#[tracing::instrument(
    level = "info",
    name = "db.audit_verify",
    skip_all,
    fields(otel.name = "db audit chain check", db.system.name = "postgresql")
)]
pub async fn verify(
    pool: &PgPool,
    key: Uuid,
    mode: Mode,
    after_seq: Option<i64>,
    statement_timeout: Duration,
) -> Result<Verification, VerifyError> {
    let mut snapshot = storage::begin_bounded(pool, statement_timeout).await?;
    let head = storage::audit::chain_head(&mut snapshot, key).await?;
    let (last_seq, last_hash, anchor_seq, anchor_hash) =
        head.map_or((0, GENESIS.to_vec(), 0, GENESIS.to_vec()), |head| {
            (
                head.last_seq,
                head.last_hash,
                head.pruned_seq,
                head.pruned_hash,
            )
        });
    let (start_seq, start_hash, through_seq, checkpoints) = match mode {
        Mode::Incremental => {
            let checkpoints = storage::audit::checkpoints(
                &mut snapshot,
                key,
                CHECKPOINT_EVERY,
                anchor_seq,
                last_seq,
            )
            .await?;
            let newest = checkpoints
                .iter()
                .rev()
                .find_map(|point| Some((point.chain_seq, point.recorded.clone()?)));
            let (seq, hash) = newest.unwrap_or((anchor_seq, anchor_hash));
            (seq, Some(hash), last_seq, checkpoints)
        }
        Mode::Full => {
            let start = after_seq.unwrap_or(anchor_seq).max(anchor_seq);
            if start > last_seq || (start != anchor_seq && start % CHECKPOINT_EVERY != 0) {
                return Err(VerifyError::NotACheckpoint);
            }
            let through = ((start + FULL_PAGE) / CHECKPOINT_EVERY * CHECKPOINT_EVERY).min(last_seq);
            let checkpoints =
                storage::audit::checkpoints(&mut snapshot, key, CHECKPOINT_EVERY, start, through)
                    .await?;
            let start_hash = if start == anchor_seq {
                Some(anchor_hash)
            } else {
                storage::audit::checkpoints(&mut snapshot, key, CHECKPOINT_EVERY, start - 1, start)
                    .await?
                    .pop()
                    .and_then(|point| point.recorded)
            };
            (start, start_hash, through, checkpoints)
        }
    };
    let mut checker = Checker::new(start_seq, start_hash);
    checker.compare(&checkpoints);
    let mut after = start_seq;
    while after < through_seq {
        let rows =
            storage::audit::chain_page(&mut snapshot, key, after, through_seq, READ_PAGE).await?;
        let Some(last) = rows.last().and_then(|row| row.chain_seq) else {
            break;
        };
        after = last;
        checker = tokio::task::spawn_blocking(move || {
            for row in &rows {
                checker.check(row);
            }
            checker
        })
        .await?;
    }
    if through_seq == last_seq {
        checker.end_at(last_seq, &last_hash);
    }
    Ok(checker.outcome(
        mode,
        through_seq,
        (through_seq < last_seq).then_some(through_seq),
    ))
}

/// The running state of a check.
struct Checker {
    from_seq: i64,
    expected_seq: i64,
    previous: Option<Vec<u8>>,
    events_checked: u64,
    checkpoints_checked: u64,
    broken: Vec<BrokenRange>,
}

impl Checker {
    /// Starts after position `seq`, whose hash is `hash` (unknown: the first event's link
    /// is not checked).
    fn new(seq: i64, hash: Option<Vec<u8>>) -> Self {
        Self {
            from_seq: seq + 1,
            expected_seq: seq + 1,
            previous: hash,
            events_checked: 0,
            checkpoints_checked: 0,
            broken: Vec::new(),
        }
    }

    fn report(&mut self, from_seq: i64, to_seq: i64, first_id: Option<i64>, reason: Reason) {
        if let Some(last) = self.broken.last_mut()
            && last.reason == reason
            && last.to_seq + 1 == from_seq
        {
            last.to_seq = to_seq;
            return;
        }
        self.broken.push(BrokenRange {
            from_seq,
            to_seq,
            first_id,
            reason,
        });
    }

    /// Each checkpoint against the event stored at its position.
    fn compare(&mut self, checkpoints: &[CheckpointState]) {
        for point in checkpoints {
            self.checkpoints_checked += 1;
            if point.recorded.is_none() || point.recorded != point.stored {
                self.report(
                    point.chain_seq,
                    point.chain_seq,
                    point.event_id,
                    Reason::CheckpointMismatch,
                );
            }
        }
    }

    /// One stored event, the next one read in position order.
    fn check(&mut self, row: &EventRow) {
        let seq = row.chain_seq.unwrap_or_default();
        if seq > self.expected_seq {
            self.report(self.expected_seq, seq - 1, None, Reason::MissingEvents);
            self.previous = None;
        }
        let stored = row.hash.clone().unwrap_or_default();
        let linked_to = row.prev_hash.clone().unwrap_or_default();
        let reason = if self
            .previous
            .as_ref()
            .is_some_and(|previous| *previous != linked_to)
        {
            Some(Reason::PreviousHashMismatch)
        } else if crate::hash(&linked_to, row) != stored {
            Some(Reason::ContentChanged)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.report(seq, seq, Some(row.id), reason);
        }
        self.previous = Some(stored);
        self.expected_seq = seq + 1;
        self.events_checked += 1;
    }

    /// The stored events must end where the head says, with the hash it says.
    fn end_at(&mut self, last_seq: i64, last_hash: &[u8]) {
        if self.expected_seq <= last_seq {
            self.report(self.expected_seq, last_seq, None, Reason::TailMissing);
        } else if self.expected_seq > self.from_seq && self.previous.as_deref() != Some(last_hash) {
            self.report(last_seq, last_seq, None, Reason::TailMissing);
        }
    }

    fn outcome(
        mut self,
        mode: Mode,
        through_seq: i64,
        next_after_seq: Option<i64>,
    ) -> Verification {
        self.broken
            .sort_by_key(|range| (range.from_seq, range.to_seq));
        Verification {
            ok: self.broken.is_empty(),
            mode,
            from_seq: self.from_seq,
            through_seq,
            events_checked: self.events_checked,
            checkpoints_checked: self.checkpoints_checked,
            broken: self.broken,
            next_after_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use sqlx::types::Json;

    /// A chain of `count` events built the way `append` builds one.
    fn chain(count: i64) -> Vec<EventRow> {
        let mut previous = GENESIS.to_vec();
        (1..=count)
            .map(|seq| {
                let mut row = EventRow {
                    id: seq * 10,
                    action: format!("doc.{seq}"),
                    crud: "r".to_owned(),
                    actor_fields: Json(serde_json::json!({})),
                    target_fields: Json(serde_json::json!({})),
                    fields: Json(serde_json::json!({})),
                    created_at: Utc.timestamp_opt(1_700_000_000 + seq, 0).unwrap(),
                    received_at: Utc.timestamp_opt(1_700_000_000 + seq, 0).unwrap(),
                    chain_key: Some(Uuid::nil()),
                    chain_seq: Some(seq),
                    prev_hash: Some(previous.clone()),
                    ..EventRow::default()
                };
                let hash = crate::hash(&previous, &row);
                row.hash = Some(hash.clone());
                previous = hash;
                row
            })
            .collect()
    }

    fn checked(rows: &[EventRow], last_seq: i64) -> Vec<BrokenRange> {
        let head = rows
            .iter()
            .find(|row| row.chain_seq == Some(last_seq))
            .and_then(|row| row.hash.clone())
            .unwrap_or_default();
        let mut checker = Checker::new(0, Some(GENESIS.to_vec()));
        for row in rows {
            checker.check(row);
        }
        checker.end_at(last_seq, &head);
        checker.outcome(Mode::Full, last_seq, None).broken
    }

    fn range(from_seq: i64, to_seq: i64, first_id: Option<i64>, reason: Reason) -> BrokenRange {
        BrokenRange {
            from_seq,
            to_seq,
            first_id,
            reason,
        }
    }

    #[test]
    fn an_intact_chain_has_no_broken_range() {
        assert_eq!(checked(&chain(5), 5), vec![]);
    }

    #[test]
    fn every_edit_is_reported_not_only_the_first() {
        let mut rows = chain(9);
        rows[1].description = Some("edited".to_owned());
        rows[5].description = Some("edited too".to_owned());
        rows[6].description = Some("and this".to_owned());
        assert_eq!(
            checked(&rows, 9),
            vec![
                range(2, 2, Some(20), Reason::ContentChanged),
                range(6, 7, Some(60), Reason::ContentChanged),
            ]
        );
    }

    #[test]
    fn a_rehashed_edit_shows_at_the_next_link_and_gaps_as_missing_events() {
        let mut rows = chain(8);
        rows[2].description = Some("edited".to_owned());
        let rehashed = crate::hash(rows[2].prev_hash.as_deref().unwrap(), &rows[2]);
        rows[2].hash = Some(rehashed);
        rows.remove(5);
        assert_eq!(
            checked(&rows, 8),
            vec![
                range(4, 4, Some(40), Reason::PreviousHashMismatch),
                range(6, 6, None, Reason::MissingEvents),
            ]
        );
    }

    #[test]
    fn deleted_newest_events_show_as_a_missing_tail() {
        let rows = chain(6);
        assert_eq!(
            checked(&rows[..4], 6),
            vec![range(5, 6, None, Reason::TailMissing)]
        );
    }
}
