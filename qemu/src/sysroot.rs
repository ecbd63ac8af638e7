//! A real distribution root for tests that need systemd: a minimal Debian made with
//! debootstrap (from Debian's own mirror, through apt's configuration), cached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{Context, Error, Result};
use crate::lock::FileLock;

/// A minimal Debian 12 tree with systemd as /sbin/init, made once and shared: tests that add
/// files (probe units) work on [`debian_systemd_root_copy`], or one test's probe would run in
/// every later boot of the shared tree (one that powers off ends another test's boot).
pub fn debian_systemd_root() -> Result<PathBuf> {
    let cache = crate::cache_dir()?;
    let dir = cache.join("debian-systemd-root");
    let _lock = FileLock::exclusive(&cache.join("debian-systemd-root.lock"))?;
    if dir.join(".done").exists() {
        return Ok(dir);
    }
    let tmp = cache.join("debian-systemd-root.tmp");
    let _ = fs::remove_dir_all(&tmp);
    let built = command::run(
        "debootstrap a Debian root with systemd",
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd-sysv", "bookworm"])
            .arg(&tmp)
            .arg(apt_mirror()?),
    )
    .and_then(|_| fs::write(tmp.join(".done"), "").step(|| format!("mark {}", tmp.display())));
    publish(&tmp, &dir, built)
}

/// A copy of [`debian_systemd_root`] at `dir/root` (replacing an earlier one), for one test to
/// add its files to.
pub fn debian_systemd_root_copy(dir: &Path) -> Result<PathBuf> {
    copy_root(&debian_systemd_root()?, dir)
}

/// A copy of the cached tree `base` at `dir/root` (replacing an earlier one); the cache itself
/// stays untouched.
pub fn copy_root(base: &Path, dir: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    command::run(
        &format!("copy {}", base.display()),
        Command::new("cp").arg("-a").arg(base).arg(&root),
    )?;
    Ok(root)
}

/// The cache entry `dir`: a copy of the tree `base()` changed by `build`, made once (under a
/// lock beside it, in `<dir>.tmp` until it is complete). Later calls return it as it is.
pub fn derived_tree(
    dir: &Path,
    base: impl FnOnce() -> Result<PathBuf>,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let (Some(top), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(Error::unexpected("name a cache entry", dir.display()));
    };
    let name = name.to_string_lossy();
    fs::create_dir_all(top).step(|| format!("create {}", top.display()))?;
    let _lock = FileLock::exclusive(&top.join(format!("{name}.lock")))?;
    if dir.join(".done").exists() {
        return Ok(dir.to_path_buf());
    }
    let base = base()?;
    let tmp = top.join(format!("{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    let built = command::run(
        &format!("copy {}", base.display()),
        Command::new("cp").arg("-a").arg(&base).arg(&tmp),
    )
    .and_then(|_| build(&tmp))
    .and_then(|_| fs::write(tmp.join(".done"), "").step(|| format!("mark {}", tmp.display())));
    publish(&tmp, dir, built)
}

/// Puts a cache entry built in `tmp` in place at `dir` once `built` succeeded; removes the
/// half-built `tmp` otherwise, so nothing is mistaken for a finished entry.
pub fn publish(tmp: &Path, dir: &Path, built: Result<()>) -> Result<PathBuf> {
    if let Err(e) = built {
        let _ = fs::remove_dir_all(tmp);
        return Err(e);
    }
    let _ = fs::remove_dir_all(dir);
    fs::rename(tmp, dir).step(|| format!("move {} into place", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The Debian mirror this machine's apt uses for the release itself (not security): read
/// from /etc/apt/sources.list.d/*.sources (deb822) or *.list and /etc/apt/sources.list.
fn apt_mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let name = f.to_string_lossy();
        if !(name.ends_with(".sources") || name.ends_with(".list")) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if let Some(uri) = mirror_in(&text) {
            return Ok(uri);
        }
    }
    Err(Error::unexpected(
        "find apt's Debian mirror",
        "no deb URI in /etc/apt/sources.list(.d)",
    ))
}

/// The first Debian archive URI in a sources file of either format.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let uri = if let Some(v) = l.strip_prefix("URIs:") {
                v.split_whitespace().next()
            } else if let Some(v) = l.strip_prefix("deb ") {
                v.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            }?;
            (!uri.contains("security")).then(|| uri.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_both_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# c\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(list).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in("deb-src http://x/debian bookworm main\n"), None);
    }
}
