//! A real S3 API on loopback for the backup tests: moto's server (`moto[server]` from PyPI,
//! installed by `.ci/run`), a maintained S3 emulation that speaks the wire protocol
//! object_store uses (SigV4 requests, multipart uploads), so the bucket code runs unchanged.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server, stopped when dropped.
pub struct S3Server {
    child: Child,
    address: SocketAddr,
}

impl S3Server {
    /// Starts one on a free loopback port and waits until it answers.
    ///
    /// # Panics
    /// When moto cannot be started (`python3 -m pip install 'moto[server]'`; `.ci/run` does)
    /// or does not answer within 60 s.
    pub async fn start() -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's S3 server starts (python3 -m pip install 'moto[server]')");
        let server = Self {
            child,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(server.address)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "moto's S3 server did not answer on {} within 60 s (is moto[server] installed?)",
                server.address
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Its endpoint, `http://127.0.0.1:…`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The object_store settings that point a bucket at this server.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
            ("aws_access_key_id", "testing".to_owned()),
            ("aws_secret_access_key", "testing".to_owned()),
        ]
    }

    /// Creates bucket `name` (moto starts with none).
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn create_bucket(&self, name: &str) {
        let mut stream = tokio::net::TcpStream::connect(self.address)
            .await
            .expect("the S3 server");
        let request = format!(
            "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("sent");
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
