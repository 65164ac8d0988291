//! The webhook runner against real PostgreSQL and real receivers on loopback, with a
//! hand-moved clock: events fan out to the endpoints that want them, deliveries are signed
//! per Standard Webhooks (checked here with an HMAC of our own, not the signing code), the
//! retry schedule is followed, `410 Gone` and five days of failures disable an endpoint,
//! a slow receiver holds back no other, and two replicas deliver each message once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::event::{EventType, Position};
use keyring::Keyring;
use storage::events::{self, FeedFilter, NewEvent};
use storage::webhooks::deliveries;
use storage::webhooks::{self as endpoints, NewEndpoint};
use testkit::TestDb;
use testkit::receiver::{Received, Receiver};
use uuid::Uuid;
use webhooks::deliver::Delivered;
use webhooks::{Clock, ManualClock, Observer, Pass, Runner, RunnerConfig};

struct Quiet;

impl Observer for Quiet {
    fn delivered(&self, _: &Delivered) {}
}

struct Setup {
    db: TestDb,
    keyring: Arc<Keyring>,
    clock: Arc<ManualClock>,
}

impl Setup {
    async fn new() -> Self {
        let spec = Keyring::generate_spec("test").expect("a key");
        Self {
            db: TestDb::migrated().await,
            keyring: Arc::new(Keyring::parse(&spec).expect("a key ring")),
            clock: Arc::new(ManualClock::starting_at(Utc::now())),
        }
    }

    fn runner(&self) -> Runner {
        Runner::new(
            self.db.pool().clone(),
            Arc::clone(&self.keyring),
            egress::Egress::new(egress::Policy::DEVELOPMENT).expect("a client"),
            self.clock.clone(),
            RunnerConfig::default(),
            Arc::new(Quiet),
        )
    }

    /// An enabled endpoint; returns its id and plain secret.
    async fn endpoint(
        &self,
        url: &str,
        tenant_id: Option<Uuid>,
        event_types: Option<&[&str]>,
    ) -> (Uuid, String) {
        let id = Uuid::new_v4();
        let secret = webhooks::secret::generate().expect("a secret");
        let sealed = self
            .keyring
            .seal_str(&webhooks::secret::context(id), &secret)
            .expect("sealed");
        let event_types: Option<Vec<String>> =
            event_types.map(|types| types.iter().map(|name| (*name).to_owned()).collect());
        let mut conn = self.db.pool().acquire().await.expect("a connection");
        endpoints::insert(
            &mut conn,
            &NewEndpoint {
                id,
                tenant_id,
                url,
                event_types: event_types.as_deref(),
                description: "",
                enabled: true,
                secret_sealed: &sealed,
            },
        )
        .await
        .expect("endpoint stored");
        (id, secret)
    }

