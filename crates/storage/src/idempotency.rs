//! Stored first responses to POSTs that carried an `Idempotency-Key`, one record per
//! principal, method, path and key, replayed for 24 h and then swept. The body arrives here
//! already sealed: this module never sees a response in clear.
//!
//! A claim names the server process that holds it ([`Holder`]): a claim whose holder is gone
//! (killed with SIGKILL, crashed, cut off from the database) frees its key at once (age frees
//! only claims made before holders were recorded, after [`ABANDONED_AFTER_SECS`]); and a
//! process knows which of its own claims its requests still work on ([`InFlight`]), so a claim of its own that none does (its commit went
//! through, but the answer was lost with the connection) frees its key too.
//!
//! A request's change marks its claim in the change's own transaction ([`crate::commit`] inside
//! [`ClaimScope::run`]): a claim so marked is never freed for a retry, since its change is
//! made. If the answer never got stored (the process died between the commit and storing
//! it), a retry gets [`Claim::AnswerLost`] instead of making the change a second time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

/// How long a stored response is replayed.
pub const RETENTION_HOURS: i32 = 24;
/// How long a claim made before holders were recorded (V20) may stay without a response
/// before it counts as abandoned; claims with a holder are freed only when it is gone.
pub const ABANDONED_AFTER_SECS: f64 = 300.0;

/// How often the holder checks that its session (and so its lock) is still there.
const HOLDER_PING_EVERY: Duration = Duration::from_secs(1);
/// The first wait before the holder reconnects; it doubles up to the next bound.
const HOLDER_RETRY_FIRST: Duration = Duration::from_millis(100);
const HOLDER_RETRY_MAX: Duration = Duration::from_secs(1);

/// This process's part in every claim it makes: a random key on which it holds a session
/// advisory lock, on a connection of its own, for as long as it lives. The database ends the
/// lock with the session, so another process sees a claim's holder is gone the moment its
/// process dies, without a lease to wait out. Cloning shares the holder.
#[derive(Clone)]
pub struct Holder(Arc<HolderShared>);

struct HolderShared {
    key: i64,
    /// Asks the holding task to check its session now (a claim found the lock free).
    check_now: Notify,
    /// How many of this process's requests work on each record ([`InFlight`]).
    in_flight: Mutex<HashMap<OwnedId, usize>>,
}

type OwnedId = (String, String, String, String);

/// One request of this process at work on record `id`: from before it claims the record
/// until its claim is settled, its answer stored or its key released (in the background
/// too). While none is, a claim of this process on the record is stranded.
pub struct InFlight {
    holder: Holder,
    id: OwnedId,
}

impl InFlight {
    /// The record.
    pub fn id(&self) -> RecordId<'_> {
        RecordId {
            principal: &self.id.0,
            method: &self.id.1,
            path: &self.id.2,
            key: &self.id.3,
        }
    }

    fn alone(&self) -> bool {
        self.holder.counts().get(&self.id) == Some(&1)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.holder.counts();
        if let Some(count) = in_flight.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.id);
            }
        }
    }
}

impl Holder {
    /// Takes a fresh key's lock on a connection like `pool`'s; the returned task keeps it,
    /// taking it again whenever the session is lost, until the task is aborted.
    pub async fn start(pool: &PgPool) -> Result<(Self, tokio::task::JoinHandle<()>), sqlx::Error> {
        let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
        let holder = Self(Arc::new(HolderShared {
            key: i64::from_ne_bytes(high.to_ne_bytes()),
            check_now: Notify::new(),
            in_flight: Mutex::default(),
        }));
        let options = pool.connect_options();
        let session = take_lock(&options, holder.key()).await?;
        let task = tokio::spawn(hold(options, session, holder.clone()));
        Ok((holder, task))
    }

    /// The advisory lock key claims of this process record.
    pub fn key(&self) -> i64 {
        self.0.key
    }

