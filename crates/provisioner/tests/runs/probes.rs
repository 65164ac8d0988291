//! The provisioning view's reachability checks: every product's cluster asked at once (up to
//! a bound), each within its deadline, so clusters that do not answer are reported
//! unreachable together and the others reachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use domain::provisioning::{Plan, default_cluster_env};
use provisioner::{Clusters, Probe};
use serde_json::json;
use testkit::TestDb;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

/// A listener that accepts connections and never answers, counting how many it holds at
/// once.
struct BlackHole {
    port: u16,
    most: Arc<AtomicUsize>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let counted = (Arc::clone(&open), Arc::clone(&most));
        tokio::spawn(async move {
            let (open, most) = counted;
            while let Ok((mut socket, _)) = listener.accept().await {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let open = Arc::clone(&open);
                tokio::spawn(async move {
                    let mut buffer = [0_u8; 1024];
                    while matches!(socket.read(&mut buffer).await, Ok(read) if read > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { port, most }
    }
}

#[tokio::test]
async fn clusters_that_do_not_answer_are_probed_at_once_and_reported_unreachable_beside_one_that_does()
 {
    let db = TestDb::migrated().await;
    sqlx::query("CREATE SCHEMA tenant_probed")
        .execute(db.pool())
        .await
        .expect("the schema to find");
    let hole = BlackHole::start().await;
    let silent: Vec<String> = (0..=provisioner::clusters::PROBES_AT_ONCE)
        .map(|n| format!("silent-{n}"))
        .collect();
    let mut variables: Vec<(String, String)> = silent
        .iter()
        .map(|product| {
            (
                default_cluster_env(product),
                format!("postgres://probe:probe@127.0.0.1:{}/probe", hole.port),
            )
        })
        .collect();
    variables.push((default_cluster_env("answering"), db.url().to_owned()));
    let clusters = Clusters::with(variables);
    let plan: Plan =
        serde_json::from_value(json!({"steps": [{"kind": "database", "isolation": "schema"}]}))
            .expect("a plan");
    let mut probes: Vec<Option<Probe<'_>>> = silent
        .iter()
        .map(|product| {
            Some(Probe {
                product,
                plan: &plan,
                isolation: "schema",
                name: "tenant_probed",
            })
        })
        .collect();
    probes.push(Some(Probe {
        product: "answering",
        plan: &plan,
        isolation: "schema",
        name: "tenant_probed",
    }));
    probes.push(None);

    let reachable = clusters.reachable(&probes).await;
    let mut expected = vec![Some(false); silent.len()];
    expected.extend([Some(true), None]);
    assert_eq!(reachable, expected);
    assert_eq!(
        hole.most.load(Ordering::SeqCst),
        provisioner::clusters::PROBES_AT_ONCE,
        "the silent clusters were asked together, no more than the bound at once"
    );
}

#[tokio::test]
async fn views_asked_at_once_share_one_probe_of_a_cluster() {
    let hole = BlackHole::start().await;
    let clusters = Clusters::with([(
        default_cluster_env("silent"),
        format!("postgres://probe:probe@127.0.0.1:{}/probe", hole.port),
    )]);
    let plan: Plan =
        serde_json::from_value(json!({"steps": [{"kind": "database", "isolation": "schema"}]}))
            .expect("a plan");
    let probes = [Some(Probe {
        product: "silent",
        plan: &plan,
        isolation: "schema",
        name: "tenant_polled",
    })];
    let views = futures::future::join_all((0..20).map(|_| clusters.reachable(&probes))).await;
    assert!(views.iter().all(|view| view == &[Some(false)]), "{views:?}");
    assert_eq!(
        hole.most.load(Ordering::SeqCst),
        1,
        "twenty views of one tenant opened one connection to its cluster"
    );
}