    async fn tenant(&self) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO tenants (slug, name, plan) VALUES ($1, 'T', 'free') RETURNING id",
        )
        .bind(format!("t-{}", Uuid::new_v4().simple()))
        .fetch_one(self.db.pool())
        .await
        .expect("tenant stored")
    }

    async fn event(&self, event_type: EventType, tenant_id: Option<Uuid>) -> Uuid {
        let mut transaction = storage::begin(self.db.pool()).await.expect("a transaction");
        let mut data = serde_json::Map::new();
        data.insert("marker".to_owned(), serde_json::json!(Uuid::new_v4()));
        let stored = events::append(
            &mut transaction,
            &NewEvent {
                event_type,
                tenant_id,
                data,
            },
        )
        .await
        .expect("event appended");
        storage::commit(transaction).await.expect("committed");
        stored.event.id
    }

    /// Runs passes until fan-out has seen every committed event (the feed holds events
    /// back while any transaction of the cluster runs), returning every attempt made.
    async fn settle(&self, runner: &Runner) -> Vec<Delivered> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut delivered = Vec::new();
        loop {
            let Pass {
                fanned,
                delivered: now,
            } = runner.run_once().await.expect("a pass");
            delivered.extend(now);
            if !fanned.held_back {
                return delivered;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events stayed held back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Fans out until `expected` deliveries are queued.
    async fn queue_all(&self, expected: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut queued = 0;
        while queued < expected {
            queued += webhooks::fanout::fan_out(self.db.pool(), self.clock.now())
                .await
                .expect("fanned out")
                .queued;
            assert!(
                tokio::time::Instant::now() < deadline,
                "events stayed held back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn delivery_status(&self, endpoint: Uuid) -> Vec<(String, i32)> {
        sqlx::query_as(
            "SELECT status, attempts FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at",
        )
        .bind(endpoint)
        .fetch_all(self.db.pool())
        .await
        .expect("deliveries read")
    }

    async fn endpoint_state(&self, endpoint: Uuid) -> (bool, Option<String>) {
        sqlx::query_as("SELECT enabled, disabled_reason FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_one(self.db.pool())
            .await
            .expect("endpoint read")
    }
}

#[tokio::test]
async fn each_event_reaches_the_endpoints_that_want_it_signed_per_standard_webhooks() {
    let setup = Setup::new().await;
    let tenant = setup.tenant().await;
    let other_tenant = setup.tenant().await;
    let everything = Receiver::start().await;
    let tenant_only = Receiver::start().await;
    let archives_only = Receiver::start().await;
    let (_, everything_secret) = setup.endpoint(&everything.url(), None, None).await;
    let (_, tenant_secret) = setup.endpoint(&tenant_only.url(), Some(tenant), None).await;
    setup
        .endpoint(
            &archives_only.url(),
            None,
            Some(&["tenant.archived", "api_key.*"]),
        )
        .await;

    let created = setup.event(EventType::TenantCreated, Some(tenant)).await;
    let archived = setup
        .event(EventType::TenantArchived, Some(other_tenant))
        .await;
    let revoked = setup.event(EventType::ApiKeyRevoked, Some(tenant)).await;
    setup.settle(&setup.runner()).await;

    let ids = |received: Vec<Received>| {
        let mut ids: Vec<String> = received.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids.iter().map(Uuid::to_string).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(everything.received()),
        sorted(vec![created, archived, revoked])
    );
    assert_eq!(ids(tenant_only.received()), sorted(vec![created, revoked]));
    assert_eq!(
        ids(archives_only.received()),
        sorted(vec![archived, revoked])
    );

    for received in everything.received() {
        assert!(received.signed_by(&everything_secret), "signature verifies");
        assert!(
            !received.signed_by(&tenant_secret),
            "another endpoint's secret does not"
        );
        let body = received.json();
        assert_eq!(body["data"]["id"], received.id.as_str());
        assert_eq!(body["type"], body["data"]["type"]);
        assert!(body["timestamp"].is_string());
        let sent_at: i64 = received.timestamp.parse().expect("unix seconds");
        assert!((sent_at - setup.clock.now().timestamp()).abs() <= 1);
    }
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_the_schedule_and_then_given_up() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    setup.event(EventType::TenantCreated, None).await;
    let runner = setup.runner();

    assert_eq!(
        setup.settle(&runner).await.len(),
        1,
        "the first attempt is immediate"
    );
    for wait in [5, 300, 1800, 7200, 18_000, 36_000, 36_000] {
        setup.clock.advance(TimeDelta::seconds(wait - 1));
        assert!(
            setup.settle(&runner).await.is_empty(),
            "nothing is due a second before the {wait} s wait ends"
        );
        setup.clock.advance(TimeDelta::seconds(1));
        assert_eq!(
            setup.settle(&runner).await.len(),
            1,
            "retried after {wait} s"
        );
    }
    assert_eq!(
        setup.delivery_status(endpoint).await,
        [("failed".to_owned(), 8)]
    );
    setup.clock.advance(TimeDelta::days(1));
    assert!(
        setup.settle(&runner).await.is_empty(),
        "eight attempts, then no more"
    );
    assert_eq!(receiver.received().len(), 8);
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_later() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(
            setup
                .event(EventType::ProjectCreated, None)
                .await
                .to_string(),
        );
    }
    let runner = setup.runner();
    setup.settle(&runner).await;
    receiver.answer(204);
    setup.clock.advance(TimeDelta::seconds(5));
    setup.settle(&runner).await;

    let statuses = setup.delivery_status(endpoint).await;
    assert_eq!(statuses, vec![("delivered".to_owned(), 2); 3]);
    let mut delivered: Vec<String> = receiver.received().iter().map(|r| r.id.clone()).collect();
    delivered.sort();
    delivered.dedup();
    sent.sort();
    assert_eq!(delivered, sent);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_at_once_and_says_so_in_an_event() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    receiver.answer(410);
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    setup.event(EventType::TenantCreated, None).await;
    let runner = setup.runner();
    let delivered = setup.settle(&runner).await;
    assert!(delivered[0].disabled_endpoint);
    assert_eq!(
        setup.endpoint_state(endpoint).await,
        (false, Some(webhooks::deliver::GONE_REASON.to_owned()))
    );
    assert_eq!(
        setup.delivery_status(endpoint).await,
        [("failed".to_owned(), 1)]
    );

    setup.event(EventType::TenantUpdated, None).await;
    setup.clock.advance(TimeDelta::hours(1));
    setup.settle(&runner).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint gets nothing more"
    );
    let mut conn = setup.db.pool().acquire().await.expect("a connection");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let feed = loop {
        let page = events::feed(&mut conn, &FeedFilter::default(), Position::START, 100)
            .await
            .expect("feed");
        if !page.held_back {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events stayed held back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let disabled: Vec<_> = feed
        .events
        .iter()
        .filter(|stored| stored.event.event_type == "webhook.endpoint_disabled")
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].event.data["id"], endpoint.to_string());
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    let runner = setup.runner();
    // A new event every day keeps deliveries coming; the endpoint never succeeds.
    for day in 0..5 {
        setup.event(EventType::TenantUpdated, None).await;
        setup.settle(&runner).await;
        assert!(
            setup.endpoint_state(endpoint).await.0,
            "still enabled on day {day}"
        );
        setup.clock.advance(TimeDelta::days(1));
    }
    setup.event(EventType::TenantUpdated, None).await;
    setup.settle(&runner).await;
    assert_eq!(
        setup.endpoint_state(endpoint).await,
        (false, Some(webhooks::deliver::FAILING_REASON.to_owned()))
    );
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_back_the_others() {
    let setup = Setup::new().await;
    let slow = Receiver::start().await;
    slow.delay(Duration::from_secs(8));
    let fast = Receiver::start().await;
    setup.endpoint(&slow.url(), None, None).await;
    setup.endpoint(&fast.url(), None, None).await;
    for _ in 0..6 {
        setup.event(EventType::TenantUpdated, None).await;
    }
    setup.queue_all(12).await;
    let runner = setup.runner();
    let service = tokio::spawn(runner.run(std::future::pending()));
    // The fast receiver gets all six while the slow one still sits on its first ones.
    fast.wait_for(6, Duration::from_secs(5)).await;
    assert!(slow.received().is_empty());
    service.abort();
}

#[tokio::test]
async fn two_replicas_deliver_each_message_once() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    setup.endpoint(&receiver.url(), None, None).await;
    for _ in 0..40 {
        setup.event(EventType::TenantUpdated, None).await;
    }
    let (first, second) = (setup.runner(), setup.runner());
    let (a, b) = tokio::join!(setup.settle(&first), setup.settle(&second));
    // A replica that found the other fanning out ends its pass early; one more collects
    // whatever was queued after it looked.
    let rest = setup.settle(&first).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for received in receiver.received() {
        *seen.entry(received.id).or_default() += 1;
    }
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|count| *count == 1), "{seen:?}");
    assert_eq!(a.len() + b.len() + rest.len(), 40);
}

