//! Loading a module file into the kernel with finit_module(2).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// MODULE_INIT_COMPRESSED_FILE: the kernel decompresses the file itself (Linux ≥ 5.17).
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
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params: &CStr = c"";
    // SAFETY: finit_module reads the open file descriptor and a NUL-terminated parameter
    // string that outlives the call; it does not touch our memory otherwise.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(LoadError::Load {
        path: path.to_path_buf(),
        source: err,
    })
}
