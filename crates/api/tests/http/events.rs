//! The events feed and stream over HTTP. Use cases do not emit events yet, so events are
//! appended directly through `storage::events`, as a use case will in its transaction.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use domain::Scope;
use domain::event::{EventType, Position};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use storage::events::NewEvent;
use testkit::{TestApp, TestResponse};
use tower::ServiceExt;
use uuid::Uuid;

/// Heartbeats this often in these tests, so a quiet stream shows it is quiet quickly.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// Longer than anything under test takes; a wait that reaches it fails the test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn app() -> TestApp {
    app_with(|_| {}).await
}

async fn app_with(change: impl FnOnce(&mut api::events::EventSettings)) -> TestApp {
    let mut settings = testkit::settings();
    settings.events.heartbeat = HEARTBEAT;
    change(&mut settings.events);
    TestApp::with_settings(settings).await
}

/// An event whose data names its type.
fn new_event(event_type: EventType, tenant_id: Option<Uuid>) -> NewEvent {
    let mut data = serde_json::Map::new();
    data.insert("note".to_owned(), json!(event_type.as_str()));
    NewEvent {
        event_type,
        tenant_id,
        data,
    }
}

/// Appends one event in a transaction of its own (committed); returns its id.
async fn append(app: &TestApp, event_type: EventType, tenant_id: Option<Uuid>) -> Uuid {
    let mut conn = app.db.pool().acquire().await.expect("a connection");
    storage::events::append(&mut conn, &new_event(event_type, tenant_id))
        .await
        .expect("appended")
        .event
        .id
}

async fn get(app: &TestApp, key: &str, path: &str) -> TestResponse {
    app.request(Method::GET, path).bearer(key).send().await
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").parse().expect("a uuid"))
        .collect()
}

/// The feed at `path` once it holds at least `count` items: a committed event is readable
/// as soon as every write transaction older than it has ended, anywhere on the server
/// (other tests' included).
async fn feed_of(app: &TestApp, key: &str, path: &str, count: usize) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = get(app, key, path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let page = response.json();
        if ids(&page).len() >= count || tokio::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One message of an event stream.
#[derive(Debug, Default, PartialEq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comment: Option<String>,
}

/// An open event stream, read a message at a time.
struct Stream {
    body: Body,
    buffer: String,
}

impl Stream {
    /// Opens `path` with `headers`; panics unless it is answered 200 as an event stream.
    async fn open(app: &TestApp, key: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        match Self::try_open(app, key, path, headers).await {
            Ok(stream) => stream,
            Err(response) => panic!(
                "the stream was refused: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
        }
    }

    async fn try_open(
        app: &TestApp,
        key: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, TestResponse> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app
            .app
            .router
            .clone()
            .oneshot(request.body(Body::empty()).expect("a request"))
            .await
            .expect("the router is infallible");
        if response.status() != StatusCode::OK {
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes()
                .to_vec();
            return Err(TestResponse {
                status,
                headers,
                body,
                frames: Vec::new(),
                trailers: axum::http::HeaderMap::new(),
            });
        }
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Ok(Self {
            body: response.into_body(),
            buffer: String::new(),
        })
    }

    /// The next message, or `None` when the stream has ended.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message::default();
                for line in block.lines().filter(|line| !line.is_empty()) {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "" => message.comment = Some(value),
                        "id" => message.id = Some(value),
                        "event" => message.event = Some(value),
                        "data" => message.data = Some(value),
                        other => panic!("unexpected field {other}"),
                    }
                }
                return Some(message);
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("the stream sends something within ten seconds");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.expect("the stream is readable").into_data() {
                        self.buffer
                            .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                    }
                }
            }
        }
    }

    /// The next event, skipping heartbeats; panics if the stream ends first, or sends
    /// nothing but heartbeats for ten seconds.
    async fn next_event(&mut self) -> Message {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let message = self.next().await.expect("an event before the stream ends");
            if message.comment.is_none() {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event within ten seconds"
            );
        }
    }

    /// The id of the next event's payload.
    async fn next_id(&mut self) -> Uuid {
        let message = self.next_event().await;
        let data: Value =
            serde_json::from_str(message.data.as_deref().expect("data")).expect("JSON");
        data["id"].as_str().expect("an id").parse().expect("a uuid")
    }

    /// Reads until the stream ends, which it must within ten seconds, sending no event.
    async fn ends_without_an_event(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while let Some(message) = self.next().await {
            assert!(message.comment.is_some(), "an event was sent: {message:?}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream did not end within ten seconds"
            );
        }
    }

    /// Reads until the next heartbeat, returning the events before it.
    async fn events_until_heartbeat(&mut self) -> Vec<Message> {
        let mut events = Vec::new();
        loop {
            let message = self
                .next()
                .await
                .expect("a heartbeat before the stream ends");
            if message.comment.is_some() {
                return events;
            }
            events.push(message);
        }
    }
}