#[tokio::test]
async fn a_delivery_whose_runner_died_is_made_once_its_lease_runs_out() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    setup.event(EventType::TenantCreated, None).await;
    setup.queue_all(1).await;
    // A runner leases the delivery and dies before sending it.
    let leased: i64 = sqlx::query_scalar(
        "WITH leased AS (UPDATE webhook_deliveries SET leased_until = $1 RETURNING 1)
         SELECT count(*) FROM leased",
    )
    .bind(setup.clock.now() + TimeDelta::seconds(60))
    .fetch_one(setup.db.pool())
    .await
    .expect("leased");
    assert_eq!(leased, 1);
    let runner = setup.runner();
    assert!(setup.settle(&runner).await.is_empty(), "leased elsewhere");
    setup.clock.advance(TimeDelta::seconds(61));
    assert_eq!(setup.settle(&runner).await.len(), 1);
    assert_eq!(
        setup.delivery_status(endpoint).await,
        [("delivered".to_owned(), 1)]
    );
}

/// Queues `count` test messages to `endpoint`, due at `due`.
async fn queue_messages(setup: &Setup, endpoint: Uuid, count: usize, due: chrono::DateTime<Utc>) {
    let mut conn = setup.db.pool().acquire().await.expect("a connection");
    for _ in 0..count {
        deliveries::enqueue_one(
            &mut conn,
            &deliveries::NewDelivery {
                endpoint_id: endpoint,
                event_id: None,
                message_id: Uuid::new_v4().to_string(),
                event_type: "webhook.test".to_owned(),
                payload: serde_json::json!({}),
            },
            due,
        )
        .await
        .expect("queued");
    }
}

