//! The server binary as a child process: waiting until its log says it serves.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr};
use std::time::{Duration, Instant};

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