#[tokio::test]
async fn the_feed_pages_oldest_first_and_resumes_from_its_cursor() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut appended = Vec::new();
    for event_type in [
        EventType::TenantCreated,
        EventType::TenantUpdated,
        EventType::ProjectCreated,
        EventType::IdpCreated,
        EventType::ApiKeyCreated,
    ] {
        appended.push(append(&app, event_type, None).await);
    }

    let first = feed_of(&app, &key, "/v1/events?limit=2", 2).await;
    let mut read = ids(&first);
    let mut cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    while read.len() < appended.len() {
        let page = feed_of(&app, &key, &format!("/v1/events?limit=2&after={cursor}"), 1).await;
        assert!(!ids(&page).is_empty(), "events were skipped: {page}");
        read.extend(ids(&page));
        cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    }
    assert_eq!(read, appended);
    let first_item = &first["items"][0];
    assert_eq!(first_item["type"], "tenant.created");
    assert_eq!(first_item["tenant_id"], Value::Null);
    assert_eq!(first_item["data"], json!({"note": "tenant.created"}));
    assert!(first_item["occurred_at"].is_string());

    let last = get(&app, &key, &format!("/v1/events?after={cursor}"))
        .await
        .json();
    assert!(ids(&last).is_empty());
    let resume = last["next_cursor"]
        .as_str()
        .expect("present on the last page too");
    let later = append(&app, EventType::TenantArchived, None).await;
    let resumed = feed_of(&app, &key, &format!("/v1/events?after={resume}"), 1).await;
    assert_eq!(ids(&resumed), [later]);
}

#[tokio::test]
async fn the_feed_filters_by_type_patterns_and_tenant() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let (acme, globex) = (app.tenant("acme").await, app.tenant("globex").await);
    let created = append(&app, EventType::TenantCreated, Some(acme)).await;
    let subscribed = append(&app, EventType::TenantProductSubscribed, Some(acme)).await;
    let revoked = append(&app, EventType::ApiKeyRevoked, Some(globex)).await;
    let rotated = append(&app, EventType::ApiKeyRotated, Some(acme)).await;
    feed_of(&app, &key, "/v1/events", 4).await;

    let typed = get(
        &app,
        &key,
        "/v1/events?types=tenant.*&types=api_key.revoked",
    )
    .await
    .json();
    assert_eq!(ids(&typed), [created, subscribed, revoked]);
    let products = get(&app, &key, "/v1/events?types=tenant.product.*")
        .await
        .json();
    assert_eq!(ids(&products), [subscribed]);
    let acme_only = get(&app, &key, &format!("/v1/events?tenant_id={acme}"))
        .await
        .json();
    assert_eq!(ids(&acme_only), [created, subscribed, rotated]);
    let both = get(
        &app,
        &key,
        &format!("/v1/events?tenant_id={acme}&types=api_key.*"),
    )
    .await
    .json();
    assert_eq!(ids(&both), [rotated]);
    let everything = get(&app, &key, "/v1/events?types=*").await.json();
    assert_eq!(ids(&everything).len(), 4);
}

