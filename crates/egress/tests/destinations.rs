//! The policy enforced against real servers on loopback: what is refused, what is reached,
//! what the caller reads, and that nothing connects where the policy says no.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use egress::{Egress, Error, HeaderName, HeaderValue, Policy, Request, UrlError};

/// Plain http allowed (the test servers speak no TLS), private addresses refused: the
/// address rules of the strict policy.
const PUBLIC_ONLY: Policy = Policy {
    allow_http: true,
    allow_private: false,
};

const GENERIC: &str = "could not be fetched";

fn client(policy: Policy) -> Egress {
    Egress::new(policy).expect("the client builds")
}

/// A port on loopback that accepts nothing by itself: `connections` tells how many clients
/// reached it, without waiting.
struct Watched(TcpListener);

impl Watched {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        Self(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("its address").port()
    }

    /// Connections the kernel completed (the handshake happens before `accept`).
    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

/// Serves `router` on a loopback port.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port")
        .port()
}

#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_when_connecting_and_nothing_connects() {
    let target = Watched::new();
    let port = target.port();
    for (policy, url) in [
        (Policy::STRICT, format!("https://localhost:{port}/metadata")),
        (PUBLIC_ONLY, format!("http://localhost:{port}/metadata")),
        (PUBLIC_ONLY, format!("http://LOCALHOST:{port}/metadata")),
    ] {
        let error = client(policy)
            .fetch_text(&url, Duration::from_secs(5), 1024)
            .await
            .expect_err("refused");
        match &error {
            Error::Refused { host, addresses } => {
                assert_eq!(host, "localhost");
                assert!(
                    addresses.iter().all(|address| address.is_loopback()),
                    "{addresses:?}"
                );
            }
            other => panic!("{url}: {other:?}"),
        }
        assert_eq!(error.to_string(), GENERIC);
    }
    assert_eq!(
        target.connections(),
        0,
        "the refusal came before any connection"
    );
}

#[tokio::test]
async fn address_literals_outside_the_policy_are_refused_before_sending() {
    let target = Watched::new();
    let port = target.port();
    for url in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://127.1:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let error = client(Policy::STRICT)
            .send(Request::get(&url))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, Error::Url(UrlError::NotPublic { range: "loopback" })),
            "{url}: {error:?}"
        );
    }
    assert_eq!(target.connections(), 0);
}

#[tokio::test]
async fn a_closed_port_an_open_port_and_an_answering_server_read_alike_when_refused() {
    let open = Watched::new();
    let answering = serve(Router::new().route("/", get(|| async { "secret" }))).await;
    let mut texts = Vec::new();
    for port in [closed_port(), open.port(), answering.port()] {
        let error = client(PUBLIC_ONLY)
            .fetch_text(
                &format!("http://localhost:{port}/"),
                Duration::from_secs(5),
                1024,
            )
            .await
            .expect_err("refused");
        texts.push(error.to_string());
    }
    assert_eq!(texts, [GENERIC; 3]);
    assert_eq!(open.connections(), 0);
}

#[tokio::test]
async fn network_failures_of_permitted_destinations_all_read_alike() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let silent_port = silent.local_addr().expect("its address").port();
    // Accepts and never answers, keeping the connection open.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let egress = client(Policy::DEVELOPMENT);
    let closed = egress
        .fetch_text(
            &format!("http://127.0.0.1:{}/", closed_port()),
            Duration::from_secs(5),
            1024,
        )
        .await
        .expect_err("nothing listens");
    assert!(matches!(closed, Error::Unreachable(_)), "{closed:?}");
    let timed_out = egress
        .fetch_text(
            &format!("http://127.0.0.1:{silent_port}/"),
            Duration::from_millis(300),
            1024,
        )
        .await
        .expect_err("no answer");
    assert!(matches!(timed_out, Error::Timeout), "{timed_out:?}");
    let refused = Error::Refused {
        host: "internal.example".to_owned(),
        addresses: vec!["10.0.0.1".parse().expect("an address")],
    };
    for error in [closed, timed_out, refused] {
        assert_eq!(error.to_string(), GENERIC);
    }
    holder.abort();
}

