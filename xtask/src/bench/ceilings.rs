//! What the cases are measured against and explained by: `pgbench -S` as the database's
//! ceiling, and a `perf` profile of the server.

#[allow(clippy::wildcard_imports)]
use super::*;
/// `perf record` of the server while a case runs, when perf is installed.
pub(super) struct Profile {
    recorder: Child,
    data: PathBuf,
}

impl Profile {
    pub(super) fn start(server: &Server, seconds: u64, work: &Path) -> Option<Self> {
        let data = work.join("perf-uncached.data");
        let recorder = Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-g",
                "-p",
                &server.pid().to_string(),
                "-o",
            ])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { recorder, data })
    }

    /// The report section: where the server's CPU went, by library and by function.
    pub(super) fn finish(mut self, tenants: u32) -> String {
        let _ = self.recorder.wait();
        let top = |sort: &str, lines: usize| -> String {
            Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--percent-limit",
                    "1",
                    "--sort",
                    sort,
                    "-i",
                ])
                .arg(&self.data)
                .output()
                .map(|output| {
                    String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                        .take(lines)
                        .map(|line| line.trim().to_owned())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        };
        format!(
            "\n## Profile of the uncached lookup ({tenants} tenants)\n\n`perf record -F 499 -g` \
             of the server during a second, unmeasured run of the case (`perf report \
             --no-children`, entries of 1% or more), by object and by symbol:\n\n```\n{}\n```\n\n```\n{}\n```\n",
            top("dso", 8),
            top("sym", 20)
        )
    }
}

/// `pgbench -S` (select-only) with the server's pool size: the database ceiling.
pub(super) fn pgbench(
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
) -> Result<f64, String> {
    runtime.block_on(async {
        let mut admin = PgConnection::connect(&cluster.url())
            .await
            .map_err(|error| error.to_string())?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pgbench')",
        )
        .fetch_one(&mut admin)
        .await
        .map_err(|error| error.to_string())?;
        if !exists {
            sqlx::raw_sql("CREATE DATABASE pgbench")
                .execute(&mut admin)
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    let port = cluster.port().to_string();
    let connection = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    eprintln!("pgbench: initialising (scale 10)…");
    let init = Command::new("pgbench")
        .args(connection)
        .args(["-i", "-q", "-s", "10", "pgbench"])
        .output()
        .map_err(|error| format!("cannot run pgbench: {error}"))?;
    if !init.status.success() {
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let clients = POOL_CONNECTIONS.to_string();
    let duration = options.duration.to_string();
    let output = Command::new("pgbench")
        .args(connection)
        .args([
            "-S", "-n", "-c", &clients, "-j", "2", "-T", &duration, "pgbench",
        ])
        .output()
        .map_err(|error| format!("cannot run pgbench: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| {
            format!(
                "pgbench printed no tps: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    eprintln!("pgbench -S -c {clients}: {tps:.0} tps");
    Ok(tps)
}
