//! The server's listeners as a client on the network meets them: slow or silent clients
//! are cut off, connections are capped (in all and per address), metrics are served on
//! the admin listener only, and a head over the registry's limits is answered as
//! problem+json (what hyper refuses itself, as docs/api.md says).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running server; killed when dropped.
struct Server {
    child: Child,
    api: u16,
    admin: u16,
    _db: TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts the server with `settings` (environment variables) and waits until it serves.
async fn start(settings: &[(&str, &str)]) -> Server {
    let db = TestDb::migrated().await;
    let (api, admin) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-registry"));
    command
        .env_remove("KEYCLOAK_ISSUER")
        .env_remove("CORS_ORIGINS")
        .env("APP_ENV", "dev")
        .env(
            "ENCRYPTION_KEYS",
            "test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("DATABASE_URL", db.url())
        .env("ADDR", format!("127.0.0.1:{api}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("LOG_FORMAT", "json")
        .envs(settings.iter().copied())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("starts");
    let lines = testkit::await_serving(&mut child);
    // Keep reading its log so that the pipe never fills and blocks it.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        api,
        admin,
        _db: db,
    }
}

/// Everything the server sends until it closes the connection; `None` if it has not closed
/// it within `patience` (far longer than any timeout under test).
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut received))
        .await
        .ok()
        .map(|_| received)
}

async fn get(port: u16, path: &str) -> String {
    answer_to(port, &format!("GET {path} HTTP/1.1\r\nHost: x")).await
}

/// A connection to `port` from loopback address `from` (any of 127.0.0.0/8 is this host).
async fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .expect("bound to the source address");
    socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connects")
}

