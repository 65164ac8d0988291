//! The base images made on this machine, for machines that reach Debian's packages but no
//! container registry: a minimal Debian made by debootstrap from the apt source the machine
//! already uses, imported into podman (the runtime base), and a builder on top of it with a
//! C compiler and the host's Rust toolchain (deploy/image/local-builder.Containerfile). Each
//! is made once and kept in podman's image store; `podman rmi` one to make it again.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Podman, pinned_rust_version, run_to_end};

/// The Debian release of the Dockerfile's public runtime base (debian:bookworm-slim).
const DEBIAN_SUITE: &str = "bookworm";
const BASE_IMAGE: &str = "localhost/tenant-registry-local-base:bookworm";
const BUILDER_IMAGE: &str = "localhost/tenant-registry-local-builder";
/// Debian's bundle of the machine's trusted certificates, given to the builder so that
/// cargo reaches crates.io through whatever the machine trusts.
const HOST_TRUST_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The images the Dockerfile's build arguments name.
pub struct Bases {
    pub builder: String,
    pub runtime: String,
}

pub fn ensure(root: &Path, podman: &Podman) -> Result<Bases, String> {
    if !podman.has_image(BASE_IMAGE)? {
        make_base(root, podman)?;
    }
    let rust_version = pinned_rust_version(root)?;
    let builder = format!("{BUILDER_IMAGE}:{rust_version}");
    if !podman.has_image(&builder)? {
        make_builder(root, podman, &builder, &rust_version)?;
    }
    Ok(Bases {
        builder,
        runtime: BASE_IMAGE.to_owned(),
    })
}

fn make_base(root: &Path, podman: &Podman) -> Result<(), String> {
    let mirror = debian_mirror()?;
    let rootfs = root.join("target/image/base-rootfs");
    // A directory left by an interrupted run is not trusted to be complete.
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .map_err(|error| format!("cannot remove {}: {error}", rootfs.display()))?;
    }
    eprintln!("making {BASE_IMAGE} with debootstrap from {mirror}");
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args(["--variant=minbase", DEBIAN_SUITE])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(Stdio::null());
    run_to_end(
        debootstrap,
        "debootstrap (needs root and the debootstrap package)",
    )?;
    // Without the downloaded packages and indexes, as the public slim image is.
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args([
            "--exclude=./var/cache/apt/archives/*.deb",
            "--exclude=./var/cache/apt/*.bin",
        ])
        .args(["--exclude=./var/lib/apt/lists/*", "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run tar: {error}"))?;
    let mut import = podman.command();
    import
        .args(["import", "-", BASE_IMAGE])
        .stdout(Stdio::null());
    if let Some(archive) = tar.stdout.take() {
        import.stdin(archive);
    }
    let imported = run_to_end(import, "podman import");
    let archived = tar.wait().map_err(|error| format!("tar failed: {error}"))?;
    imported?;
    if !archived.success() {
        return Err(format!("tar of {} failed ({archived})", rootfs.display()));
    }
    std::fs::remove_dir_all(&rootfs)
        .map_err(|error| format!("cannot remove {}: {error}", rootfs.display()))
}

fn make_builder(
    root: &Path,
    podman: &Podman,
    builder: &str,
    rust_version: &str,
) -> Result<(), String> {
    let sysroot = toolchain_sysroot(root, rust_version)?;
    eprintln!("making {builder} from {BASE_IMAGE} and the toolchain in {sysroot}");
    let mut build = podman.command();
    build
        .args(["build", "--network", "host"])
        .args(["--volume", &format!("{sysroot}:/toolchain:ro")])
        .args([
            "--volume",
            &format!("{HOST_TRUST_STORE}:/host-ca-certificates.crt:ro"),
        ])
        .args(["--build-arg", &format!("BASE_IMAGE={BASE_IMAGE}")])
        .args(["--tag", builder, "--file"])
        .arg(root.join("deploy/image/local-builder.Containerfile"))
        .arg(root.join("deploy/image"));
    run_to_end(build, "podman build of the local builder")
}

/// The directory of the toolchain rust-toolchain.toml selects, checked to be the pinned one.
fn toolchain_sysroot(root: &Path, rust_version: &str) -> Result<String, String> {
    let rustc = |argument: &str| {
        Command::new("rustc")
            .arg(argument)
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .ok_or_else(|| format!("rustc {argument} failed"))
    };
    let version = rustc("--version")?;
    if !version.starts_with(&format!("rustc {rust_version} ")) {
        return Err(format!(
            "the host's toolchain is {version}, not the pinned {rust_version}"
        ));
    }
    rustc("--print=sysroot")
}

/// The mirror of the machine's apt source for the Debian release, from
/// /etc/apt/sources.list.d/*.sources (deb822) or the one-line `*.list` files.
fn debian_mirror() -> Result<String, String> {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut found: Vec<_> = entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            match path.extension()?.to_str()? {
                "sources" => mirror_in_deb822(&text, DEBIAN_SUITE),
                "list" => mirror_in_one_line_format(&text, DEBIAN_SUITE),
                _ => None,
            }
        })
        .next()
        .ok_or_else(|| {
            format!("no apt source for Debian {DEBIAN_SUITE} in /etc/apt/sources.list(.d)")
        })
}

/// The first URI of a `Types: deb` stanza whose suites include `suite`.
fn mirror_in_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                if line.trim_start().starts_with('#') {
                    return None;
                }
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let is_binary = field("Types")?.split_whitespace().any(|kind| kind == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
        let enabled = field("Enabled").is_none_or(|value| value != "no");
        (is_binary && has_suite && enabled)
            .then(|| field("URIs"))
            .flatten()
            .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
    })
}

/// The URI of the first `deb [options] URI suite components…` line for `suite`.
fn mirror_in_one_line_format(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| uri.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deb822_source_gives_the_uri_of_the_stanza_with_the_release_itself() {
        let text = "Types: deb\nURIs: http://mirror.test/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n\n\
                    # Types: deb-src\nTypes: deb deb-src\nURIs: http://mirror.test/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_in_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.test/debian")
        );
    }

    #[test]
    fn a_disabled_or_source_only_deb822_stanza_is_skipped() {
        let text = "Types: deb-src\nURIs: http://sources.test/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\nEnabled: no\n";
        assert_eq!(mirror_in_deb822(text, "bookworm"), None);
    }

    #[test]
    fn a_one_line_source_gives_its_uri_with_or_without_options() {
        let text = "# deb http://commented.test/debian bookworm main\n\
                    deb-src http://sources.test/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main\n";
        assert_eq!(
            mirror_in_one_line_format(text, "bookworm").as_deref(),
            Some("http://mirror.test/debian")
        );
        assert_eq!(
            mirror_in_one_line_format("deb http://m.test/d bookworm-updates main\n", "bookworm"),
            None
        );
    }
}
