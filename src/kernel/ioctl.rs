//! The older ioctl interface of the nbd driver, for kernels without the netlink family or
//! when asked. Unlike netlink, a process must stay inside NBD_DO_IT for the device's life.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// The driver's requests (linux/nbd.h, linux/fs.h). The nbd ones are declared `_IO` (no
/// direction, no size) although most take an integer by value, hence nix's "bad" variants
/// with `request_code_none!`, which give the kernel's numbers (0xab00 + n, 0x125d, 0x125f).
mod request {
    use nix::{ioctl_none_bad, ioctl_write_int_bad, ioctl_write_ptr_bad, request_code_none};

    ioctl_write_int_bad!(nbd_set_sock, request_code_none!(0xab, 0));
    ioctl_write_int_bad!(nbd_set_blksize, request_code_none!(0xab, 1));
    ioctl_none_bad!(nbd_do_it, request_code_none!(0xab, 3));
    ioctl_none_bad!(nbd_clear_sock, request_code_none!(0xab, 4));
    ioctl_none_bad!(nbd_clear_que, request_code_none!(0xab, 5));
    ioctl_none_bad!(nbd_disconnect, request_code_none!(0xab, 8));
    ioctl_write_int_bad!(nbd_set_timeout, request_code_none!(0xab, 9));
    ioctl_write_int_bad!(nbd_set_flags, request_code_none!(0xab, 10));
    ioctl_write_ptr_bad!(blkroset, request_code_none!(0x12, 93), libc::c_int);
    ioctl_none_bad!(blkrrpart, request_code_none!(0x12, 95));

    /// NBD_SET_SIZE_BLOCKS takes an unsigned long: a block count above `c_int::MAX` (1 TiB
    /// of 512-byte blocks) does not fit the `c_int` that `ioctl_write_int_bad!` passes.
    pub const NBD_SET_SIZE_BLOCKS: nix::sys::ioctl::ioctl_num_type = request_code_none!(0xab, 7);
}

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

/// One request to the driver, with its argument.
#[derive(Debug, Clone, Copy)]
enum Request {
    SetSock(RawFd),
    SetBlksize(libc::c_int),
    SetSizeBlocks(u64),
    DoIt,
    ClearSock,
    ClearQue,
    Disconnect,
    SetTimeout(libc::c_int),
    SetFlags(libc::c_int),
    SetReadOnly(bool),
    RereadPartitions,
}

