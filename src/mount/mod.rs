//! Mounting: the API filesystems /init needs, finding the root filesystem on the attached
//! device, and mounting it.

pub mod options;
pub mod overlay;
pub mod rootdev;

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot mount {what} on {target} as {fstype}: {}", .source.desc())]
    Mount {
        what: String,
        target: String,
        fstype: String,
        source: Errno,
    },
    #[error(
        "no filesystem on {device} that the kernel can mount (tried {tried}; last error: {last})"
    )]
    NoFilesystem {
        device: String,
        tried: String,
        last: String,
    },
}

/// The API filesystems /init needs, and that move into the real root at switch_root.
pub const API_FILESYSTEMS: [(&str, &str, &str, &str); 4] = [
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    ("tmpfs", "/run", "tmpfs", "mode=0755,size=10%"),
];

/// Mounts /proc, /sys, /dev and /run. Ones already mounted (EBUSY) are left as they are.
pub fn api_filesystems() -> Result<(), MountError> {
    for (source, target, fstype, data) in API_FILESYSTEMS {
        let _ = fs::create_dir_all(target);
        let flags = MsFlags::MS_NOSUID
            | if fstype == "devtmpfs" {
                MsFlags::empty()
            } else {
                MsFlags::MS_NODEV
            };
        match mount(Some(source), target, Some(fstype), flags, Some(data)) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => {
                return Err(MountError::Mount {
                    what: source.to_string(),
                    target: target.to_string(),
                    fstype: fstype.to_string(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Filesystems the kernel can mount from a block device (/proc/filesystems without the
/// `nodev` ones), in the kernel's order except that ext4 goes first: it mounts ext2 and ext3
/// too, and trying those names on an ext4 filesystem only prints warnings.
pub fn block_filesystems(proc_filesystems: &str) -> Vec<String> {
    let mut list: Vec<String> = proc_filesystems
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    // A move, not a sort: the kernel lists each name once.
    if let Some(i) = list.iter().position(|t| t == "ext4") {
        list[..=i].rotate_right(1);
    }
    list
}

/// Mounts `device` on `target`. Without a filesystem type, tries every block filesystem the
/// kernel has until one accepts the device. Returns the type that worked.
pub fn mount_root(
    device: &str,
    target: &Path,
    fstype: Option<&str>,
    options: &str,
    read_only: bool,
) -> Result<String, MountError> {
    fs::create_dir_all(target).map_err(|e| MountError::Io {
        step: "creating the root mount point",
        path: target.display().to_string(),
        source: e,
    })?;
    let (mut flags, data) = options::split(options);
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let candidates = match fstype {
        Some(t) => vec![t.to_string()],
        None => {
            let list = fs::read_to_string("/proc/filesystems").map_err(|e| MountError::Io {
                step: "reading the kernel's filesystems",
                path: "/proc/filesystems".into(),
                source: e,
            })?;
            block_filesystems(&list)
        }
    };
    let mut last = None;
    for t in &candidates {
        match mount(
            Some(device),
            target,
            Some(t.as_str()),
            flags,
            Some(data.as_str()),
        ) {
            Ok(()) => return Ok(t.clone()),
            // Not this filesystem: the next candidate may fit.
            Err(e @ (Errno::EINVAL | Errno::ENODEV)) if fstype.is_none() => last = Some(e),
            Err(e) => {
                return Err(MountError::Mount {
                    what: device.to_string(),
                    target: target.display().to_string(),
                    fstype: t.clone(),
                    source: e,
                })
            }
        }
    }
    Err(MountError::NoFilesystem {
        device: device.to_string(),
        tried: candidates.join(", "),
        last: last.map(|e| e.desc().to_string()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_filesystems_skip_nodev() {
        let list = "nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text2\n\text4\nnodev\tproc\n\tvfat\n";
        assert_eq!(block_filesystems(list), ["ext4", "ext3", "ext2", "vfat"]);
    }
}
