//! Leaving the initramfs for the real root, the way util-linux's switch_root does it:
//! pivot_root(2) cannot leave rootfs, so the new root is moved over `/` and the initramfs
//! contents are deleted to give their memory back.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, fstatat, Mode};
use nix::unistd::{chdir, chroot, execv, unlinkat, UnlinkatFlags};

use crate::mount::API_FILESYSTEMS;

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("no init to run in the new root (tried {tried})")]
    NoInit { tried: String },
    #[error("switch_root failed while {step}: {}", .source.desc())]
    Step { step: &'static str, source: Errno },
    #[error("cannot execute {init} in the new root: {}", .source.desc())]
    Exec { init: String, source: Errno },
}

/// Where init lives when `init=` does not say, in the kernel's search order.
pub const INIT_CANDIDATES: [&str; 4] = ["/sbin/init", "/etc/init", "/bin/init", "/bin/sh"];

/// The init to run inside `new_root`: `init=` if given, else the first candidate that exists.
/// Checked before anything is torn down, so a missing init fails with the initramfs intact.
pub fn find_init(new_root: &Path, wanted: Option<&str>) -> Result<String, SwitchRootError> {
    let executable = |p: &str| {
        resolve_in(new_root, p)
            .and_then(|full| std::fs::metadata(full).ok())
            .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    match wanted {
        Some(p) if executable(p) => Ok(p.to_string()),
        Some(p) => Err(SwitchRootError::NoInit {
            tried: p.to_string(),
        }),
        None => INIT_CANDIDATES
            .iter()
            .find(|p| executable(p))
            .map(|p| p.to_string())
            .ok_or_else(|| SwitchRootError::NoInit {
                tried: INIT_CANDIDATES.join(", "),
            }),
    }
}

/// Resolves `path` as if `root` were `/`: absolute symlinks (Debian's /sbin/init →
/// /lib/systemd/systemd) point inside `root`, not into the initramfs. `None` when a
/// component is missing or the links loop.
pub fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    let mut queue: VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let meta = std::fs::symlink_metadata(root.join(&candidate)).ok()?;
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > 40 {
            return None;
        }
        let target = std::fs::read_link(root.join(&candidate)).ok()?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => queue.push_front(n.to_os_string()),
                Component::ParentDir => queue.push_front(OsString::from("..")),
                _ => {}
            }
        }
    }
    Some(root.join(resolved))
}

fn step(step: &'static str) -> impl FnOnce(Errno) -> SwitchRootError {
    move |source| SwitchRootError::Step { step, source }
}

/// Moves the API mounts into `new_root`, makes it `/`, frees the initramfs and executes `init`.
/// Returns only on failure.
pub fn switch_root(new_root: &Path, init: &str, args: &[CString]) -> SwitchRootError {
    match switch(new_root) {
        Ok(()) => exec(init, args),
        Err(e) => e,
    }
}

fn switch(new_root: &Path) -> Result<(), SwitchRootError> {
    let old_root: OwnedFd =
        nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(step("opening the initramfs root"))?;
    for (_, target, _, _) in API_FILESYSTEMS {
        let dest = new_root.join(target.trim_start_matches('/'));
        if !dest.is_dir() {
            log::warn!(
                "{} has no {target}: leaving it in the initramfs",
                new_root.display()
            );
            continue;
        }
        mount(
            Some(target),
            &dest,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(step("moving the API filesystems into the new root"))?;
    }
    chdir(new_root).map_err(step("entering the new root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("moving the new root onto /"))?;
    chroot(".").map_err(step("chroot into the new root"))?;
    chdir("/").map_err(step("entering /"))?;

    // Only delete what is certainly the initramfs: a ramfs or tmpfs, not the new root.
    let st = fstat(old_root.as_fd()).map_err(step("examining the initramfs"))?;
    let fs =
        nix::sys::statfs::fstatfs(old_root.as_fd()).map_err(step("examining the initramfs"))?;
    let kind = fs.filesystem_type();
    // RAMFS_MAGIC from linux/magic.h (libc lacks it for musl).
    let ramfs = nix::sys::statfs::FsType(0x8584_58f6);
    if kind == ramfs || kind == nix::sys::statfs::TMPFS_MAGIC {
        remove_tree(old_root, st.st_dev);
    } else {
        log::warn!("the old root is not a ramfs or tmpfs: not deleting it");
    }
    Ok(())
}

/// Deletes everything under `dir` that is on device `dev`, without crossing into other
/// filesystems. Best effort: what cannot be deleted only costs memory.
fn remove_tree(dir: OwnedFd, dev: u64) {
    let fd = dir.as_raw_fd();
    let Ok(mut d) = Dir::from_fd(dir) else { return };
    let mut entries: Vec<(CString, Option<Type>)> = Vec::new();
    for entry in d.iter().flatten() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        entries.push((name.to_owned(), entry.file_type()));
    }
    for (name, ty) in entries {
        remove_entry(fd, &name, ty, dev);
    }
}

fn remove_entry(parent: i32, name: &CStr, ty: Option<Type>, dev: u64) {
    // nix's Dir has no AsFd, only AsRawFd: the descriptor is borrowed back from its number.
    // SAFETY: `parent` stays open for the whole call: it is owned by the Dir in remove_tree,
    // which outlives this call and closes it only when dropped.
    let parent = unsafe { std::os::fd::BorrowedFd::borrow_raw(parent) };
    let is_dir = match ty {
        Some(t) => t == Type::Directory,
        None => fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(false),
    };
    if is_dir {
        let Ok(sub) = openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) else {
            return;
        };
        // A mount point (another device) is left alone, with everything below it.
        if fstat(sub.as_fd()).map(|s| s.st_dev) != Ok(dev) {
            return;
        }
        remove_tree(sub, dev);
        // Best effort (see remove_tree): a directory left behind only costs memory.
        let _ = unlinkat(parent, name, UnlinkatFlags::RemoveDir);
    } else {
        let _ = unlinkat(parent, name, UnlinkatFlags::NoRemoveDir);
    }
}

fn exec(init: &str, args: &[CString]) -> SwitchRootError {
    let path = CString::new(OsStr::new(init).as_bytes()).unwrap_or_default();
    let mut argv = vec![path.clone()];
    argv.extend_from_slice(args);
    match execv(&path, &argv) {
        Err(source) => SwitchRootError::Exec {
            init: init.to_string(),
            source,
        },
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_resolve_inside_the_new_root() {
        let root = std::env::temp_dir().join(format!("nbdroot-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), "#!/bin/true\n").unwrap();
        std::fs::set_permissions(
            root.join("usr/lib/systemd/systemd"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Debian: merged /usr with relative links, and an absolute /sbin/init.
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("usr/sbin", root.join("sbin")).unwrap();
        symlink("/lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        symlink("../../sbin/init", root.join("usr/lib/loop-a")).unwrap();
        symlink("/usr/lib/loop-b", root.join("usr/lib/loop-b-target")).unwrap();
        symlink("/usr/lib/loop-b-target", root.join("usr/lib/loop-b")).unwrap();
        assert_eq!(
            resolve_in(&root, "/sbin/init"),
            Some(root.join("usr/lib/systemd/systemd"))
        );
        assert_eq!(find_init(&root, None).unwrap(), "/sbin/init");
        assert_eq!(
            resolve_in(&root, "/usr/lib/loop-a"),
            Some(root.join("usr/lib/systemd/systemd"))
        );
        assert_eq!(
            resolve_in(&root, "/usr/lib/loop-b"),
            None,
            "a link loop ends"
        );
        assert_eq!(resolve_in(&root, "/no/such"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
