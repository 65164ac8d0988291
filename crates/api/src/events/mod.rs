//! The events feed over HTTP: `GET /v1/events` pages through domain events, oldest first;
//! `GET /v1/events/stream` pushes them as Server-Sent Events. Both take the same filters,
//! both confine a tenant principal to its own tenant, and both resume from an opaque cursor
//! (the feed's `next_cursor`, the stream's event ids).

mod hub;
mod retention;
mod stream;

use std::time::Duration;

use auth::Principal;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response, Sse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::Scope;
use domain::event::{Position, TypePattern};
pub use hub::EventHub;
use serde::Serialize;
use storage::events::FeedFilter;
use tokio::task::JoinHandle;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::Caller;
use crate::problem::{ApiError, FieldError, Problem};

/// Default page size of the feed.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size of the feed.
pub const MAX_LIMIT: i64 = 500;

/// How the feed and the streams behave.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// How long events are kept after they occur.
    pub retention: chrono::Duration,
    /// The quiet interval after which a stream sends a heartbeat comment (and checks its
    /// caller's credential again).
    pub heartbeat: Duration,
    /// Streams one replica serves at once; more are answered 503.
    pub max_streams: usize,
}

impl Default for EventSettings {
    /// 30 days, a heartbeat every 15 s, 256 streams.
    fn default() -> Self {
        Self {
            retention: chrono::Duration::days(30),
            heartbeat: Duration::from_secs(15),
            max_streams: 256,
        }
    }
}

/// The relay (subscribed before this returns) and the retention task.
pub(crate) async fn spawn(state: &AppState) -> Result<Vec<JoinHandle<()>>, sqlx::Error> {
    let mut tasks = hub::spawn(&state.pool, &state.events).await?;
    tasks.push(retention::spawn(
        state.pool.clone(),
        state.settings.events.retention,
    ));
    Ok(tasks)
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(feed))
        .route("/v1/events/stream", get(stream))
}

/// Filters of the feed and the stream.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[expect(
    dead_code,
    reason = "documents the query for OpenAPI; `FeedRequest::parse` reads it, repeated types included"
)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only these types: a type (`tenant.created`), a prefix (`tenant.*`) or `*`; repeat
    /// the parameter for several. None: every type.
    types: Option<Vec<String>>,
    /// Only this tenant's events (a tenant principal: its own, the default).
    tenant_id: Option<Uuid>,
    /// Resume after this cursor (a page's `next_cursor`, or a stream event's id).
    after: Option<String>,
    /// Feed only: events per page, 1 to 500 (default 100).
    limit: Option<i64>,
}

/// What a tenant principal hears about any tenant but its own, existing or not.
const NOT_YOURS: &str = "no such tenant among those the caller may read";

/// What a feed or stream request asks for, within what its caller may read.
#[derive(Debug)]
struct FeedRequest {
    filter: FeedFilter,
    after: Option<Position>,
    limit: i64,
}

impl FeedRequest {
    /// Reads `query`; 422 naming every parameter at fault. `stream` refuses `limit`.
    fn parse(query: Option<&str>, principal: &Principal, stream: bool) -> Result<Self, ApiError> {
        let mut patterns = Vec::new();
        let mut tenant_id = None;
        let mut after = None;
        let mut limit = DEFAULT_LIMIT;
        let mut errors = Vec::new();
        let mut problem = |name: &str, detail: String| {
            errors.push(FieldError {
                pointer: format!("/{name}"),
                detail,
            });
        };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "types" => match TypePattern::parse(&value) {
                    Ok(pattern) => patterns.push(pattern),
                    Err(error) => problem("types", error.to_string()),
                },
                "tenant_id" => match value.parse::<Uuid>() {
                    Ok(id) => tenant_id = Some(id),
                    Err(_) => problem("tenant_id", "must be a tenant id (UUID)".to_owned()),
                },
                "after" => match Position::from_cursor(&value) {
                    Ok(position) => after = Some(position),
                    Err(error) => problem("after", error.to_string()),
                },
                "limit" if stream => problem("limit", "applies to GET /v1/events only".to_owned()),
                "limit" => match value.parse::<i64>() {
                    Ok(asked) if (1..=MAX_LIMIT).contains(&asked) => limit = asked,
                    _ => problem(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ),
                },
                other => problem(other, "unknown query parameter".to_owned()),
            }
        }
        if let Some(own) = principal.tenant_id {
            match tenant_id {
                None => tenant_id = Some(own),
                Some(asked) if asked != own => problem("tenant_id", NOT_YOURS.to_owned()),
                Some(_) => {}
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
        Ok(Self {
            filter: FeedFilter {
                types: patterns.into_iter().collect(),
                tenant_id,
            },
            after,
            limit,
        })
    }
}

/// An event, as the feed lists it and a stream sends it.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "documents `domain::event::Event` for OpenAPI")]
#[schema(as = Event)]
pub struct EventSchema {
    /// Unique; an event delivered twice has the same id.
    id: Uuid,
    /// What happened: `tenant.created`, `api_key.revoked`, … (see the API guide).
    #[schema(rename = "type")]
    event_type: String,
    /// When the change's transaction started (not the feed's order).
    occurred_at: DateTime<Utc>,
    /// The tenant it concerns; null for platform-level events.
    tenant_id: Option<Uuid>,
    /// The resource as the API shows it, or what changed; never a secret.
    data: serde_json::Map<String, serde_json::Value>,
}

