//! `image [--test] [--public-bases]`: builds the container image from the Dockerfile with
//! podman, and with `--test` runs it against a local cluster. By default the base images
//! are made on this machine (`local_base`), since these machines reach Debian's packages but
//! no container registry; `--public-bases` keeps the Dockerfile's public defaults.

mod local_base;
mod smoke;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::project_root;

/// The image's name; tagged with the workspace version, which the chart's appVersion names.
pub const IMAGE_NAME: &str = "localhost/tenant-registry";

/// What podman needs on these machines, found by trying: Debian's crun fails here, so does
/// applying the default ulimits, and without systemd the cgroups are managed directly.
const CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = []\n\n\
                               [engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n";

/// Options of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Then run the image: migrate a fresh database, serve it on a read-only root, make an
    /// authenticated call, stop it with SIGTERM and check that it exits 0.
    #[arg(long)]
    test: bool,
    /// Build from the Dockerfile's default (public) base images instead of local ones.
    #[arg(long)]
    public_bases: bool,
}

pub fn run(options: &Options) -> Result<ExitCode, String> {
    let root = project_root();
    let podman = Podman::configured(&root)?;
    let image = format!("{IMAGE_NAME}:{}", env!("CARGO_PKG_VERSION"));
    let started = std::time::Instant::now();
    build(&root, &podman, &image, options.public_bases)?;
    eprintln!("built {image} in {:.0} s", started.elapsed().as_secs_f64());
    if options.test {
        let started = std::time::Instant::now();
        smoke::run(&root, &podman, &image)?;
        eprintln!(
            "image test passed in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn build(root: &Path, podman: &Podman, image: &str, public_bases: bool) -> Result<(), String> {
    let mut command = podman.command();
    // The docker format keeps the Dockerfile's SHELL, which the OCI format drops.
    command.args(["build", "--format", "docker", "--network", "host"]);
    if !public_bases {
        let bases = local_base::ensure(root, podman)?;
        command
            .args(["--build-arg", &format!("BUILDER_IMAGE={}", bases.builder)])
            .args(["--build-arg", &format!("RUNTIME_IMAGE={}", bases.runtime)]);
    }
    command
        .args([
            "--build-arg",
            &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
        ])
        .args(["--build-arg", &format!("REVISION={}", revision(root))])
        .args(["--tag", image, "--file"])
        .arg(root.join("Dockerfile"))
        .arg(root);
    run_to_end(command, "podman build")
}

/// The commit being built, `-dirty` when the work tree has changes; `unknown` outside git.
fn revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{commit}-dirty")
        }
        Some(commit) => commit,
        None => "unknown".to_owned(),
    }
}

/// podman with the settings these machines need, unless `CONTAINERS_CONF` already names
/// the caller's own.
pub struct Podman {
    containers_conf: Option<PathBuf>,
}

impl Podman {
    fn configured(root: &Path) -> Result<Self, String> {
        let found = Command::new("podman")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Err("podman is not installed (apt-get install podman runc uidmap; .ci/run installs them)".to_owned());
        }
        if std::env::var_os("CONTAINERS_CONF").is_some() {
            return Ok(Self {
                containers_conf: None,
            });
        }
        let path = root.join("target/image/containers.conf");
        std::fs::create_dir_all(path.parent().unwrap_or(root))
            .and_then(|()| std::fs::write(&path, CONTAINERS_CONF))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(Self {
            containers_conf: Some(path),
        })
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        if let Some(path) = &self.containers_conf {
            command.env("CONTAINERS_CONF", path);
        }
        command
    }

    /// Whether the local image store has `image`.
    pub fn has_image(&self, image: &str) -> Result<bool, String> {
        let mut command = self.command();
        command.args(["image", "exists", image]);
        command
            .status()
            .map(|status| status.success())
            .map_err(|error| format!("cannot run podman: {error}"))
    }
}

/// Runs `command` to its end; fails naming `what` unless it exits 0.
pub fn run_to_end(mut command: Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {what}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}); see above"))
    }
}

/// The Rust version rust-toolchain.toml pins (`channel = "…"`).
pub fn pinned_rust_version(root: &Path) -> Result<String, String> {
    let path = root.join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    text.lines()
        .find_map(|line| {
            let value = line
                .trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| format!("{} names no channel", path.display()))
}