#[tokio::test]
async fn a_tenant_key_reads_its_own_tenants_events_and_nothing_of_another() {
    let app = app().await;
    let (acme, globex) = (app.tenant("acme").await, app.tenant("globex").await);
    let key = app.cheap_key(Some(acme), &[Scope::EventsRead]).await.1;
    let admin = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let own = append(&app, EventType::TenantUpdated, Some(acme)).await;
    append(&app, EventType::TenantUpdated, Some(globex)).await;
    append(&app, EventType::WebhookEndpointDisabled, None).await;
    feed_of(&app, &admin, "/v1/events", 3).await;

    let page = feed_of(&app, &key, "/v1/events", 1).await;
    assert_eq!(ids(&page), [own]);
    let explicit = get(&app, &key, &format!("/v1/events?tenant_id={acme}"))
        .await
        .json();
    assert_eq!(ids(&explicit), [own]);

    // Another tenant's id answers exactly as an id no tenant has.
    let foreign = get(&app, &key, &format!("/v1/events?tenant_id={globex}")).await;
    let unknown = get(
        &app,
        &key,
        &format!("/v1/events?tenant_id={}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(foreign.pointers(), ["/tenant_id"]);
    assert_eq!(foreign.json()["detail"], unknown.json()["detail"]);
    assert_eq!(foreign.status, unknown.status);
    let streamed = Stream::try_open(
        &app,
        &key,
        &format!("/v1/events/stream?tenant_id={globex}"),
        &[],
    )
    .await;
    let refused = streamed.err().expect("refused");
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.pointers(), ["/tenant_id"]);
}

#[tokio::test]
async fn reading_events_needs_the_events_read_scope() {
    let app = app().await;
    let tenant = app.tenant("acme").await;
    let key = app
        .cheap_key(Some(tenant), &[Scope::TenantsRead, Scope::AuditRead])
        .await
        .1;
    for path in ["/v1/events", "/v1/events/stream"] {
        let response = get(&app, &key, path).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            response.json()["detail"]
                .as_str()
                .expect("a detail")
                .contains("events:read")
        );
    }
}

#[tokio::test]
async fn bad_filters_cursors_and_limits_are_422_naming_the_parameter() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    for (query, pointer) in [
        ("types=tenant.deleted", "/types"),
        ("types=tenants.*", "/types"),
        ("types=*.created", "/types"),
        ("types=", "/types"),
        ("after=not-a-cursor", "/after"),
        ("limit=0", "/limit"),
        ("limit=501", "/limit"),
        ("limit=many", "/limit"),
        ("tenant_id=acme", "/tenant_id"),
        ("cursor=x", "/cursor"),
    ] {
        let response = get(&app, &key, &format!("/v1/events?{query}")).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(response.pointers(), [pointer], "{query}");
    }
    let ok = get(&app, &key, "/v1/events?limit=500&types=tenant.created").await;
    assert_eq!(ok.status, StatusCode::OK);

    for (query, headers, pointer) in [
        ("limit=10", &[][..], "/limit"),
        ("types=nope.*", &[][..], "/types"),
        ("", &[("last-event-id", "garbage")][..], "/Last-Event-ID"),
    ] {
        let refused = Stream::try_open(&app, &key, &format!("/v1/events/stream?{query}"), headers)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(refused.pointers(), [pointer], "{query}");
    }
}