/// A page of the feed, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventFeedPage {
    /// The events.
    #[schema(value_type = Vec<EventSchema>)]
    items: Vec<domain::event::Event>,
    /// Pass as `after` for what follows; present on the last page too, so a poller resumes
    /// from it.
    next_cursor: String,
}

/// Pages through the events, oldest first, in an order no later commit can break (see the
/// API guide's ordering guarantee); a tenant principal reads only its own tenant's.
#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events",
    security(("bearer" = ["events:read"])), params(EventParams),
    responses((status = 200, description = "A page of events", body = EventFeedPage),
    (status = 403, description = "Missing events:read", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid types, cursor or limit; or a tenant_id the caller may not read (another tenant's answers as an unknown one)", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "The page could not be read within the request's time (narrow the filters)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<EventFeedPage>, ApiError> {
    caller.require(Scope::EventsRead)?;
    let request = FeedRequest::parse(uri.query(), &caller.principal, false)?;
    let mut snapshot =
        storage::begin_bounded(&state.pool, state.settings.statement_timeout()).await?;
    let page = storage::events::feed(
        &mut snapshot,
        &request.filter,
        request.after.unwrap_or(Position::START),
        request.limit,
    )
    .await?;
    Ok(Json(EventFeedPage {
        items: page.events.into_iter().map(|stored| stored.event).collect(),
        next_cursor: page.next.cursor(),
    }))
}

/// The `Retry-After` of a stream refused because the replica serves its maximum.
const STREAMS_RETRY_AFTER_SECS: u32 = 5;

/// Streams the events as Server-Sent Events (`id:` the cursor, `event:` the type, `data:`
/// the event), with the feed's filters. Resumes after `Last-Event-ID` (or `after`);
/// without either it starts at the end of the feed. A comment line goes out after each
/// quiet interval (15 s unless configured); the stream ends when the caller's credential stops
/// authenticating or the server shuts down.
#[utoipa::path(get, path = "/v1/events/stream", operation_id = "stream_events", tag = "events",
    security(("bearer" = ["events:read"])),
    params(EventParams, ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received; wins over `after`")),
    responses((status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
    (status = 403, description = "Missing events:read", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid types, cursor or Last-Event-ID; limit given; or a tenant_id the caller may not read (another tenant's answers as an unknown one)", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "This replica serves as many streams as it may (see Retry-After)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    caller.require(Scope::EventsRead)?;
    let request = FeedRequest::parse(uri.query(), &caller.principal, true)?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| Position::from_cursor(text).ok())
                .ok_or_else(|| {
                    ApiError::invalid_field("/Last-Event-ID", "not an event id this service sent")
                })
        })
        .transpose()?;
    let credential = crate::extract::bearer(&headers)
        .map_err(|_| ApiError::unauthorized("the credentials are not valid"))?
        .to_owned();
    let slot = state.events.admit().ok_or_else(|| {
        ApiError::busy(
            "this server streams to as many clients as it may; retry, or poll GET /v1/events",
            STREAMS_RETRY_AFTER_SECS,
        )
    })?;
    // Subscribed before the starting point is read, so nothing relayed after it is missed;
    // the relay, idle while nobody listened, reads from now on.
    let batches = state.events.subscribe();
    state.events.wake();
    let follow = match last_event_id.or(request.after) {
        Some(after) => stream::Follow::new(request.filter, after, true),
        None => stream::Follow::new(
            request.filter,
            storage::events::horizon(&state.pool).await?,
            false,
        ),
    };
    let subscription = stream::Subscription::new(
        state.clone(),
        follow,
        batches,
        credential,
        caller.principal.tenant_id,
        slot,
    );
    let mut response = Sse::new(subscription.into_stream()).into_response();
    // Proxies that buffer answers would hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use auth::PrincipalKind;

    use super::*;

    fn tenant_principal(tenant: Uuid) -> Principal {
        Principal {
            kind: PrincipalKind::TenantKey,
            tenant_id: Some(tenant),
            scopes: [Scope::EventsRead].into_iter().collect(),
            key_id: Some(Uuid::new_v4()),
            subject: None,
            product: None,
            expires_at: None,
            previous_secret: false,
        }
    }

    fn pointers(error: &ApiError) -> Vec<String> {
        error.pointers()
    }

    #[test]
    fn a_tenant_principal_reads_its_own_tenant_by_default() {
        let own = Uuid::new_v4();
        let request = FeedRequest::parse(None, &tenant_principal(own), false).expect("valid");
        assert_eq!(request.filter.tenant_id, Some(own));
        assert_eq!(request.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn another_tenant_is_refused_like_an_unknown_one() {
        let own = Uuid::new_v4();
        let query = format!("tenant_id={}", Uuid::new_v4());
        let error =
            FeedRequest::parse(Some(&query), &tenant_principal(own), false).expect_err("refused");
        assert_eq!(pointers(&error), ["/tenant_id"]);
        assert!(format!("{error:?}").contains(NOT_YOURS));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let error = FeedRequest::parse(
            Some("types=tenant.*&types=tenant.nope&after=zz&limit=501&tenant_id=x&extra=1"),
            &tenant_principal(Uuid::new_v4()),
            false,
        )
        .expect_err("refused");
        assert_eq!(
            pointers(&error),
            ["/types", "/after", "/limit", "/tenant_id", "/extra"]
        );
    }

    #[test]
    fn a_stream_takes_no_limit() {
        let error = FeedRequest::parse(Some("limit=10"), &tenant_principal(Uuid::new_v4()), true)
            .expect_err("refused");
        assert_eq!(pointers(&error), ["/limit"]);
    }
}