#[tokio::test]
async fn a_failed_request_keeps_no_trace_of_its_path_or_query() {
    let egress = client(Policy::DEVELOPMENT);
    let failed = egress
        .fetch_text(
            &format!(
                "http://127.0.0.1:{}/hook/SECRET-PATH?token=SECRET-QUERY",
                closed_port()
            ),
            Duration::from_secs(5),
            1024,
        )
        .await
        .expect_err("nothing listens");
    let Error::Unreachable(cause) = &failed else {
        panic!("{failed:?}");
    };
    let mut texts = vec![format!("{failed:?}"), cause.to_string()];
    let mut source = std::error::Error::source(cause);
    while let Some(next) = source {
        texts.push(next.to_string());
        source = next.source();
    }
    for text in texts {
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
async fn loopback_is_reached_when_private_addresses_are_allowed() {
    let server = serve(Router::new().route("/doc", get(|| async { "<EntityDescriptor/>" }))).await;
    let egress = client(Policy::DEVELOPMENT);
    for url in [
        format!("http://127.0.0.1:{}/doc", server.port()),
        format!("http://localhost:{}/doc", server.port()),
    ] {
        let text = egress
            .fetch_text(&url, Duration::from_secs(5), 1024)
            .await
            .expect("fetched");
        assert_eq!(text, "<EntityDescriptor/>");
    }
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_answered_not_followed() {
    let private = Watched::new();
    let location = format!("http://127.0.0.1:{}/latest/meta-data/", private.port());
    let redirecting = serve(Router::new().route(
        "/metadata",
        get(move || {
            let location = location.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }
        }),
    ))
    .await;
    let url = format!("http://127.0.0.1:{}/metadata", redirecting.port());
    let egress = client(Policy::DEVELOPMENT);
    let answer = egress.send(Request::get(&url)).await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::FOUND);
    let error = egress
        .fetch_text(&url, Duration::from_secs(5), 1024)
        .await
        .expect_err("a 302 is no document");
    assert!(matches!(error, Error::Status(302)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "could not be fetched: the server answered HTTP 302"
    );
    assert_eq!(private.connections(), 0, "the redirect was not followed");
}

/// Serves `size` bytes at `/large`, in chunks with no length, or with a Content-Length.
fn large_body(size: usize, with_length: bool) -> Router {
    Router::new().route(
        "/large",
        get(move || async move {
            if with_length {
                return axum::body::Body::from(vec![b'x'; size]);
            }
            let chunks =
                (0..size.div_ceil(4096)).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 4096]));
            axum::body::Body::from_stream(futures::stream::iter(chunks))
        }),
    )
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_with_or_without_a_length() {
    let egress = client(Policy::DEVELOPMENT);
    for with_length in [false, true] {
        let server = serve(large_body(3 * 1024 * 1024, with_length)).await;
        let error = egress
            .fetch_text(
                &format!("http://127.0.0.1:{}/large", server.port()),
                Duration::from_secs(5),
                1024 * 1024,
            )
            .await
            .expect_err("too large");
        assert!(
            matches!(error, Error::TooLarge { limit: 1_048_576 }),
            "{with_length}: {error:?}"
        );
        assert_eq!(error.to_string(), "serves more than 1024 KiB");
    }
}

#[tokio::test]
async fn a_body_prefix_reads_no_more_than_asked() {
    let server = serve(large_body(3 * 1024 * 1024, false)).await;
    let answer = client(Policy::DEVELOPMENT)
        .send(Request::get(format!(
            "http://127.0.0.1:{}/large",
            server.port()
        )))
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let prefix = answer.body_prefix(1024).await.expect("the first KiB");
    assert_eq!(prefix, vec![b'x'; 1024]);
}

#[tokio::test]
async fn a_post_carries_its_headers_and_body_and_any_status_is_an_answer() {
    let receiver = serve(Router::new().route(
        "/hook",
        post(|headers: HeaderMap, body: String| async move {
            let id = headers
                .get("webhook-id")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (StatusCode::GONE, format!("{id}:{body}"))
        }),
    ))
    .await;
    let answer = client(Policy::DEVELOPMENT)
        .send(
            Request::post(
                format!("http://127.0.0.1:{}/hook", receiver.port()),
                b"{\"type\":\"tenant.created\"}".to_vec(),
            )
            .header(
                HeaderName::from_static("webhook-id"),
                HeaderValue::from_static("msg_1"),
            )
            .deadline(Duration::from_secs(10)),
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::GONE);
    let body = answer.body_prefix(1024).await.expect("its body");
    assert_eq!(body, b"msg_1:{\"type\":\"tenant.created\"}");
}

/// Serves at `/endless` a body that never ends, or one byte every 100 ms that would end far
/// under any cap but long past a short deadline.
fn never_ending(trickle: bool) -> Router {
    Router::new().route(
        "/endless",
        get(move || async move {
            let chunks = futures::stream::unfold((), move |()| async move {
                if trickle {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok::<_, std::io::Error>(vec![b'x']), ()))
                } else {
                    Some((Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]), ()))
                }
            });
            axum::body::Body::from_stream(chunks)
        }),
    )
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_at_the_cap() {
    let server = serve(never_ending(false)).await;
    let error = client(Policy::DEVELOPMENT)
        .fetch_text(
            &format!("http://127.0.0.1:{}/endless", server.port()),
            Duration::from_secs(30),
            1024 * 1024,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(error, Error::TooLarge { limit: 1_048_576 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_body_that_trickles_past_the_deadline_is_cut_at_the_deadline() {
    let server = serve(never_ending(true)).await;
    let error = client(Policy::DEVELOPMENT)
        .fetch_text(
            &format!("http://127.0.0.1:{}/endless", server.port()),
            Duration::from_millis(500),
            1024 * 1024,
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, Error::Timeout), "{error:?}");
    assert_eq!(error.to_string(), GENERIC);
}
