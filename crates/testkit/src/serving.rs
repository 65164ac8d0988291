//! The server binary as a child process: started as a developer would run it, waited for
//! until its log says it serves, spoken to over loopback HTTP/1.1, killed when dropped.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a starting server may take to say it serves.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// Reads the JSON log on `child`'s stderr (piped) until the line saying it serves, and
/// returns the rest of the log. Keep reading it (or drain it on a thread) so that the pipe
/// never fills and blocks the server.
///
/// # Panics
/// When the server exits or logs for longer than 30 s without saying it serves.
pub fn await_serving(child: &mut Child) -> Lines<BufReader<ChildStderr>> {
    let stderr = child.stderr.take().expect("the server's stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + STARTUP_PATIENCE;
    let serving = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("\"serving\"") => break true,
            Some(Ok(_)) if Instant::now() < deadline => {}
            _ => break false,
        }
    };
    assert!(serving, "the server never said it was serving");
    lines
}

/// The server `binary` (`env!("CARGO_BIN_EXE_tenant-registry")`) in development mode with a
/// test encryption key, none of the caller's settings, and its admin listener on a free port.
pub fn command(binary: impl AsRef<Path>) -> Command {
    let mut command = Command::new(binary.as_ref());
    for variable in [
        "DATABASE_URL",
        "APP_ENV",
        "KEYCLOAK_ISSUER",
        "ADDR",
        "LOG_FORMAT",
        "CORS_ORIGINS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ] {
        command.env_remove(variable);
    }
    command.env(
        "ENCRYPTION_KEYS",
        "test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    // Without APP_ENV the server is prod; these tests run it as a developer would.
    command
        .env("APP_ENV", "dev")
        .env("ADMIN_ADDR", "127.0.0.1:0");
    command
}

/// A platform admin key for the database at `database_url`, made by `binary` as an operator
/// makes the first one.
pub fn admin_key(binary: impl AsRef<Path>, database_url: &str) -> String {
    let created = command(binary)
        .args(["create-admin-key", "--name", "tests", "--expires-in", "1"])
        .env("DATABASE_URL", database_url)
        .output()
        .expect("runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A server process, killed if a test ends before it exits.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `server` (see [`command`]) on `port` over `database_url`, once it says it serves; and the
/// rest of its log, as it comes.
pub fn serve(
    mut server: Command,
    database_url: &str,
    port: u16,
) -> (Running, Lines<BufReader<ChildStderr>>) {
    let mut child = server
        .env("DATABASE_URL", database_url)
        .env("ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let lines = await_serving(&mut child);
    (Running(child), lines)
}

/// An answer read off the wire.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body, as sent (chunked bodies are not decoded).
    pub body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request (`Connection: close`) with `key` as bearer, `headers` and a JSON
/// `body` to the server on loopback `port`; fails on any I/O failure, so callers can retry.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> std::io::Result<Answer> {
    let body = body.map(ToString::to_string).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {answer:?}"),
            )
        })?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Sends one POST with `key` and a JSON body; answers its status and the whole answer.
///
/// # Panics
/// When the request cannot be sent or answered.
pub async fn post(port: u16, key: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    let answer = send(port, "POST", path, key, &[], Some(body))
        .await
        .unwrap_or_else(|error| panic!("POST {path}: {error}"));
    (
        answer.status,
        format!("{}\r\n\r\n{}", answer.head, answer.body),
    )
}
