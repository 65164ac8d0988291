//! Outbound HTTP to addresses that callers give (an IdP's discovery document, SAML
//! metadata, webhook receivers), made so that it cannot be turned against the platform's
//! own network.
//!
//! - The destination is checked where it cannot be dodged: a host name is resolved by this
//!   crate's resolver, which hands the HTTP client only the addresses the [`Policy`]
//!   permits, so the client connects to exactly what was checked (no second lookup for DNS
//!   rebinding to race); a host given as an address, which the client connects to without
//!   resolving, is checked before sending.
//! - Redirects are not followed (a 3xx is an answer like any other), and proxy variables
//!   are ignored, since a proxy would connect on our behalf to whatever it is told.
//! - Every request has a deadline that covers reading the body, and bodies are read as they
//!   arrive under a cap.
//! - [`Error`]'s text is what the caller who gave the URL may read: one generic text for
//!   every network failure (no such host, no connection, an address refused, a timeout),
//!   so answers cannot be used to map a network. The cause goes to the log.

mod policy;
mod resolver;

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

pub use policy::{MAX_URL_LENGTH, Policy, Reach, UrlError, reach};
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode};
pub use url::Url;

use resolver::{AllRefused, PolicyResolver};

/// The deadline of a [`Request`] unless it sets its own.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// What the caller reads for every failure to reach the destination.
const UNREACHABLE: &str = "could not be fetched";

/// Why an outbound request failed. `Display` is the text for whoever gave the URL; the
/// variants and their fields are for the program and the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL breaks a rule of the policy; its text alone decides, so the reason is shown.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Every address the host name resolved to is outside the policy.
    #[error("{UNREACHABLE}")]
    Refused {
        /// The host name.
        host: String,
        /// What it resolved to.
        addresses: Vec<IpAddr>,
    },
    /// The deadline passed, connecting or reading.
    #[error("{UNREACHABLE}")]
    Timeout,
    /// No such host, no connection, a TLS failure, or a broken HTTP exchange.
    #[error("{UNREACHABLE}")]
    Unreachable(#[source] reqwest::Error),
    /// The server answered with a status outside 2xx where a document was expected. Only
    /// destinations the policy permits can answer at all.
    #[error("{UNREACHABLE}: the server answered HTTP {0}")]
    Status(u16),
    /// The body is longer than the cap.
    #[error("serves more than {} KiB", .limit.div_ceil(1024))]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A document that should be text is not UTF-8.
    #[error("is not UTF-8 text")]
    NotText,
}

/// The HTTP client could not be set up (its TLS roots, for instance).
#[derive(Debug, thiserror::Error)]
#[error("the outbound HTTP client could not be built: {0}")]
pub struct BuildError(#[source] reqwest::Error);

/// One outbound request: method, URL, headers, body and deadline.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    deadline: Duration,
}

impl Request {
    /// A GET of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            url: url.into(),
            headers: HeaderMap::new(),
            body: None,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// A POST of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: Method::POST,
            body: Some(body.into()),
            ..Self::get(url)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The longest the whole exchange may take, from connecting to the end of the body.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// A server's answer, whatever its status; the body is read with one of the `body_`
/// methods, within the request's deadline.
#[derive(Debug)]
pub struct Answer {
    response: reqwest::Response,
    url: Url,
}

impl Answer {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The first `max` bytes of the body (all of it when shorter); the rest is never read.
    pub async fn body_prefix(mut self, max: usize) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while body.len() < max {
            let Some(chunk) = self.next_chunk().await? else {
                break;
            };
            let room = max - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(body)
    }

    /// The whole body, or [`Error::TooLarge`] as soon as it is known to exceed `max` bytes
    /// (from its length, or while it arrives without one), so a larger body costs no more
    /// than `max`.
    pub async fn body_within(mut self, max: usize) -> Result<Vec<u8>, Error> {
        let too_large = || Error::TooLarge { limit: max };
        if self
            .response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.response.chunk().await {
            Ok(chunk) => Ok(chunk.map(|bytes| bytes.to_vec())),
            Err(error) => Err(failed(&self.url, error)),
        }
    }
}

/// The outbound HTTP client: one per policy, cheap to clone (clones share connections).
#[derive(Debug, Clone)]
pub struct Egress {
    policy: Policy,
    client: reqwest::Client,
}

impl Egress {
    /// A client that reaches only what `policy` permits.
    pub fn new(policy: Policy) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver { policy }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!policy.allow_http)
            .user_agent(concat!("tenant-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError)?;
        Ok(Self { policy, client })
    }

    /// The policy it enforces.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// `url` parsed, if the policy's URL rules allow it (see [`Policy::check_url`]).
    pub fn check_url(&self, url: &str) -> Result<Url, UrlError> {
        self.policy.check_url(url)
    }

    /// Sends `request` and returns the answer, whatever its status.
    pub async fn send(&self, request: Request) -> Result<Answer, Error> {
        let url = self.policy.check_url(&request.url).inspect_err(|rule| {
            tracing::info!(%rule, ?rule, "outbound request refused by its URL");
        })?;
        // A client span named by the method alone (OpenTelemetry's HTTP conventions): the
        // path and query may carry secrets, so only the origin is recorded.
        let span = tracing::info_span!(
            "outbound",
            otel.name = request.method.as_str(),
            otel.kind = "client",
            http.request.method = request.method.as_str(),
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default(),
            http.response.status_code = tracing::field::Empty,
        );
        let mut headers = request.headers;
        span.in_scope(|| telemetry::inject_current(&mut headers));
        let mut builder = self
            .client
            .request(request.method, url.clone())
            .headers(headers)
            .timeout(request.deadline);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        match builder.send().instrument(span.clone()).await {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
                Ok(Answer { response, url })
            }
            Err(error) => Err(failed(&url, error)),
        }
    }

    /// The text at `url`: a GET answered 2xx with a UTF-8 body of at most `max_bytes`,
    /// all within `deadline`.
    pub async fn fetch_text(
        &self,
        url: &str,
        deadline: Duration,
        max_bytes: usize,
    ) -> Result<String, Error> {
        let answer = self.send(Request::get(url).deadline(deadline)).await?;
        let status = answer.status();
        if !status.is_success() {
            tracing::info!(origin = %origin(&answer.url), %status, "outbound fetch answered outside 2xx");
            return Err(Error::Status(status.as_u16()));
        }
        let body = answer.body_within(max_bytes).await?;
        String::from_utf8(body).map_err(|_| Error::NotText)
    }
}

/// Scheme, host and port only: paths and queries may carry secrets (a webhook's token).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The error for the caller, after logging its cause.
fn failed(url: &Url, error: reqwest::Error) -> Error {
    // reqwest's text names the whole URL, whose path and query may hold a secret.
    let error = error.without_url();
    let mut causes = vec![error.to_string()];
    let mut source = error.source();
    let mut refused = None;
    while let Some(cause) = source {
        causes.push(cause.to_string());
        if let Some(all_refused) = cause.downcast_ref::<AllRefused>() {
            refused = Some(Error::Refused {
                host: all_refused.host.clone(),
                addresses: all_refused.addresses.clone(),
            });
        }
        source = cause.source();
    }
    tracing::info!(origin = %origin(url), cause = %causes.join(": "), "outbound request failed");
    match refused {
        Some(refused) => refused,
        None if error.is_timeout() => Error::Timeout,
        None => Error::Unreachable(error),
    }
}