/// What `stream` is answered to a GET of /healthz, up to the server closing it.
async fn health_on(mut stream: TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("sends");
    let answer = read_until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_silent_connection_and_a_half_request_line_are_closed_after_the_header_timeout() {
    let server = start(&[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut silent = TcpStream::connect(("127.0.0.1", server.api))
        .await
        .expect("connects");
    let mut half = TcpStream::connect(("127.0.0.1", server.api))
        .await
        .expect("connects");
    half.write_all(b"GET /hea").await.expect("sends");
    let patience = Duration::from_secs(30);
    assert!(
        read_until_closed(&mut silent, patience).await.is_some(),
        "the silent connection is closed"
    );
    assert!(
        read_until_closed(&mut half, patience).await.is_some(),
        "the half request is closed"
    );
}

#[tokio::test]
async fn a_connection_idle_after_its_answer_is_closed() {
    let server = start(&[
        ("HEADER_READ_TIMEOUT_SECS", "300"),
        ("REQUEST_TIMEOUT_SECS", "1"),
        ("IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.api))
        .await
        .expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("sends");
    let answer = read_until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("closed once idle, although the client asked to keep it alive");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "it was answered first"
    );
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let server = start(&[]).await;
    assert!(
        get(server.api, "/metrics")
            .await
            .starts_with("HTTP/1.1 404")
    );
    let metrics = get(server.admin, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("tenant_registry_"), "{metrics}");
    assert!(
        get(server.admin, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        get(server.api, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = start(&[
        ("MAX_CONNECTIONS", "2"),
        ("HEADER_READ_TIMEOUT_SECS", "300"),
    ])
    .await;
    // From three addresses, so that no address's own cap is what holds the third back.
    let first = connect_from([127, 0, 0, 1], server.api).await;
    let _second = connect_from([127, 0, 0, 2], server.api).await;
    let mut third = connect_from([127, 0, 0, 3], server.api).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("sends");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "no answer while two connections are open");
    drop(first);
    let answer = read_until_closed(&mut third, Duration::from_secs(30))
        .await
        .expect("answered once a slot frees");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let server = start(&[
        ("MAX_CONNECTIONS_PER_ADDRESS", "2"),
        ("HEADER_READ_TIMEOUT_SECS", "300"),
    ])
    .await;
    let greedy = [127, 0, 0, 1];
    let first = connect_from(greedy, server.api).await;
    let second = connect_from(greedy, server.api).await;
    // Both are accepted once a request on the second is answered (accepts are in order).
    let mut second = second;
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("sends");
    let mut byte = [0u8; 1];
    second.read_exact(&mut byte).await.expect("answered");

    let refused = health_on(connect_from(greedy, server.api).await).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("/problems/too-many-connections"),
        "{refused}"
    );
    assert!(refused.contains("retry-after: 1"), "{refused}");

    let other = health_on(connect_from([127, 0, 0, 2], server.api).await).await;
    assert!(
        other.starts_with("HTTP/1.1 200"),
        "another address is served: {other}"
    );

    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = health_on(connect_from(greedy, server.api).await).await;
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed connection gives its place back: {again}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    let server = start(&[
        ("MAX_CONNECTIONS_PER_ADDRESS", "2"),
        ("HEADER_READ_TIMEOUT_SECS", "300"),
        ("TRUSTED_PROXIES", "127.0.0.9/32"),
    ])
    .await;
    let proxy = [127, 0, 0, 9];
    let _held = [
        connect_from(proxy, server.api).await,
        connect_from(proxy, server.api).await,
    ];
    let third = health_on(connect_from(proxy, server.api).await).await;
    assert!(
        third.starts_with("HTTP/1.1 200"),
        "the proxy's connections carry many clients: {third}"
    );
}

/// What the server answers to `head` (a request line and header fields, without the blank
/// line ending them), sent as is with `Connection: close`, up to its closing.
async fn answer_to(port: u16, head: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let answer = read_until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// `count` header fields with `Host` among them, each after its line end.
fn fields(count: usize) -> String {
    let mut fields = String::from("\r\nHost: x");
    for n in 1..count {
        fields.push_str(&format!("\r\nX-Field-{n}: 1"));
    }
    fields
}

/// Whether `answer` is a problem+json of `status` and `kind`.
fn is_problem(answer: &str, status: &str, kind: &str) -> bool {
    answer.starts_with(&format!("HTTP/1.1 {status}"))
        && answer.contains("content-type: application/problem+json")
        && answer.contains(&format!("\"type\":\"/problems/{kind}\""))
}

#[tokio::test]
async fn a_uri_over_the_limit_is_answered_414_as_problem_json() {
    let server = start(&[]).await;
    let long = "a".repeat(api::head_limits::MAX_URI_BYTES);
    let answer = answer_to(
        server.api,
        &format!("GET /v1/tenants?q={long} HTTP/1.1\r\nHost: x"),
    )
    .await;
    assert!(is_problem(&answer, "414", "uri-too-long"), "{answer}");
}

#[tokio::test]
async fn header_fields_over_the_limit_in_bytes_or_in_number_are_answered_431_as_problem_json() {
    let server = start(&[]).await;
    let big = "a".repeat(api::head_limits::MAX_HEADER_BYTES);
    let answer = answer_to(
        server.api,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}"),
    )
    .await;
    assert!(is_problem(&answer, "431", "headers-too-large"), "{answer}");

    let many = fields(api::head_limits::MAX_HEADER_FIELDS);
    let answer = answer_to(server.api, &format!("GET /healthz HTTP/1.1{many}")).await;
    assert!(is_problem(&answer, "431", "headers-too-large"), "{answer}");
}

#[tokio::test]
async fn what_hyper_refuses_before_the_registry_sees_it_gets_hyper_s_bare_status() {
    // docs/api.md lists these: a request line that cannot be parsed, and more header
    // fields than hyper parses (100). Neither reaches a layer that could write a problem.
    let server = start(&[]).await;
    let answer = answer_to(server.api, "GET /healthz NOT-HTTP\r\nHost: x").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("problem+json"), "{answer}");

    let many = fields(120);
    let answer = answer_to(server.api, &format!("GET /healthz HTTP/1.1{many}")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(!answer.contains("problem+json"), "{answer}");
}