    /// A request of this process starts work on record `id`.
    pub fn in_flight(&self, id: &RecordId<'_>) -> InFlight {
        let owned: OwnedId = (
            id.principal.to_owned(),
            id.method.to_owned(),
            id.path.to_owned(),
            id.key.to_owned(),
        );
        *self.counts().entry(owned.clone()).or_default() += 1;
        InFlight {
            holder: self.clone(),
            id: owned,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedId, usize>> {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn hold(options: Arc<PgConnectOptions>, mut session: PgConnection, holder: Holder) {
    loop {
        loop {
            tokio::select! {
                () = tokio::time::sleep(HOLDER_PING_EVERY) => {}
                () = holder.0.check_now.notified() => {}
            }
            if let Err(error) = session.ping().await {
                tracing::warn!(%error, "lost the idempotency holder session; taking the lock again");
                break;
            }
        }
        let mut wait = HOLDER_RETRY_FIRST;
        session = loop {
            match take_lock(&options, holder.key()).await {
                Ok(session) => break session,
                Err(error) => {
                    tracing::debug!(%error, "cannot take the idempotency holder lock yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(HOLDER_RETRY_MAX);
                }
            }
        };
    }
}

async fn take_lock(options: &PgConnectOptions, key: i64) -> Result<PgConnection, sqlx::Error> {
    let mut session = PgConnection::connect_with(options).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut session)
        .await?;
    if locked {
        Ok(session)
    } else {
        Err(sqlx::Error::Protocol(format!(
            "idempotency holder key {key} is held by another session"
        )))
    }
}

/// Which record a request claims: the same key from another principal, or on another
/// method or path, is another record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId<'a> {
    /// The owner (`Principal::owner_id`): kind, tenant and key id or OIDC subject.
    pub principal: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path, without the query (which is part of the request digest).
    pub path: &'a str,
    /// The `Idempotency-Key` header.
    pub key: &'a str,
}

/// What a new request with a key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody used the key (or its record expired): run the request, then [`complete`].
    Fresh,
    /// The same request ran before: replay this response.
    Replay {
        /// Status code.
        status: u16,
        /// Headers worth replaying (name → value).
        headers: serde_json::Map<String, serde_json::Value>,
        /// The body as [`complete`] stored it (sealed).
        sealed_body: Vec<u8>,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// The first request's change committed, but its answer was never stored (its process
    /// died, or its answer was a failure, in between): the change is not made again.
    AnswerLost,
}

tokio::task_local! {
    static CLAIM_IN_SCOPE: (OwnedId, Uuid);
}

/// The claim of the request being served, for the changes it commits to mark.
pub struct ClaimScope {
    id: OwnedId,
    token: Uuid,
}

impl ClaimScope {
    /// The claim of record `id` made as `token`.
    pub fn new(id: &RecordId<'_>, token: Uuid) -> Self {
        Self {
            id: (
                id.principal.to_owned(),
                id.method.to_owned(),
                id.path.to_owned(),
                id.key.to_owned(),
            ),
            token,
        }
    }

    /// Runs `work` (the request) with this claim in scope: each transaction it commits with
    /// [`crate::commit`] marks the claim in that transaction.
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        CLAIM_IN_SCOPE.scope((self.id, self.token), work).await
    }
}

/// Marks the claim in scope (if any) as having committed its change, on `conn`, inside the
/// change's transaction ([`crate::commit`] does, just before committing).
pub(crate) async fn mark_claim_in_scope(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let Ok(((principal, method, path, key), token)) = CLAIM_IN_SCOPE.try_with(Clone::clone) else {
        return Ok(());
    };
    let id = RecordId {
        principal: &principal,
        method: &method,
        path: &path,
        key: &key,
    };
    // Locks the claim row until the change commits: a retry taking the claim over waits for
    // the commit (and then finds it marked), or took it first (and this change rolls back).
    let marked = bind_id(
        sqlx::query(&format!(
            "UPDATE idempotency_records SET change_committed_at = coalesce(change_committed_at, now())
             WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM}"
        )),
        &id,
    )
    .bind(token)
    .execute(conn)
    .await?
    .rows_affected();
    if marked == 1 {
        Ok(())
    } else {
        // Another request owns the key now (this one's claim counted as abandoned): making
        // the change here too would make it twice. Unavailable, so the client retries and
        // meets that request's answer.
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "this request's idempotency claim was taken over by a retry; its change is not made",
        )))
    }
}

#[derive(sqlx::FromRow)]
struct StoredResponse {
    request_hash: String,
    status: Option<i16>,
    headers: Json<serde_json::Map<String, serde_json::Value>>,
    sealed_body: Option<Vec<u8>>,
    answer_lost: bool,
}

const WHERE_RECORD: &str = "principal = $1 AND method = $2 AND path = $3 AND key = $4";
/// A claim still running, and `$5`'s.
const WHERE_OWN_CLAIM: &str = "status IS NULL AND claim_token = $5";
/// A claim without an answer that no request works on any more, its parameters numbered
/// from `$first`: a claim made before holders were recorded that is older than any request
/// runs (`$first` seconds; age frees no other claim, since a live holder's request may run
/// longer); it is this process's (`$first + 1`) and no request here works on it
/// (`$first + 2`); or its holder's lock is free (the process is gone).
fn abandoned(first: usize) -> String {
    let (mine, stranded) = (first + 1, first + 2);
    format!(
        "(holder IS NULL AND created_at < now() - make_interval(secs => ${first}))
         OR (holder = ${mine} AND ${stranded})
         OR (holder IS NOT NULL AND pg_try_advisory_xact_lock_shared(holder))"
    )
}

fn bind_id<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    id: &RecordId<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(id.principal)
        .bind(id.method)
        .bind(id.path)
        .bind(id.key)
}

