//! Per-test scratch directories: emptied when made, removed when the test passes, kept when
//! it fails (its logs, images and server configs are what a failure is diagnosed from).
//!
//! Removing them matters: a full run makes tens of GiB of root images, which a CI machine's
//! disk does not hold at once.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// `<cache>/<group>/<name>`, owned by one test.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// An empty directory `<cache>/<group>/<name>` (whatever was there is removed first).
    pub fn new(group: &str, name: &str) -> Self {
        let path = crate::cache_dir()
            .expect("cache dir")
            .join(group)
            .join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", path.display()));
        Scratch { path }
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A panicking test is a failing one: keep what it left for diagnosis.
        if std::thread::panicking() || std::env::var_os("NBDROOT_KEEP_SCRATCH").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
