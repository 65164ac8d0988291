//! Load from `wrk` against the server under test, and what one run measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::server::{SERVER_ADDR, Server};
use super::{INGEST_BATCH, Options};

/// One measured case.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub case: String,
    pub tenants: Option<u32>,
    /// Concurrent connections of the load.
    pub connections: u32,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub rss_mb: Option<f64>,
    /// Events per request, for the ingest case.
    pub per_request: u32,
}

/// Drives `wrk` against the server.
pub struct Load<'a> {
    pub work: &'a Path,
    pub key: &'a str,
    pub options: &'a Options,
    /// Connections of every run, when not the options' number.
    pub connections: Option<u32>,
}

impl<'a> Load<'a> {
    /// The same load with `connections` connections.
    pub fn with_connections(&self, connections: u32) -> Load<'a> {
        Load {
            connections: Some(connections),
            ..*self
        }
    }

    fn connections(&self) -> u32 {
        self.connections.unwrap_or(self.options.connections)
    }

    /// Writes a wrk script under a name of its own, since two runs may load at once.
    pub fn script(&self, name: &str, source: &str) -> Result<PathBuf, String> {
        static WRITTEN: AtomicUsize = AtomicUsize::new(0);
        let run = WRITTEN.fetch_add(1, Ordering::Relaxed);
        let path = self.work.join(format!("{run}-{name}"));
        let script = format!(
            "{}\n{source}\n{}",
            include_str!("threads.lua"),
            include_str!("report.lua")
        );
        std::fs::write(&path, script)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        Ok(path)
    }

    /// `wrk` with two threads against the server on `address`, authenticated with the
    /// bench key.
    pub fn run_wrk(
        &self,
        address: &str,
        connections: u32,
        seconds: u64,
        script: &Path,
        args: &[String],
    ) -> Result<std::process::Output, String> {
        Command::new("wrk")
            .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
            .args(["--timeout", "10s", "-H"])
            .arg(format!("Authorization: Bearer {}", self.key))
            .arg("-s")
            .arg(script)
            .arg(format!("http://{address}"))
            .arg("--")
            .args(args)
            .output()
            .map_err(|error| format!("cannot run wrk: {error}"))
    }

    pub fn wrk(
        &self,
        server: &Server,
        case: &str,
        tenants: Option<u32>,
        script: &Path,
        args: &[String],
        per_request: u32,
    ) -> Result<Measurement, String> {
        eprintln!(
            "running: {case}{}",
            tenants
                .map(|count| format!(" ({count} tenants)"))
                .unwrap_or_default()
        );
        let connections = self.connections();
        let output = self.run_wrk(
            server.address(),
            connections,
            self.options.duration,
            script,
            args,
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("BENCH "))
            .ok_or_else(|| {
                format!(
                    "wrk printed no result for {case}: {stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        let number = |name: &str| -> f64 {
            line.split(&format!("\"{name}\":"))
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0.0)
        };
        let seconds = number("duration_us") / 1e6;
        let measurement = Measurement {
            case: case.to_owned(),
            tenants,
            connections,
            rps: if seconds > 0.0 {
                number("requests") / seconds
            } else {
                0.0
            },
            p50_ms: number("p50_us") / 1000.0,
            p99_ms: number("p99_us") / 1000.0,
            errors: number("errors") as u64,
            rss_mb: server.rss_mb(),
            per_request,
        };
        eprintln!(
            "  {:.0} rps, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            measurement.rps, measurement.p50_ms, measurement.p99_ms, measurement.errors
        );
        Ok(measurement)
    }

    pub fn get(
        &self,
        server: &Server,
        case: &str,
        tenants: Option<u32>,
        paths: &Path,
    ) -> Result<Measurement, String> {
        let script = self.script("paths.lua", include_str!("paths.lua"))?;
        self.wrk(
            server,
            case,
            tenants,
            &script,
            &[paths.display().to_string()],
            1,
        )
    }

    /// Requests every path of `paths` in turn for long enough to pass over all of them
    /// once, so the cached cases measure a warm cache; nothing is recorded.
    pub fn warm_up(&self, tenants: u32, paths: &Path) -> Result<(), String> {
        let script = self.script("sequential.lua", include_str!("sequential.lua"))?;
        let seconds = (tenants / 4000).clamp(2, 40);
        eprintln!("warming the cache: every slug once ({seconds} s)");
        let args = [paths.display().to_string(), "2".to_owned()];
        let output = self.run_wrk(SERVER_ADDR, 16, u64::from(seconds), &script, &args)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the warm-up failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    pub fn create_tenants(
        &self,
        server: &Server,
        tenants: Option<u32>,
    ) -> Result<Measurement, String> {
        let script = self.script("create_tenant.lua", include_str!("create_tenant.lua"))?;
        let run_id = std::process::id().to_string();
        self.wrk(server, "tenant create", tenants, &script, &[run_id], 1)
    }

    pub fn ingest(
        &self,
        server: &Server,
        tenants: Option<u32>,
        slugs: &Path,
    ) -> Result<Measurement, String> {
        let script = self.script("ingest.lua", include_str!("ingest.lua"))?;
        self.wrk(
            server,
            &format!("audit ingest, batches of {INGEST_BATCH}"),
            tenants,
            &script,
            &[slugs.display().to_string(), INGEST_BATCH.to_string()],
            INGEST_BATCH,
        )
    }
}