/// Claims `request`'s record for the request digest `request_hash`, held by this process; a
/// fresh claim is `token`'s, and only `token` completes or releases it.
///
/// Fails as unavailable (an I/O error) while this process's holder has lost its lock: a
/// claim made then would look abandoned to every other process.
pub async fn claim(
    pool: &PgPool,
    request: &InFlight,
    request_hash: &str,
    token: Uuid,
) -> Result<Claim, sqlx::Error> {
    let (holder, id) = (&request.holder, &request.id());
    let stranded_if_ours = request.alone();
    let mut transaction = crate::begin(pool).await?;
    // Shared: probes of one holder's lock never get in each other's way, only a live
    // holder's (exclusive) lock turns them down.
    let holder_gone: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock_shared($1)")
        .bind(holder.key())
        .fetch_one(&mut *transaction)
        .await?;
    if holder_gone {
        // Now, not when the connection is next used: this lock would keep the holder out.
        transaction.rollback().await?;
        holder.0.check_now.notify_one();
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "this process is re-taking its idempotency holder lock",
        )));
    }
    // An expired record not swept yet, or a claim whose request died without completing
    // and without committing its change (its holder's lock is free: the process is gone;
    // it is this process's and no request here works on it; or, for claims without a
    // holder, it is older than any request runs) frees the key. A claim that committed its
    // change is never freed: its retry learns the answer is lost.
    bind_id(
        sqlx::query(&format!(
            "DELETE FROM idempotency_records WHERE {WHERE_RECORD}
               AND (created_at < now() - make_interval(hours => $5)
                    OR (status IS NULL AND change_committed_at IS NULL AND ({})))",
            abandoned(6)
        )),
        id,
    )
    .bind(RETENTION_HOURS)
    .bind(ABANDONED_AFTER_SECS)
    .bind(holder.key())
    .bind(stranded_if_ours)
    .execute(&mut *transaction)
    .await?;
    let inserted = bind_id(
        sqlx::query(
            "INSERT INTO idempotency_records
                 (principal, method, path, key, request_hash, holder, claim_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT ON CONSTRAINT idempotency_records_pkey DO NOTHING",
        ),
        id,
    )
    .bind(request_hash)
    .bind(holder.key())
    .bind(token)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    let claim = if inserted == 1 {
        Claim::Fresh
    } else {
        let stored: Option<StoredResponse> = sqlx::query_as(&format!(
            "SELECT request_hash, status, headers, sealed_body,
                    (status IS NULL AND change_committed_at IS NOT NULL
                     AND (claim_token IS NULL OR {})) AS answer_lost
             FROM idempotency_records WHERE {WHERE_RECORD}",
            abandoned(5)
        ))
        .bind(id.principal)
        .bind(id.method)
        .bind(id.path)
        .bind(id.key)
        .bind(ABANDONED_AFTER_SECS)
        .bind(holder.key())
        .bind(stranded_if_ours)
        .fetch_optional(&mut *transaction)
        .await?;
        // The row the insert ran into was released (its request failed) before this read:
        // the key is free, and the client's retry (told to wait a moment) claims it.
        let Some(stored) = stored else {
            crate::commit(transaction).await?;
            return Ok(Claim::InProgress);
        };
        match (stored.status, stored.sealed_body) {
            _ if stored.request_hash != request_hash => Claim::Mismatch,
            (Some(status), Some(sealed_body)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                headers: stored.headers.0,
                sealed_body,
            },
            _ if stored.answer_lost => Claim::AnswerLost,
            _ => Claim::InProgress,
        }
    };
    crate::commit(transaction).await?;
    Ok(claim)
}

/// Stores the response of the request whose claim of `id` is `token`'s, its body sealed by
/// the caller; `false` when that claim is gone (abandoned and taken by a retry), whose
/// record is then left alone.
pub async fn complete(
    pool: &PgPool,
    id: &RecordId<'_>,
    token: Uuid,
    status: u16,
    headers: &serde_json::Map<String, serde_json::Value>,
    sealed_body: &[u8],
) -> Result<bool, sqlx::Error> {
    bind_id(
        sqlx::query(&format!(
            "UPDATE idempotency_records SET status = $6, headers = $7, sealed_body = $8
             WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM}"
        )),
        id,
    )
    .bind(token)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(Json(headers))
    .bind(sealed_body)
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Forgets `token`'s claim of `id`, whose request ended without an answer worth keeping (a
/// 5xx, a 408 or 429, or none at all), so that a retry runs. Anyone else's claim, and any
/// stored response, stays. A claim whose change committed stays too, as nobody's: its
/// retry learns at once that the change was made and its answer lost.
pub async fn release(pool: &PgPool, id: &RecordId<'_>, token: Uuid) -> Result<(), sqlx::Error> {
    bind_id(
        sqlx::query(&format!(
            "WITH freed AS (
                 DELETE FROM idempotency_records
                 WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM} AND change_committed_at IS NULL
             )
             UPDATE idempotency_records SET claim_token = NULL
             WHERE {WHERE_RECORD} AND {WHERE_OWN_CLAIM} AND change_committed_at IS NOT NULL"
        )),
        id,
    )
    .bind(token)
    .execute(pool)
    .await
    .map(drop)
}

/// Deletes at most `batch` records made more than [`RETENTION_HOURS`] ago; returns how many.
pub async fn prune_expired(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_records WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM idempotency_records
             WHERE created_at < now() - make_interval(hours => $1)
             LIMIT $2))",
    )
    .bind(RETENTION_HOURS)
    .bind(batch)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}
