//! The block device to mount once the export is attached: the device itself, one of its
//! partitions, or the filesystem with a given label or UUID on either — found without udev.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::blkid;
use crate::plan::RootDevice;

/// How much of a device's start holds every superblock `blkid::probe` knows.
const HEAD: u64 = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RootDevError {
    #[error("root={wanted}: {device} has no such partition after {secs} s (it has: {found})")]
    NoPartition {
        wanted: String,
        device: String,
        secs: u64,
        found: String,
    },
    #[error(
        "root={wanted}: no filesystem with that {what} on {device} after {secs} s (found: {found})"
    )]
    NotFound {
        wanted: String,
        what: &'static str,
        device: String,
        secs: u64,
        found: String,
    },
    #[error(
        "root={0}: a device stacked on the NBD device (LVM, LUKS, md), which nbdroot's own init \
         does not assemble; boot it with the initramfs-tools or dracut integration"
    )]
    Stacked(String),
}

/// `/dev/nbd0` and its partitions as they are now, e.g. `["/dev/nbd0", "/dev/nbd0p1"]`.
fn with_partitions(device: &str) -> Vec<String> {
    let name = device.trim_start_matches("/dev/");
    let mut parts: Vec<String> = fs::read_dir(format!("/sys/class/block/{name}"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(name) && n[name.len()..].starts_with('p'))
                .map(|n| format!("/dev/{n}"))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.insert(0, device.to_string());
    parts
}

/// What a device holds, for matching and for error messages.
fn identify(path: &str) -> Option<blkid::FsInfo> {
    let mut head = Vec::with_capacity(HEAD as usize);
    File::open(path)
        .ok()?
        .take(HEAD)
        .read_to_end(&mut head)
        .ok()?;
    blkid::probe(&head)
}

fn by_tag(spec: &str, candidates: &[String]) -> Option<String> {
    let paths: Vec<PathBuf> = candidates.iter().map(PathBuf::from).collect();
    blkid::resolve(spec, &paths)
        .ok()
        .flatten()
        .map(|p| p.display().to_string())
}

/// Finds the device to mount, waiting up to `bound` for partitions to appear.
pub fn find(root: &RootDevice, device: &str, bound: Duration) -> Result<String, RootDevError> {
    match root {
        RootDevice::Whole => return Ok(device.to_string()),
        RootDevice::Stacked(p) => return Err(RootDevError::Stacked(p.clone())),
        _ => {}
    }
    // Opening the device makes the kernel read its partition table.
    drop(File::open(device));
    let start = Instant::now();
    loop {
        let candidates = with_partitions(device);
        let found = match root {
            RootDevice::Whole | RootDevice::Stacked(_) => unreachable!("handled above"),
            RootDevice::Partition(n) => {
                let want = format!("{device}p{n}");
                candidates.iter().find(|c| **c == want).cloned()
            }
            // blkid's matching rules; a device that cannot be read yet is tried again.
            RootDevice::Label(l) => by_tag(&format!("LABEL={l}"), &candidates),
            RootDevice::Uuid(u) => by_tag(&format!("UUID={u}"), &candidates),
        };
        if let Some(f) = found {
            return Ok(f);
        }
        if start.elapsed() >= bound {
            return Err(not_found(root, device, bound, &candidates));
        }
        sleep(Duration::from_millis(50));
    }
}

fn not_found(
    root: &RootDevice,
    device: &str,
    bound: Duration,
    candidates: &[String],
) -> RootDevError {
    let secs = bound.as_secs();
    match root {
        RootDevice::Partition(n) => RootDevError::NoPartition {
            wanted: format!("{device}p{n}"),
            device: device.to_string(),
            secs,
            found: if candidates.len() > 1 {
                candidates[1..].join(", ")
            } else {
                "no partitions".into()
            },
        },
        RootDevice::Label(_) | RootDevice::Uuid(_) => {
            let (wanted, what) = match root {
                RootDevice::Label(l) => (format!("LABEL={l}"), "label"),
                RootDevice::Uuid(u) => (format!("UUID={u}"), "UUID"),
                _ => unreachable!(),
            };
            let found = candidates
                .iter()
                .map(|c| match identify(c) {
                    Some(i) => format!(
                        "{c} {} LABEL={} UUID={}",
                        i.fstype,
                        i.label.as_deref().unwrap_or(""),
                        i.uuid.as_deref().unwrap_or("")
                    ),
                    None => format!("{c} unknown"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            RootDevError::NotFound {
                wanted,
                what,
                device: device.to_string(),
                secs,
                found,
            }
        }
        RootDevice::Whole | RootDevice::Stacked(_) => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stacked_root_is_refused_at_once() {
        let root = RootDevice::Stacked("/dev/mapper/vg-root".into());
        let err = find(&root, "/dev/nbd0", Duration::from_secs(60)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "root=/dev/mapper/vg-root: a device stacked on the NBD device (LVM, LUKS, md), which \
             nbdroot's own init does not assemble; boot it with the initramfs-tools or dracut \
             integration"
        );
    }
}
