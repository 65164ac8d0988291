//! The server under test as a child process, and bare HTTP/1.0 exchanges with it.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the server under test listens.
pub const SERVER_ADDR: &str = "127.0.0.1:18090";

/// A server under test (the registry, or the plain peer), as a child process.
pub struct Server {
    child: Child,
    address: String,
}

impl Server {
    pub fn start(
        root: &Path,
        database_url: &str,
        cache_entries: Option<u64>,
    ) -> Result<Self, String> {
        let mut command = Command::new(root.join("target/release/tenant-registry"));
        command
            .env("DATABASE_URL", database_url)
            .env("ADDR", SERVER_ADDR)
            .env("APP_ENV", "dev")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .env(super::provisioning::CLUSTER_ENV, database_url)
            .current_dir(root)
            .stdout(Stdio::null());
        if let Some(entries) = cache_entries {
            command.env("TENANT_CACHE_ENTRIES", entries.to_string());
        }
        Self::spawn(command, SERVER_ADDR, "/readyz")
    }

    /// Starts `command`, listening on `address`, and waits until `ready_path` answers 200.
    pub fn spawn(mut command: Command, address: &str, ready_path: &str) -> Result<Self, String> {
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {command:?}: {error}"))?;
        let server = Self {
            child,
            address: address.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_at(address, "GET", ready_path, None, None)
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{address} did not become ready within 30 s"))
    }

    /// Where it listens.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MB.
    pub fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kilobytes: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kilobytes / 1024.0)
    }

    pub fn stop(&mut self) {
        let _ = self.terminate();
    }

    /// Sends SIGTERM and waits for the process to end; how it ended.
    pub fn terminate(&mut self) -> Result<ExitStatus, String> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().map_err(|error| error.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// A bare HTTP/1.0 exchange with the registry under test: `(status, body)`.
pub fn http(
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    http_at(SERVER_ADDR, method, path, key, body)
}

/// A bare HTTP/1.0 exchange with the server on `address`: `(status, body)`.
pub fn http_at(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(address).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|error| error.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\n");
    if let Some(key) = key {
        let _ = write!(request, "Authorization: Bearer {key}\r\n");
    }
    if let Some(body) = body {
        let _ = write!(
            request,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream
        .write_all(request.as_bytes())
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:.80}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
