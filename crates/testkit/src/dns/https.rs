//! DNS over HTTPS (RFC 8484) for [`TestDns`]: an HTTP/2 endpoint over TLS on loopback,
//! answering `POST /dns-query` from the same zone. Its certificate is made when it starts
//! (`rcgen`, for 127.0.0.1), and [`DohEndpoint::client_tls`] is a TLS client configuration
//! trusting it and nothing else, so the real resolver's DoH path is exercised with no
//! network and no certificate verification turned off.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use url::Url;

use super::{TestDns, Zone};

/// The path the endpoint answers on (RFC 8484's example, and what resolvers default to).
const PATH: &str = "/dns-query";

/// Where a [`TestDns`]'s DNS-over-HTTPS endpoint is, and how to trust it.
#[derive(Debug, Clone)]
pub struct DohEndpoint {
    url: Url,
    certificate: CertificateDer<'static>,
}

impl DohEndpoint {
    /// Its URL, for `DNS_RESOLVER` or `api::dns::HickoryResolver::https_with_tls`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// A TLS client configuration that trusts this endpoint's certificate only.
    pub fn client_tls(&self) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.certificate.clone())
            .expect("the endpoint's certificate is a valid root");
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

impl TestDns {
    /// Starts answering over DNS over HTTPS too, on a port of its own.
    pub async fn serve_https(&mut self) -> DohEndpoint {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let certificate = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_no_client_auth()
                .with_single_cert(vec![certificate.clone()], key)
                .expect("the certificate and its key");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        self.tasks.push(tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            self.zone.clone(),
        )));
        DohEndpoint {
            url: Url::parse(&format!("https://{address}{PATH}")).expect("a URL"),
            certificate,
        }
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, zone: Arc<Zone>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, acceptor.clone(), zone.clone()));
    }
}

/// One HTTP/2 connection: each stream is one query, answered from the zone (no answer at
/// all while the zone is silent, as a hung server gives none).
async fn serve_connection(stream: TcpStream, acceptor: TlsAcceptor, zone: Arc<Zone>) {
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(mut connection) = h2::server::handshake(tls).await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(answer(request, respond, zone.clone()));
    }
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    zone: Arc<Zone>,
) {
    let refuse = |status: u16| {
        http::Response::builder()
            .status(status)
            .body(())
            .expect("a response")
    };
    if request.method() != http::Method::POST || request.uri().path() != PATH {
        let _ = respond.send_response(refuse(404), true);
        return;
    }
    let mut body = request.into_body();
    let mut query = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return;
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        query.extend_from_slice(&chunk);
    }
    zone.https_queries.fetch_add(1, Ordering::SeqCst);
    let Some(bytes) = zone
        .answer(&query)
        .and_then(|response| response.to_vec().ok())
    else {
        // Silent: hold the stream open, unanswered, until the client gives up.
        return std::future::pending::<()>().await;
    };
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/dns-message")
        .header("content-length", bytes.len())
        .body(())
        .expect("a response");
    if let Ok(mut sending) = respond.send_response(response, false) {
        let _ = sending.send_data(bytes.into(), true);
    }
}
