//! The shell initrd's mount step (`nbdroot mount <NEWROOT>`): mounts the attached root with
//! the fstype and options recorded by `nbdroot attach`, which may have come from DHCP and so
//! are unknown to dracut's own mount hook.

use std::fs;
use std::path::Path;

use crate::boot::{self, BootError};

use super::rootenv::{self, RootEnv, RootEnvError};

#[derive(Debug, thiserror::Error)]
pub enum MountStepError {
    #[error(transparent)]
    Env(#[from] RootEnvError),
    #[error("nothing is attached yet ({} is missing)", rootenv::PATH)]
    NotAttached,
    #[error(transparent)]
    Mount(#[from] BootError),
}

/// Mounts the root on `new_root` unless something is mounted there already.
pub fn mount(new_root: &Path) -> Result<(), MountStepError> {
    let env = RootEnv::read(Path::new(rootenv::PATH))?.ok_or(MountStepError::NotAttached)?;
    if is_mountpoint(new_root) {
        log::debug!("{} is mounted already", new_root.display());
        return Ok(());
    }
    boot::mount_root_on(
        &env.root,
        &env.device(),
        env.device_read_only,
        &env.mount,
        env.link_timeout,
        new_root,
    )?;
    Ok(())
}

/// Whether `path` is a mount point (in /proc/self/mountinfo's fifth field).
fn is_mountpoint(path: &Path) -> bool {
    let want = path.to_string_lossy();
    let want = want.trim_end_matches('/');
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split(' ').nth(4) == Some(if want.is_empty() { "/" } else { want }))
    })
}
