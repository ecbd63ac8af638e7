//! Debian packaging for the tests: the .deb `scripts/deb` builds, a private copy of the
//! debootstrap root to install it in, and commands run inside that root with chroot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::command;
use crate::error::{Context, Error, Result};

/// Builds the package around `binary` into `out_dir` with `scripts/deb`; returns the .deb.
pub fn build_deb(binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let out = command::run(
        "build the package with scripts/deb",
        Command::new(crate::repo_root().join("scripts/deb"))
            .env("NBDROOT_BIN", binary)
            .env("OUT", out_dir),
    )?;
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deb = PathBuf::from(deb);
    if !deb.is_file() {
        return Err(Error::unexpected(
            "scripts/deb",
            format!("no package at {}", deb.display()),
        ));
    }
    Ok(deb)
}

/// nbd-client's packages (and the libraries it needs), as Debian ships them.
pub fn nbd_client_debs() -> Result<Vec<PathBuf>> {
    // Downloads and unpacks them once, into the reference cache.
    crate::reference::nbd_client_files()?;
    let dir = crate::cache_dir()?.join("reference");
    let mut debs: Vec<PathBuf> = fs::read_dir(&dir)
        .step(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// Copies `files` into `root`'s /tmp, returning their paths inside the root.
pub fn copy_in(root: &Path, files: &[PathBuf]) -> Result<Vec<String>> {
    let mut inside = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        fs::copy(f, root.join("tmp").join(&name)).step(|| format!("copy {}", f.display()))?;
        inside.push(format!("/tmp/{name}"));
    }
    Ok(inside)
}

/// Runs `script` with sh inside `root`; fails unless it exits 0.
pub fn chroot(root: &Path, step: &str, script: &str) -> Result<Output> {
    command::run(
        step,
        Command::new("chroot")
            .arg(root)
            .args(["/bin/sh", "-c", script])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// initramfs-tools and what its mkinitramfs runs that a minbase root lacks, downloaded with
/// apt into `dir`, for [`copy_in`] and `dpkg -i --force-depends` (udev and zstd stay out:
/// mkinitramfs then skips its udev hook and compresses with gzip).
pub fn initramfs_tools_debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let debs = dir.join("initramfs-tools-debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs).step(|| format!("create {}", debs.display()))?;
    let mut get = Command::new("apt-get");
    get.args([
        "download",
        "-q",
        "initramfs-tools",
        "initramfs-tools-core",
        "klibc-utils",
        "libklibc",
        "cpio",
        "linux-base",
        "kmod",
    ])
    .current_dir(&debs);
    command::run("download initramfs-tools", &mut get)?;
    let mut all: Vec<PathBuf> = fs::read_dir(&debs)
        .step(|| format!("list {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    all.sort();
    Ok(all)
}