#[tokio::test]
async fn a_stream_receives_an_event_committed_after_it_connected() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let before = append(&app, EventType::TenantCreated, None).await;
    feed_of(&app, &key, "/v1/events", 1).await;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;

    let tenant = Uuid::new_v4();
    let after = append(&app, EventType::TenantStatusChanged, Some(tenant)).await;
    let message = stream.next_event().await;
    assert_eq!(message.event.as_deref(), Some("tenant.status_changed"));
    let data: Value = serde_json::from_str(message.data.as_deref().expect("data")).expect("JSON");
    assert_eq!(data["id"], after.to_string());
    assert_ne!(
        data["id"],
        before.to_string(),
        "a stream without a cursor starts at the end"
    );
    assert_eq!(data["tenant_id"], tenant.to_string());
    assert_eq!(data["data"], json!({"note": "tenant.status_changed"}));
    // Its id is a cursor the feed takes.
    let id = message.id.expect("an id");
    let page = get(&app, &key, &format!("/v1/events?after={id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(ids(&page.json()).is_empty());
}

#[tokio::test]
async fn a_stream_resumes_after_last_event_id_without_gaps_or_duplicates() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut appended = Vec::new();
    for _ in 0..3 {
        appended.push(append(&app, EventType::ProjectUpdated, None).await);
    }
    let start = Position::START.cursor();
    let mut first =
        Stream::open(&app, &key, &format!("/v1/events/stream?after={start}"), &[]).await;
    assert_eq!(first.next_id().await, appended[0]);
    let second = first.next_event().await;
    drop(first);

    for _ in 0..2 {
        appended.push(append(&app, EventType::ProjectUpdated, None).await);
    }
    // A reconnecting EventSource keeps the URL (and its `after`) and adds Last-Event-ID,
    // which wins.
    let last_id = second.id.expect("an id");
    let mut resumed = Stream::open(
        &app,
        &key,
        &format!("/v1/events/stream?after={start}"),
        &[("last-event-id", &last_id)],
    )
    .await;
    let mut received = Vec::new();
    while received.len() < 3 {
        received.push(resumed.next_id().await);
    }
    assert_eq!(received, appended[2..]);
    assert_eq!(resumed.events_until_heartbeat().await, [], "nothing twice");
}

#[tokio::test]
async fn a_tenant_keys_stream_carries_only_its_tenants_events() {
    let app = app().await;
    let (acme, globex) = (app.tenant("acme").await, app.tenant("globex").await);
    let key = app.cheap_key(Some(acme), &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    append(&app, EventType::TenantUpdated, Some(globex)).await;
    append(&app, EventType::WebhookEndpointDisabled, None).await;
    let own = append(&app, EventType::TenantUpdated, Some(acme)).await;
    assert_eq!(stream.next_id().await, own);
}

#[tokio::test]
async fn a_stream_filters_by_type() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream?types=api_key.*", &[]).await;
    append(&app, EventType::TenantCreated, None).await;
    let revoked = append(&app, EventType::ApiKeyRevoked, None).await;
    assert_eq!(stream.next_id().await, revoked);
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    for _ in 0..2 {
        let message = stream.next().await.expect("the stream goes on");
        assert_eq!(message.comment.as_deref(), Some("heartbeat"));
    }
}

