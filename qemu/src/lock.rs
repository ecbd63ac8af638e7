//! Cross-process locks on files under the cache directory.
//!
//! Test binaries run as separate processes (one per `tests/*.rs`), each with several test
//! threads, so an in-process mutex is not enough. `flock(2)` is shared by every process on
//! the machine and released by the kernel when the holder dies: a crashed test never leaves a
//! stale lock behind.

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{Context, Result};

/// An exclusive `flock`, held until drop (closing the file releases it).
#[derive(Debug)]
pub struct FileLock {
    _held: File,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` (created if missing) is held.
    pub fn exclusive(path: &Path) -> Result<Self> {
        let file = open(path)?;
        file.lock().step(|| format!("lock {}", path.display()))?;
        Ok(FileLock { _held: file })
    }

    /// Takes the lock on `path` if nobody holds it; `None` if it is taken.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _held: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e).step(|| format!("lock {}", path.display())),
        }
    }
}

fn open(path: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path);
    file.step(|| format!("open lock file {}", path.display()))
}

/// How many VMs run at once. A TCG guest is CPU-bound only while it boots; the rest of its
/// life it mostly waits (for a server, a timeout, a shutdown), and with a slot per core the
/// suite measured both cores 40 % idle while guests queued for slots. A third slot keeps
/// them busy.
const VM_SLOTS: usize = 3;

/// How often a guest waiting for a slot looks again.
const SLOT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Holds one of the machine's VM slots (`<cache>/vm-slot-N.lock`) until drop, waiting for
/// whichever frees first (a blocking wait on one given slot would leave a guest queued
/// behind a long one while another slot stands free).
pub fn vm_slot() -> Result<FileLock> {
    let dir = crate::cache_dir()?;
    let path = |i: usize| dir.join(format!("vm-slot-{i}.lock"));
    loop {
        for i in 0..VM_SLOTS {
            if let Some(lock) = FileLock::try_exclusive(&path(i))? {
                return Ok(lock);
            }
        }
        std::thread::sleep(SLOT_POLL);
    }
}
