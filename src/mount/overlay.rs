//! `rd.nbdroot.overlay=`: the root's filesystem mounted read-only as the lower layer of an
//! overlayfs whose upper layer is a tmpfs or a filesystem on a second export.
//!
//! Both layers are mounted under /run, which switch_root moves into the new root with
//! everything mounted below it: the layers stay reachable (and listed in /proc/mounts) from
//! the real root, as dracut's live images keep theirs under /run.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::blkid;

/// Where the layers are mounted.
pub const DIR: &str = "/run/nbdroot/overlay";

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay: creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("overlay: cannot mount {what} on {target}: {}", .source.desc())]
    Mount {
        what: String,
        target: String,
        source: Errno,
    },
    #[error("overlay: cannot read {device}, the upper layer's export: {source}")]
    Read {
        device: String,
        source: std::io::Error,
    },
    #[error(
        "overlay: {device} (the upper layer's export {export}) holds {found}: make a filesystem \
         on it first (mkfs.ext4 on the server's image); nbdroot never formats it"
    )]
    NoFilesystem {
        device: String,
        export: String,
        found: &'static str,
    },
}

/// The paths of the layers.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The root's filesystem, read-only.
    pub lower: PathBuf,
    /// The tmpfs or the export's filesystem; `upper/` and `work/` live in it.
    pub rw: PathBuf,
}

impl Default for Layers {
    fn default() -> Self {
        let dir = Path::new(DIR);
        Layers {
            lower: dir.join("lower"),
            rw: dir.join("rw"),
        }
    }
}

impl Layers {
    /// Creates the mount points of both layers.
    pub fn create(&self) -> Result<(), OverlayError> {
        for d in [&self.lower, &self.rw] {
            fs::create_dir_all(d).map_err(|source| OverlayError::Dir {
                path: d.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// A tmpfs for the upper layer, of `size` (tmpfs's `size=`) when given.
    pub fn mount_tmpfs(&self, size: Option<&str>) -> Result<(), OverlayError> {
        let data = match size {
            Some(s) => format!("mode=0755,size={s}"),
            None => "mode=0755".into(),
        };
        mount(
            Some("tmpfs"),
            &self.rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|source| OverlayError::Mount {
            what: format!("tmpfs ({data})"),
            target: self.rw.display().to_string(),
            source,
        })
    }

    /// Refuses an export without a filesystem (a blank one, or swap) when no type is given:
    /// formatting it here could destroy a machine's state the user meant to keep.
    pub fn check_upper_device(
        &self,
        device: &str,
        export: &str,
        fstype: Option<&str>,
    ) -> Result<(), OverlayError> {
        if fstype.is_some() {
            return Ok(());
        }
        let mut head = Vec::new();
        File::open(device)
            .and_then(|f| f.take(blkid::HEAD_BYTES).read_to_end(&mut head))
            .map_err(|source| OverlayError::Read {
                device: device.into(),
                source,
            })?;
        match blkid::probe(&head) {
            Some(fs) if fs.fstype != "swap" => Ok(()),
            found => Err(OverlayError::NoFilesystem {
                device: device.into(),
                export: format!("{export:?}"),
                found: if found.is_some() {
                    "swap"
                } else {
                    "no filesystem nbdroot recognises"
                },
            }),
        }
    }

    /// Mounts the overlay on `target`, creating `upper/` and `work/` in the upper layer's
    /// filesystem if they are not there yet (a first boot).
    pub fn mount_overlay(&self, target: &Path) -> Result<(), OverlayError> {
        let (upper, work) = (self.rw.join("upper"), self.rw.join("work"));
        for d in [&upper, &work, &target.to_path_buf()] {
            fs::create_dir_all(d).map_err(|source| OverlayError::Dir {
                path: d.display().to_string(),
                source,
            })?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| OverlayError::Mount {
            what: format!("overlay ({data})"),
            target: target.display().to_string(),
            source,
        })
    }

    /// Unmounts whatever of the layers is mounted, after a later step failed.
    pub fn unmount(&self) {
        for d in [&self.rw, &self.lower] {
            let _ = umount2(d, MntFlags::MNT_DETACH);
        }
    }
}