#[tokio::test]
async fn a_stream_ends_once_its_key_is_revoked() {
    let app = app().await;
    let tenant = app.tenant("acme").await;
    let (key_id, key) = app.cheap_key(Some(tenant), &[Scope::EventsRead]).await;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    app.revoke(key_id).await;
    testkit::within_a_second("the revocation reaches the replica", async || {
        get(&app, &key, "/v1/me").await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    append(&app, EventType::TenantUpdated, Some(tenant)).await;
    while let Some(message) = stream.next().await {
        assert!(
            message.comment.is_some(),
            "an event reached a revoked key: {message:?}"
        );
    }
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_until_one_ends() {
    let app = app_with(|events| events.max_streams = 1).await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let first = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    let refused = Stream::try_open(&app, &key, "/v1/events/stream", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    drop(first);
    Stream::open(&app, &key, "/v1/events/stream", &[]).await;
}

#[tokio::test]
async fn closing_the_hub_ends_every_stream_and_admits_no_more() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut streams = vec![
        Stream::open(&app, &key, "/v1/events/stream", &[]).await,
        Stream::open(&app, &key, "/v1/events/stream?types=tenant.*", &[]).await,
    ];
    app.app.state.events.close();
    for stream in &mut streams {
        stream.ends_without_an_event().await;
    }
    let refused = Stream::try_open(&app, &key, "/v1/events/stream", &[]).await;
    assert_eq!(
        refused.err().expect("refused").status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn an_event_appended_in_a_rolled_back_transaction_is_never_read() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    let mut transaction = storage::begin(app.db.pool()).await.expect("a transaction");
    storage::events::append(&mut transaction, &new_event(EventType::TenantPurged, None))
        .await
        .expect("appended");
    transaction.rollback().await.expect("rolled back");
    let committed = append(&app, EventType::TenantCreated, None).await;

    assert_eq!(stream.next_id().await, committed);
    assert_eq!(
        ids(&feed_of(&app, &key, "/v1/events", 1).await),
        [committed]
    );
}

#[tokio::test]
async fn a_starting_server_prunes_events_older_than_the_retention() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let old = append(&app, EventType::TenantCreated, None).await;
    let fresh = append(&app, EventType::TenantUpdated, None).await;
    sqlx::query("UPDATE events SET occurred_at = now() - interval '31 days' WHERE id = $1")
        .bind(old)
        .execute(app.db.pool())
        .await
        .expect("aged past the 30 days kept by default");

    let _started = app.replica().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let kept = ids(&feed_of(&app, &key, "/v1/events", 1).await);
        if kept == [fresh] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still kept: {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_whose_notification_was_lost_arrives_once_the_listener_reconnects() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    let heartbeat = stream.next().await.expect("the stream goes on");
    assert!(heartbeat.comment.is_some());

    // Committed with triggers off: no notification, as if sent while the listener was away.
    let mut transaction = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await
        .expect("triggers off");
    let unannounced = storage::events::append(
        &mut transaction,
        &new_event(EventType::DomainVerified, None),
    )
    .await
    .expect("appended")
    .event
    .id;
    storage::commit(transaction).await.expect("committed");
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND query ILIKE '%tenant_registry_events%'",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("the event listener is cut off");
    assert_eq!(terminated, [true]);

    assert_eq!(stream.next_id().await, unannounced);
}

#[tokio::test]
async fn an_event_held_back_by_a_transaction_that_writes_none_arrives_when_it_ends() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let mut stream = Stream::open(&app, &key, "/v1/events/stream", &[]).await;
    let mut long = storage::begin(app.db.pool()).await.expect("a transaction");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *long)
        .await
        .expect("it holds a transaction id, as any writer does");
    let held = append(&app, EventType::TenantUpdated, None).await;
    let page = get(&app, &key, "/v1/events").await.json();
    assert!(
        ids(&page).is_empty(),
        "held back while the older transaction runs"
    );

    // Its end announces nothing: only reading again brings the event.
    storage::commit(long).await.expect("committed");
    assert_eq!(stream.next_id().await, held);
}

#[tokio::test]
async fn a_long_transaction_in_another_database_holds_back_nothing() {
    let app = app().await;
    let key = app.cheap_key(None, &[Scope::EventsRead]).await.1;
    let elsewhere_url = testkit::database_url(&testkit::server_url(), "postgres");
    let mut elsewhere = <sqlx::PgConnection as sqlx::Connection>::connect(&elsewhere_url)
        .await
        .expect("a session on another database of the same server");
    let mut long = sqlx::Connection::begin(&mut elsewhere)
        .await
        .expect("a transaction there");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *long)
        .await
        .expect("it holds a transaction id, as a writer there would");

    let appended = append(&app, EventType::TenantUpdated, None).await;
    let page = get(&app, &key, "/v1/events").await.json();
    assert_eq!(
        ids(&page),
        vec![appended],
        "read at once: the other database's transaction cannot write this feed"
    );
    long.rollback().await.expect("ended");
}