#[tokio::test]
async fn leasing_gives_each_endpoint_at_most_its_share_earliest_due_first() {
    let setup = Setup::new().await;
    let (busy, _) = setup.endpoint("http://127.0.0.1:9/busy", None, None).await;
    let (quiet, _) = setup.endpoint("http://127.0.0.1:9/quiet", None, None).await;
    let now = setup.clock.now();
    queue_messages(&setup, busy, 30, now - TimeDelta::seconds(10)).await;
    queue_messages(&setup, quiet, 3, now - TimeDelta::seconds(5)).await;
    queue_messages(&setup, quiet, 2, now + TimeDelta::seconds(60)).await;
    let request = deliveries::LeaseRequest {
        now,
        until: now + TimeDelta::seconds(60),
        batch: 64,
        per_endpoint: 4,
    };
    let first = deliveries::lease_due(setup.db.pool(), request)
        .await
        .expect("leased");
    let per_endpoint = |leased: &[deliveries::Leased], endpoint: Uuid| {
        leased.iter().filter(|d| d.endpoint_id == endpoint).count()
    };
    // The busy endpoint's long backlog takes no more than its share, and the quiet one's
    // due messages are leased beside it; its messages not due yet wait.
    assert_eq!(per_endpoint(&first, busy), 4);
    assert_eq!(per_endpoint(&first, quiet), 3);
    // Both are at or under their bound with leases running: only the quiet endpoint's
    // free slot could take more, and it has nothing due.
    let second = deliveries::lease_due(setup.db.pool(), request)
        .await
        .expect("leased");
    assert!(second.is_empty(), "{second:?}");
    // A small batch takes the earliest due first: the busy endpoint's, queued earlier.
    let later = deliveries::LeaseRequest {
        now: now + TimeDelta::seconds(61),
        until: now + TimeDelta::seconds(120),
        batch: 2,
        per_endpoint: 4,
    };
    let third = deliveries::lease_due(setup.db.pool(), later)
        .await
        .expect("leased");
    assert_eq!(third.len(), 2);
    assert_eq!(per_endpoint(&third, busy), 2);
}

#[tokio::test]
async fn settling_an_attempt_wakes_no_runner_but_a_retry_request_does() {
    let setup = Setup::new().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = setup.endpoint(&receiver.url(), None, None).await;
    setup.event(EventType::TenantCreated, None).await;
    setup.queue_all(1).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(setup.db.pool())
        .await
        .expect("a listener");
    listener
        .listen("webhook_deliveries_due")
        .await
        .expect("listening");
    let delivered = setup.settle(&setup.runner()).await;
    assert_eq!(delivered.len(), 1);
    // Notifications arrive in commit order: if settling had sent one, it would come before
    // this marker.
    sqlx::query("SELECT pg_notify('webhook_deliveries_due', 'marker')")
        .execute(setup.db.pool())
        .await
        .expect("notified");
    let next = listener.recv().await.expect("a notification");
    assert_eq!(next.payload(), "marker");
    let mut conn = setup.db.pool().acquire().await.expect("a connection");
    assert!(
        deliveries::requeue(
            &mut conn,
            endpoint,
            delivered[0].delivery,
            setup.clock.now()
        )
        .await
        .expect("requeued")
    );
    let next = listener.recv().await.expect("a notification");
    assert_eq!(next.payload(), "");
}
