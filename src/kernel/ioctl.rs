//! The older ioctl interface of the nbd driver, for kernels without the netlink family or
//! when asked. Unlike netlink, a process must stay inside NBD_DO_IT for the device's life.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

const NBD_SET_SOCK: libc::c_ulong = 0xab00;
const NBD_SET_BLKSIZE: libc::c_ulong = 0xab01;
const NBD_DO_IT: libc::c_ulong = 0xab03;
const NBD_CLEAR_SOCK: libc::c_ulong = 0xab04;
const NBD_CLEAR_QUE: libc::c_ulong = 0xab05;
const NBD_SET_SIZE_BLOCKS: libc::c_ulong = 0xab07;
const NBD_DISCONNECT: libc::c_ulong = 0xab08;
const NBD_SET_TIMEOUT: libc::c_ulong = 0xab09;
const NBD_SET_FLAGS: libc::c_ulong = 0xab0a;
const BLKROSET: libc::c_ulong = 0x125d;
const BLKRRPART: libc::c_ulong = 0x125f;

#[derive(Debug, thiserror::Error)]
pub enum IoctlError {
    #[error("cannot open {device}: {source}")]
    Open { device: String, source: io::Error },
    #[error("{request} on {device}: {source}")]
    Request {
        request: &'static str,
        device: String,
        source: io::Error,
    },
}

/// An open nbd device configured through ioctls.
#[derive(Debug)]
pub struct IoctlDevice {
    file: File,
    path: String,
}

/// What to configure before handing over the sockets.
#[derive(Debug, Clone)]
pub struct Config<'a> {
    pub sockets: &'a [RawFd],
    pub size: u64,
    pub block_size: u64,
    pub flags: u16,
    pub read_only: bool,
    pub timeout: Option<Duration>,
}

impl IoctlDevice {
    pub fn open(path: &Path) -> Result<Self, IoctlError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| IoctlError::Open {
                device: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.display().to_string(),
        })
    }

    fn ioctl(
        &self,
        request: &'static str,
        code: libc::c_ulong,
        arg: libc::c_ulong,
    ) -> Result<libc::c_int, IoctlError> {
        // SAFETY: every nbd request used here takes an integer argument (or a pointer to an
        // int for BLKROSET, passed by the caller as the address of a live local); the file
        // descriptor is open for the duration of the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), code as _, arg) };
        if rc < 0 {
            return Err(IoctlError::Request {
                request,
                device: self.path.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(rc)
    }

    /// Sizes, flags, timeout and sockets, in the order the driver expects.
    pub fn configure(&self, c: &Config<'_>) -> Result<(), IoctlError> {
        self.ioctl("NBD_SET_BLKSIZE", NBD_SET_BLKSIZE, c.block_size as _)?;
        self.ioctl(
            "NBD_SET_SIZE_BLOCKS",
            NBD_SET_SIZE_BLOCKS,
            (c.size / c.block_size) as _,
        )?;
        self.ioctl("NBD_CLEAR_SOCK", NBD_CLEAR_SOCK, 0)?;
        self.ioctl("NBD_SET_FLAGS", NBD_SET_FLAGS, c.flags as _)?;
        let ro: libc::c_int = c.read_only.into();
        self.ioctl(
            "BLKROSET",
            BLKROSET,
            &ro as *const libc::c_int as libc::c_ulong,
        )?;
        if let Some(t) = c.timeout.filter(|t| !t.is_zero()) {
            self.ioctl("NBD_SET_TIMEOUT", NBD_SET_TIMEOUT, t.as_secs() as _)?;
        }
        for &fd in c.sockets {
            self.ioctl("NBD_SET_SOCK", NBD_SET_SOCK, fd as _)?;
        }
        Ok(())
    }

    /// Serves the device until it is disconnected. Blocks for the device's whole life.
    pub fn do_it(&self) -> Result<(), IoctlError> {
        let result = self.ioctl("NBD_DO_IT", NBD_DO_IT, 0).map(drop);
        let _ = self.ioctl("NBD_CLEAR_QUE", NBD_CLEAR_QUE, 0);
        let _ = self.ioctl("NBD_CLEAR_SOCK", NBD_CLEAR_SOCK, 0);
        result
    }

    /// Asks the driver to disconnect the device.
    pub fn disconnect(&self) -> Result<(), IoctlError> {
        self.ioctl("NBD_DISCONNECT", NBD_DISCONNECT, 0)?;
        let _ = self.ioctl("NBD_CLEAR_SOCK", NBD_CLEAR_SOCK, 0);
        Ok(())
    }

    /// Re-reads the partition table (the driver cannot while NBD_DO_IT is starting).
    pub fn reread_partitions(&self) -> Result<(), IoctlError> {
        self.ioctl("BLKRRPART", BLKRRPART, 0).map(drop)
    }
}
