//! HTTPS on the API listener: rustls (TLS 1.2 and 1.3, ring) with the certificate and key
//! read from files, read again when they change (certificate rotation without a restart),
//! and optionally client certificates checked against a CA (service-to-service mTLS).
//!
//! Each new connection compares the files' identity (inode, size, modification time) with
//! the pair it serves and reloads when one differs, so a rotated pair is served from the
//! next handshake on: cert-manager and Kubernetes Secret volumes replace files by renaming a
//! new directory in place, which changes the inode. A pair that cannot be loaded (a file
//! half written, a key that does not match) is logged and the previous one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the server's certificate chain, its key and the optional client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first (`TLS_CERT_FILE`).
    pub cert: PathBuf,
    /// PEM private key, PKCS#8, PKCS#1 or SEC1 (`TLS_KEY_FILE`).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate they issued
    /// (`TLS_CLIENT_CA_FILE`).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind needed.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say) or the CA.
    #[error("{0}")]
    Rejected(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// A file's identity: it changes when the file is rewritten or replaced.
type Stamp = Option<(u64, u64, std::time::SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.ino(), metadata.len(), metadata.modified().ok()?))
}

/// Accepts TLS connections with the pair the files hold now.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: Mutex<(Vec<Stamp>, tokio_rustls::TlsAcceptor)>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsAcceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the files now: a pair that cannot serve is an error at start, not at the
    /// first connection.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let acceptor = acceptor(&files)?;
        Ok(Self {
            files,
            current: Mutex::new((stamps, acceptor)),
        })
    }

    /// The acceptor for a new connection: the files' pair, reloaded if they changed.
    pub(crate) fn current(&self) -> tokio_rustls::TlsAcceptor {
        let now = stamps(&self.files);
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.0 != now {
            match acceptor(&self.files) {
                Ok(reloaded) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS files changed; serving the new pair");
                    *current = (now, reloaded);
                }
                Err(error) => {
                    // Remember the stamps anyway: one warning per change, not one per
                    // connection, until the files change again.
                    tracing::warn!(%error, "TLS files changed but cannot be loaded; serving the previous pair");
                    current.0 = now;
                }
            }
        }
        current.1.clone()
    }
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| stamp(path))
    .collect()
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| file_error(&files.key, format!("no usable PEM private key: {error}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::Rejected(error.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots
                    .add(certificate)
                    .map_err(|error| file_error(path, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| file_error(path, error))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        TlsError::Rejected(format!(
            "{} and {}: {error}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    // The serve loop speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
