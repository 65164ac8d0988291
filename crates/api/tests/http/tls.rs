//! HTTPS on the serve loop: the certificate files, their rotation without a restart, a
//! pair that cannot load, and client certificates (mTLS), with certificates made by the
//! test (`testkit::tls`, rcgen).

use std::net::SocketAddr;
use std::sync::Arc;

use api::tls::{TlsAcceptor, TlsFiles};
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::TestApp;
use testkit::tls::{CertDir, Leaf, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The app's API router served over TLS from `files` on a loopback port.
struct HttpsServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: &TestApp, files: TlsFiles) -> HttpsServer {
    let acceptor = TlsAcceptor::load(files).expect("the TLS files load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("the bound address");
    let task = tokio::spawn(api::serve(
        listener,
        app.app.router.clone(),
        api::ConnectionLimits::default(),
        Some(Arc::new(acceptor)),
        std::future::pending(),
    ));
    HttpsServer { address, task }
}

fn write_pair(dir: &CertDir, leaf: &Leaf) -> TlsFiles {
    TlsFiles {
        cert: dir.write("tls.crt", &leaf.cert_pem),
        key: dir.write("tls.key", &leaf.key_pem),
        client_ca: None,
    }
}

/// What a client trusting `ca` (and presenting `identity`, if any) was served.
struct Answer {
    status_line: String,
    server_certificate: CertificateDer<'static>,
}

async fn get(
    address: SocketAddr,
    ca: &TestCa,
    identity: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).expect("the CA as a root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key_der.clone_key())
            .expect("a client identity"),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    let server_name = ServerName::try_from("localhost").expect("a name");
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|error| format!("handshake: {error}"))?;
    let server_certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first().cloned())
        .ok_or("no server certificate")?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|error| format!("writing: {error}"))?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|error| format!("reading: {error}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    if status_line.is_empty() {
        return Err("no answer".to_owned());
    }
    Ok(Answer {
        status_line,
        server_certificate,
    })
}

const ANY_VERSION: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn https_is_served_from_the_certificate_files_over_tls_1_3_and_1_2() {
    let app = TestApp::new().await;
    let ca = TestCa::new("test CA");
    let leaf = ca.server(&["localhost"]);
    let dir = CertDir::new();
    let server = serve(&app, write_pair(&dir, &leaf)).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let answer = get(server.address, &ca, None, versions)
            .await
            .expect("an HTTPS answer");
        assert_eq!(answer.status_line, "HTTP/1.1 200 OK");
        assert_eq!(answer.server_certificate, leaf.cert_der);
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_from_the_next_connection_without_a_restart() {
    let app = TestApp::new().await;
    let ca = TestCa::new("test CA");
    let (first, second) = (ca.server(&["localhost"]), ca.server(&["localhost"]));
    let dir = CertDir::new();
    let server = serve(&app, write_pair(&dir, &first)).await;
    let before = get(server.address, &ca, None, ANY_VERSION)
        .await
        .expect("served");
    assert_eq!(before.server_certificate, first.cert_der);
    write_pair(&dir, &second);
    let after = get(server.address, &ca, None, ANY_VERSION)
        .await
        .expect("served after the rotation");
    assert_eq!(after.status_line, "HTTP/1.1 200 OK");
    assert_eq!(after.server_certificate, second.cert_der);
}

#[tokio::test]
async fn a_rotated_pair_that_cannot_load_leaves_the_previous_one_serving() {
    let app = TestApp::new().await;
    let ca = TestCa::new("test CA");
    let leaf = ca.server(&["localhost"]);
    let dir = CertDir::new();
    let server = serve(&app, write_pair(&dir, &leaf)).await;
    // A key of another certificate: the pair does not match.
    dir.write("tls.key", &ca.server(&["localhost"]).key_pem);
    let answer = get(server.address, &ca, None, ANY_VERSION)
        .await
        .expect("still served");
    assert_eq!(answer.server_certificate, leaf.cert_der);
}

#[tokio::test]
async fn with_a_client_ca_a_client_without_a_certificate_is_refused_and_one_with_is_served() {
    let app = TestApp::new().await;
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let stranger = TestCa::new("another CA");
    let dir = CertDir::new();
    let files = TlsFiles {
        client_ca: Some(dir.write("client-ca.crt", &clients.pem())),
        ..write_pair(&dir, &ca.server(&["localhost"]))
    };
    let server = serve(&app, files).await;
    let anonymous = get(server.address, &ca, None, ANY_VERSION).await;
    assert!(anonymous.is_err(), "served without a client certificate");
    let foreign = get(
        server.address,
        &ca,
        Some(&stranger.client("intruder")),
        ANY_VERSION,
    )
    .await;
    assert!(foreign.is_err(), "served a certificate of another CA");
    let known = get(
        server.address,
        &ca,
        Some(&clients.client("billing")),
        ANY_VERSION,
    )
    .await
    .expect("served with a client certificate");
    assert_eq!(known.status_line, "HTTP/1.1 200 OK");
}

#[test]
fn a_key_that_does_not_match_or_a_file_without_pem_is_an_error_naming_the_files() {
    let ca = TestCa::new("test CA");
    let dir = CertDir::new();
    let mismatched = TlsFiles {
        key: dir.write("other.key", &ca.server(&["localhost"]).key_pem),
        ..write_pair(&dir, &ca.server(&["localhost"]))
    };
    let error = TlsAcceptor::load(mismatched)
        .expect_err("a mismatched pair")
        .to_string();
    assert!(
        error.contains("tls.crt") && error.contains("other.key"),
        "{error}"
    );
    let empty = TlsFiles {
        cert: dir.write("empty.crt", "not PEM\n"),
        ..write_pair(&dir, &ca.server(&["localhost"]))
    };
    let error = TlsAcceptor::load(empty)
        .expect_err("no certificate")
        .to_string();
    assert!(
        error.contains("empty.crt") && error.contains("no PEM certificate"),
        "{error}"
    );
}
