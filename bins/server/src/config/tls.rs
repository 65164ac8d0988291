//! HTTPS on the API listener: the certificate and key files, and the client CA for mTLS.

use std::path::PathBuf;

/// `TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (server certificate first); with TLS_KEY_FILE, ADDR speaks
    /// HTTPS. Read again when the file changes.
    #[arg(long, env = "TLS_CERT_FILE", global = true)]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of TLS_CERT_FILE's certificate.
    #[arg(long, env = "TLS_KEY_FILE", global = true)]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate one of them issued (mTLS).
    #[arg(long, env = "TLS_CLIENT_CA_FILE", global = true)]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve HTTPS with, `None` for plain HTTP; an incomplete set is an error
    /// naming what is missing.
    pub fn files(&self) -> Result<Option<api::tls::TlsFiles>, String> {
        let set = |path: &Option<PathBuf>| path.clone().filter(|path| !path.as_os_str().is_empty());
        match (
            set(&self.tls_cert_file),
            set(&self.tls_key_file),
            set(&self.tls_client_ca_file),
        ) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(api::tls::TlsFiles {
                cert,
                key,
                client_ca,
            })),
            (None, None, Some(_)) => Err(
                "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE (client certificates are checked over HTTPS)"
                    .to_owned(),
            ),
            (Some(_), None, _) => Err("TLS_CERT_FILE is set but TLS_KEY_FILE is not".to_owned()),
            (None, Some(_), _) => Err("TLS_KEY_FILE is set but TLS_CERT_FILE is not".to_owned()),
        }
    }
}
