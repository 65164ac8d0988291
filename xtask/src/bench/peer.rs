//! The miss path's plain peer: a Go `net/http` + `pgx` service with no cache (`xtask/peer`),
//! built from Debian's packages and run against the registry's own database in the same
//! run, so the report compares the two under the same load on the same machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::server::Server;

/// The peer's case in the report (its rows start with this).
pub const CASE: &str = "plain Go peer (net/http + pgx, no cache)";

/// Where the peer listens.
const PEER_ADDR: &str = "127.0.0.1:18091";
/// Debian's packages the peer builds from.
const PACKAGES: &str = "golang-go golang-github-jackc-pgx-v4-dev";
/// Where Debian's Go packages keep their sources (a GOPATH).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

fn installed() -> bool {
    Command::new("go").arg("version").output().is_ok()
        && Path::new(DEBIAN_GOPATH)
            .join("src/github.com/jackc/pgx/v4/pgxpool")
            .is_dir()
}

/// Installs the Go toolchain and pgx from Debian when missing, then builds the peer into
/// `work`; answers the binary.
pub fn build(root: &Path, work: &Path) -> Result<PathBuf, String> {
    if !installed() {
        eprintln!("installing {PACKAGES} from Debian (apt-get)…");
        let status = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {PACKAGES}"
                ),
            ])
            .status()
            .map_err(|error| format!("cannot run apt-get: {error}"))?;
        if !status.success() || !installed() {
            return Err(format!(
                "the Go peer needs {PACKAGES}, and apt-get could not install them (run as root)"
            ));
        }
    }
    let binary = work.join("peer-go");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(root.join("xtask/peer"))
        .env("GO111MODULE", "off")
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GOCACHE", work.join("go-cache"))
        .status()
        .map_err(|error| format!("cannot run go build: {error}"))?;
    if status.success() {
        Ok(binary)
    } else {
        Err("building the Go peer failed; see above".to_owned())
    }
}

/// Starts the peer over `database_url` and waits until it answers.
pub fn start(binary: &Path, database_url: &str) -> Result<Server, String> {
    let mut command = Command::new(binary);
    command
        .env("DATABASE_URL", database_url)
        .env("ADDR", PEER_ADDR)
        .stdout(Stdio::null());
    Server::spawn(command, PEER_ADDR, "/healthz")
}
