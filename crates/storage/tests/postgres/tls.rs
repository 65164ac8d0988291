//! TLS to PostgreSQL with `sslmode=verify-full`: a cluster of the test's own serving a
//! certificate for `localhost` that a CA made in the test (rcgen) signed; the pool and
//! the migrations' connection both accept it under its name and refuse it under another.

use testkit::outage::OwnServer;
use testkit::tls::{CertDir, TestCa};

/// The cluster's URL with `host` and the TLS parameters.
fn url(server: &OwnServer, host: &str, mode: &str, root: &std::path::Path) -> String {
    let mut url = url::Url::parse(&server.url()).expect("the cluster's URL");
    url.set_host(Some(host)).expect("a host");
    url.query_pairs_mut()
        .append_pair("sslmode", mode)
        .append_pair("sslrootcert", &root.display().to_string());
    url.to_string()
}

#[tokio::test]
async fn verify_full_accepts_the_certificate_under_its_name_and_refuses_it_under_another() {
    let ca = TestCa::new("database CA");
    let leaf = ca.server(&["localhost"]);
    let server = OwnServer::start_with_tls("tls-postgres", &leaf.cert_pem, &leaf.key_pem).await;
    let dir = CertDir::new();
    let root = dir.write("root.crt", &ca.pem());

    let named = url(&server, "localhost", "verify-full", &root);
    let pool = storage::connect(&named, &storage::PoolConfig::default())
        .await
        .expect("verify-full against the certificate's name");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("the session's TLS state");
    assert!(encrypted, "the session is encrypted");
    storage::migrations::status(&named)
        .await
        .expect("the migrations' connection verifies it too");

    // 127.0.0.1 is the same server, but not a name the certificate carries.
    let wrong_name = url(&server, "127.0.0.1", "verify-full", &root);
    let refused = storage::connect(&wrong_name, &storage::PoolConfig::default())
        .await
        .expect_err("verify-full accepted the wrong name");
    assert!(
        format!("{refused:?}").contains("NotValidForName"),
        "refused for the name: {refused:?}"
    );
    assert!(
        storage::migrations::status(&wrong_name).await.is_err(),
        "the migrations' connection accepted the wrong name"
    );
}
