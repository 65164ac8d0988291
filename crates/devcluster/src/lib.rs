//! A local PostgreSQL cluster for development and tests, run from the system's server
//! binaries (`initdb`, `pg_ctl`), never from a download.
//!
//! The cluster lives under the project's `target/` directory, listens on 127.0.0.1 only and
//! trusts local connections, with durability switched off for speed: it is for throwaway
//! data. PostgreSQL refuses to run as root, so when the caller is root the server runs as
//! the `postgres` user (through `runuser`), in a directory that user owns.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The port the cluster listens on unless `TR_DEV_PG_PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 54329;

/// The system user the server runs as when the caller is root.
const SERVICE_USER: &str = "postgres";

/// Why the cluster could not be prepared, started, stopped or inspected.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The PostgreSQL server binaries are not installed.
    #[error(
        "PostgreSQL server binaries ({0}) not found on PATH or in /usr/lib/postgresql/*/bin; \
         install the `postgresql` package"
    )]
    BinaryNotFound(&'static str),
    /// `TR_DEV_PG_PORT` is not a port number.
    #[error("TR_DEV_PG_PORT must be a port number, got {0:?}")]
    InvalidPort(String),
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL tool exited with an error.
    #[error("{command} failed: {detail}")]
    Tool {
        /// The tool and its purpose.
        command: String,
        /// Its output, and the tail of the server log where there is one.
        detail: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Whether the cluster's server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStatus {
    /// Initialised and accepting connections.
    Running,
    /// Initialised but not running.
    Stopped,
    /// Never initialised (no data directory).
    Absent,
}

/// A local cluster: where its files are and which port it listens on.
#[derive(Debug, Clone)]
pub struct Cluster {
    base: PathBuf,
    port: u16,
    as_service_user: bool,
}

impl Cluster {
    /// The cluster of the project at `project_root`, on `TR_DEV_PG_PORT` or [`DEFAULT_PORT`].
    pub fn for_project(project_root: &Path) -> Result<Self, ClusterError> {
        let port = match std::env::var("TR_DEV_PG_PORT") {
            Ok(value) => value
                .parse()
                .map_err(|_| ClusterError::InvalidPort(value.clone()))?,
            Err(_) => DEFAULT_PORT,
        };
        Self::named(project_root, "dev-postgres", port)
    }

    /// A cluster of the project kept in `target/<name>` and listening on `port` (the
    /// benchmarks keep theirs apart from the development one).
    pub fn named(project_root: &Path, name: &str, port: u16) -> Result<Self, ClusterError> {
        let as_service_user = fs::metadata("/proc/self")
            .map_err(io("reading the current user"))?
            .uid()
            == 0;
        let preferred = project_root.join("target").join(name);
        let base = if !as_service_user || service_user_can_write(&preferred)? {
            preferred
        } else {
            // The project lives where the postgres user cannot reach (say, under /root):
            // keep the cluster in the system temp directory instead, one per checkout.
            let checkout = project_root.display().to_string();
            std::env::temp_dir().join(format!(
                "tenant-registry-{name}-{:016x}",
                stable_hash(&checkout)
            ))
        };
        Ok(Self {
            base,
            port,
            as_service_user,
        })
    }

    /// The directory holding the data directory, the log and the socket.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the cluster's `postgres` database, as the superuser.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of `database` in the cluster, as the superuser.
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://{SERVICE_USER}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.base.join("postgres.log")
    }

    /// Reports whether the cluster exists and runs.
    pub fn status(&self) -> Result<ClusterStatus, ClusterError> {
        if !self.data_dir().join("PG_VERSION").exists() {
            return Ok(ClusterStatus::Absent);
        }
        let output = self.run_tool("pg_ctl", &["status", "-D", &path_arg(&self.data_dir())])?;
        Ok(if output.status.success() {
            ClusterStatus::Running
        } else {
            ClusterStatus::Stopped
        })
    }

    /// Initialises the cluster if needed and starts it if it is not running.
    ///
    /// Safe to call from many processes at once: they take turns on a lock file. Returns
    /// whether this call started the server.
    pub fn ensure_running(&self) -> Result<bool, ClusterError> {
        self.prepare_base()?;
        let lock_path = self.base.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        lock.lock().map_err(io("locking the dev cluster"))?;
        let started = match self.status()? {
            ClusterStatus::Running => false,
            ClusterStatus::Absent => {
                self.init()?;
                self.start()?;
                true
            }
            ClusterStatus::Stopped => {
                self.start()?;
                true
            }
        };
        lock.unlock().map_err(io("unlocking the dev cluster"))?;
        Ok(started)
    }

    /// Stops the server if it runs and starts it again on [`Cluster::port`], initialising it
    /// first if needed: for a cluster one test owns, which a run that was killed may have
    /// left running, on another port.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.ensure_running().map(drop)
    }

    /// Stops the server if it runs; the data stays for the next start.
    pub fn stop(&self) -> Result<(), ClusterError> {
        if self.status()? != ClusterStatus::Running {
            return Ok(());
        }
        let output = self.run_tool(
            "pg_ctl",
            &[
                "stop",
                "-D",
                &path_arg(&self.data_dir()),
                "-m",
                "fast",
                "-w",
            ],
        )?;
        self.check(output, "pg_ctl stop")
    }

    /// Serves TLS from the next start on with `cert_pem` and `key_pem` (written into the
    /// data directory, the key readable by the server alone, as PostgreSQL requires), for
    /// tests of certificate verification. The cluster must have been initialised.
    pub fn use_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, contents) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            fs::write(&path, contents).map_err(io(format!("writing {}", path.display())))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(io(format!("restricting {}", path.display())))?;
            if self.as_service_user {
                chown_to_service_user(&path)?;
            }
        }
        // ALTER SYSTEM's file: read at start, replaced as a whole, so repeated calls add
        // nothing twice.
        let auto = data.join("postgresql.auto.conf");
        fs::write(
            &auto,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .map_err(io(format!("writing {}", auto.display())))?;
        if self.as_service_user {
            chown_to_service_user(&auto)?;
        }
        Ok(())
    }

    fn prepare_base(&self) -> Result<(), ClusterError> {
        fs::create_dir_all(&self.base).map_err(io(format!("creating {}", self.base.display())))?;
        if self.as_service_user {
            chown_to_service_user(&self.base)?;
        }
        Ok(())
    }

    fn init(&self) -> Result<(), ClusterError> {
        let output = self.run_tool(
            "initdb",
            &[
                "-D",
                &path_arg(&self.data_dir()),
                "-U",
                SERVICE_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        self.check(output, "initdb")?;
        let settings = format!(
            "\n# tenant-registry dev cluster: loopback only, throwaway data, fast over safe.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             shared_buffers = '128MB'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            self.base.display().to_string().replace('\'', "''")
        );
        let conf = self.data_dir().join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(io(format!("writing {}", conf.display())))
    }

    fn start(&self) -> Result<(), ClusterError> {
        let port_option = format!("-p {}", self.port);
        let output = self.run_tool(
            "pg_ctl",
            &[
                "start",
                "-D",
                &path_arg(&self.data_dir()),
                "-l",
                &path_arg(&self.log_file()),
                "-o",
                &port_option,
                "-w",
                "-t",
                "60",
            ],
        )?;
        self.check(output, "pg_ctl start")
    }

    fn check(&self, output: Output, command: &str) -> Result<(), ClusterError> {
        if output.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        if let Ok(log) = fs::read_to_string(self.log_file()) {
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            detail.push_str(&format!(
                " (server log {}: {})",
                self.log_file().display(),
                tail.join(" | ")
            ));
        }
        Err(ClusterError::Tool {
            command: command.to_owned(),
            detail,
        })
    }

    fn run_tool(&self, tool: &'static str, args: &[&str]) -> Result<Output, ClusterError> {
        let binary = find_binary(tool)?;
        let mut command = if self.as_service_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVICE_USER, "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        command
            .args(args)
            .current_dir(&self.base)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io(format!("running {}", binary.display())))
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn stable_hash(text: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's randomised hasher.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn service_user_can_write(dir: &Path) -> Result<bool, ClusterError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    chown_to_service_user(dir)?;
    let status = Command::new("runuser")
        .args(["-u", SERVICE_USER, "--", "test", "-w"])
        .arg(dir)
        .status()
        .map_err(io("running runuser (needed to run PostgreSQL as root)"))?;
    Ok(status.success())
}

fn chown_to_service_user(dir: &Path) -> Result<(), ClusterError> {
    let output = Command::new("chown")
        .arg(format!("{SERVICE_USER}:"))
        .arg(dir)
        .output()
        .map_err(io("running chown"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Tool {
            command: format!("chown {}", dir.display()),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Finds a PostgreSQL server tool on PATH or in Debian's versioned directories (newest first).
fn find_binary(tool: &'static str) -> Result<PathBuf, ClusterError> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(tool))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin").join(tool))
                .collect()
        })
        .unwrap_or_default();
    debian.sort_by_key(|path| {
        std::cmp::Reverse(
            path.components()
                .nth(4)
                .and_then(|version| version.as_os_str().to_str()?.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .into_iter()
        .chain(debian)
        .find(|candidate| candidate.is_file())
        .ok_or(ClusterError::BinaryNotFound(tool))
}
