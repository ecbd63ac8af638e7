//! Loading a module file into the kernel with finit_module(2).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// MODULE_INIT_COMPRESSED_FILE: the kernel decompresses the file itself (Linux ≥ 5.17).
/// Neither nix's `ModuleInitFlags` nor libc name it, so it is spelled out here.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open module {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot load module {path}: {source}")]
    Load { path: PathBuf, source: io::Error },
}

/// Loads one module. A module that is already loaded is not an error.
pub fn load_module(path: &Path) -> Result<(), LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz") {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, c"", flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(LoadError::Load {
            path: path.to_path_buf(),
            source: errno.into(),
        }),
    }
}
