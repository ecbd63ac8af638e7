//! Artifacts built once per input: a file made by a slow step (a dracut run) is kept under
//! `<cache>/artifacts/<slot>-<key>`, where the key hashes everything that made it, so that
//! other test binaries and later runs of the suite take it instead of building it again.
//!
//! A slot holds one artifact at a time: a new key (a changed binary, module or kernel)
//! replaces the old one, so the cache does not grow with every change.

use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::lock::FileLock;

/// A hash of an artifact's inputs: texts, and files and directories by their contents.
/// `DefaultHasher::new()` is SipHash with fixed keys: the same inputs give the same key in
/// every process built by the pinned toolchain.
#[derive(Debug, Clone)]
pub struct Key(DefaultHasher);

impl Default for Key {
    fn default() -> Self {
        Key(DefaultHasher::new())
    }
}

impl Key {
    /// A text input (a release, a kernel version, a spec's `Debug` form).
    pub fn text(mut self, text: &str) -> Self {
        self.0.write_usize(text.len());
        self.0.write(text.as_bytes());
        self
    }

    /// A file's contents.
    pub fn file(mut self, path: &Path) -> Result<Self> {
        let bytes = fs::read(path).step(|| format!("read {} for its hash", path.display()))?;
        self.0.write_usize(bytes.len());
        self.0.write(&bytes);
        Ok(self)
    }

    /// Every file under a directory: names (relative) and contents, in sorted order.
    pub fn dir(mut self, dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned();
            self = self.text(&rel).file(&f)?;
        }
        Ok(self)
    }

    /// The key as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0.finish())
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).step(|| format!("list {}", dir.display()))? {
        let path = e.step(|| format!("list {}", dir.display()))?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// Puts the artifact of `slot` with `key` at `out`: a hard link to the cached one when an
/// earlier build had the same key, else `build(out)` runs and its result is cached. Builds
/// of one slot are serialised across processes; a failed build caches nothing.
pub fn cached(
    slot: &str,
    key: &Key,
    out: &Path,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let dir = crate::cache_dir()?.join("artifacts");
    fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let _lock = FileLock::exclusive(&dir.join(format!("{slot}.lock")))?;
    let kept = dir.join(format!("{slot}-{}", key.hex()));
    let _ = fs::remove_file(out);
    if kept.is_file() {
        return fs::hard_link(&kept, out)
            .step(|| format!("link {} to {}", out.display(), kept.display()));
    }
    build(out)?;
    // The slot's older artifacts are stale now.
    let prefix = format!("{slot}-");
    for e in fs::read_dir(&dir).step(|| format!("list {}", dir.display()))? {
        let p = e.step(|| format!("list {}", dir.display()))?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if let Some(rest) = name.strip_prefix(&prefix) {
            if rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                let _ = fs::remove_file(&p);
            }
        }
    }
    let tmp = dir.join(format!(".{slot}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    fs::hard_link(out, &tmp).step(|| format!("link {} into the cache", out.display()))?;
    fs::rename(&tmp, &kept).step(|| format!("move {} into place", kept.display()))
}