impl Request {
    /// The name in error messages: the C macro's.
    fn name(self) -> &'static str {
        match self {
            Request::SetSock(_) => "NBD_SET_SOCK",
            Request::SetBlksize(_) => "NBD_SET_BLKSIZE",
            Request::SetSizeBlocks(_) => "NBD_SET_SIZE_BLOCKS",
            Request::DoIt => "NBD_DO_IT",
            Request::ClearSock => "NBD_CLEAR_SOCK",
            Request::ClearQue => "NBD_CLEAR_QUE",
            Request::Disconnect => "NBD_DISCONNECT",
            Request::SetTimeout(_) => "NBD_SET_TIMEOUT",
            Request::SetFlags(_) => "NBD_SET_FLAGS",
            Request::SetReadOnly(_) => "BLKROSET",
            Request::RereadPartitions => "BLKRRPART",
        }
    }
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

    fn ioctl(&self, req: Request) -> Result<libc::c_int, IoctlError> {
        let fd = self.file.as_raw_fd();
        let read_only: libc::c_int;
        // SAFETY: `fd` is open for the whole call (`self.file` owns it). Each request gets the
        // argument the driver expects: none for the ones without; a non-negative integer by
        // value for the nbd ones that take one (the kernel reads it as an unsigned long;
        // NBD_SET_SIZE_BLOCKS gets a real c_ulong); for BLKROSET the address of `read_only`,
        // a live local int that the kernel only reads.
        let rc = unsafe {
            match req {
                Request::SetSock(sock) => request::nbd_set_sock(fd, sock),
                Request::SetBlksize(n) => request::nbd_set_blksize(fd, n),
                Request::SetSizeBlocks(n) => nix::errno::Errno::result(libc::ioctl(
                    fd,
                    request::NBD_SET_SIZE_BLOCKS,
                    n as libc::c_ulong,
                )),
                Request::DoIt => request::nbd_do_it(fd),
                Request::ClearSock => request::nbd_clear_sock(fd),
                Request::ClearQue => request::nbd_clear_que(fd),
                Request::Disconnect => request::nbd_disconnect(fd),
                Request::SetTimeout(secs) => request::nbd_set_timeout(fd, secs),
                Request::SetFlags(flags) => request::nbd_set_flags(fd, flags),
                Request::SetReadOnly(ro) => {
                    read_only = ro.into();
                    request::blkroset(fd, &read_only)
                }
                Request::RereadPartitions => request::blkrrpart(fd),
            }
        };
        rc.map_err(|errno| self.error(req, errno.into()))
    }

    fn error(&self, req: Request, source: io::Error) -> IoctlError {
        IoctlError::Request {
            request: req.name(),
            device: self.path.clone(),
            source,
        }
    }

    /// Sizes, flags, timeout and sockets, in the order the driver expects.
    pub fn configure(&self, c: &Config<'_>) -> Result<(), IoctlError> {
        // The driver accepts block sizes from 512 to a page; what does not fit a c_int gets
        // the driver's own answer to an invalid size.
        let block_size = libc::c_int::try_from(c.block_size).map_err(|_| {
            self.error(
                Request::SetBlksize(0),
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        self.ioctl(Request::SetBlksize(block_size))?;
        self.ioctl(Request::SetSizeBlocks(c.size / c.block_size))?;
        self.ioctl(Request::ClearSock)?;
        self.ioctl(Request::SetFlags(c.flags.into()))?;
        self.ioctl(Request::SetReadOnly(c.read_only))?;
        if let Some(t) = c.timeout.filter(|t| !t.is_zero()) {
            // Capped at c_int::MAX seconds (68 years): "never" for any device.
            let secs = libc::c_int::try_from(t.as_secs()).unwrap_or(libc::c_int::MAX);
            self.ioctl(Request::SetTimeout(secs))?;
        }
        for &fd in c.sockets {
            self.ioctl(Request::SetSock(fd))?;
        }
        Ok(())
    }

    /// Serves the device until it is disconnected. Blocks for the device's whole life.
    pub fn do_it(&self) -> Result<(), IoctlError> {
        let result = self.ioctl(Request::DoIt).map(drop);
        // Cleanup once the device has ended: a failure here leaves nothing more to undo, and
        // the outcome of NBD_DO_IT is what the caller needs.
        let _ = self.ioctl(Request::ClearQue);
        let _ = self.ioctl(Request::ClearSock);
        result
    }

    /// Asks the driver to disconnect the device.
    pub fn disconnect(&self) -> Result<(), IoctlError> {
        self.ioctl(Request::Disconnect)?;
        // The disconnect has been asked for; dropping the sockets is best effort (the
        // process in NBD_DO_IT clears them too when it returns).
        let _ = self.ioctl(Request::ClearSock);
        Ok(())
    }

    /// Re-reads the partition table (the driver cannot while NBD_DO_IT is starting).
    pub fn reread_partitions(&self) -> Result<(), IoctlError> {
        self.ioctl(Request::RereadPartitions).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request reaches the kernel and a refusal names it: /dev/null is no block device,
    /// so each one is ENOTTY. (`strace -e ioctl` on this test shows the numbers and arguments.)
    #[test]
    fn every_request_is_sent_and_its_refusal_named() {
        let dev = IoctlDevice::open(Path::new("/dev/null")).unwrap();
        let requests = [
            Request::SetSock(7),
            Request::SetBlksize(4096),
            Request::SetSizeBlocks(1 << 33),
            Request::DoIt,
            Request::ClearSock,
            Request::ClearQue,
            Request::Disconnect,
            Request::SetTimeout(30),
            Request::SetFlags(0x1234),
            Request::SetReadOnly(true),
            Request::RereadPartitions,
        ];
        for req in requests {
            let e = dev.ioctl(req).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "{} on /dev/null: Inappropriate ioctl for device (os error 25)",
                    req.name()
                )
            );
        }
    }
}
