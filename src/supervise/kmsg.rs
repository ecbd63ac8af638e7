//! What the kernel's log says about one nbd device. The driver reads an error from the
//! server's reply and a request's timeout only into the log (no netlink event carries them),
//! so the supervisor reads `/dev/kmsg` records and keeps those naming its device.
//!
//! Pure: [`parse`] takes one record as `read(2)` on /dev/kmsg returns it
//! (`<prio>,<seq>,<usec>,<flags>;<text>\n` and dictionary lines); [`Reader`] does the I/O.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, read, Whence};

/// NBD_ESHUTDOWN: the server is shutting down and refused the request.
pub const ESHUTDOWN: u32 = 108;

/// A kernel log line about the supervised device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// "Other side returned error (N)": the server answered a request with error N; the
    /// driver failed the request with an I/O error.
    ServerError(u32),
    /// "Connection timed out, retrying (A/C alive)": a request went unanswered for the I/O
    /// timeout; it goes again on another connection. `alive` counts the connections the
    /// driver still had when it gave up on this one.
    TimedOut { alive: u32 },
}

/// The note in `record` about `/dev/nbd<index>`, if any. Only the kernel's own records count
/// (facility 0): a process writing the same words to /dev/kmsg is not the driver.
pub fn parse(record: &str, index: u32) -> Option<Note> {
    let (prefix, text) = record.split_once(';')?;
    let prio: u32 = prefix.split(',').next()?.parse().ok()?;
    if prio >> 3 != 0 {
        return None;
    }
    let text = text.lines().next()?;
    // dev_err() prefixes the driver name and the disk: "block nbd0: …".
    let device = format!("nbd{index}: ");
    let (_, rest) = text.split_once(device.as_str())?;
    if let Some(n) = rest.strip_prefix("Other side returned error (") {
        return n.strip_suffix(')')?.parse().ok().map(Note::ServerError);
    }
    if let Some(counts) = rest.strip_prefix("Connection timed out, retrying (") {
        let alive = counts.split_once('/')?.0.parse().ok()?;
        return Some(Note::TimedOut { alive });
    }
    None
}

/// Size of one read: the kernel's records are at most 1 KiB of text plus the dictionary.
const RECORD_MAX: usize = 8192;

/// /dev/kmsg, read from the end: what the kernel logs from now on.
#[derive(Debug)]
pub struct Reader {
    fd: OwnedFd,
    index: u32,
    buf: Vec<u8>,
}

impl Reader {
    /// Opens /dev/kmsg for `/dev/nbd<index>`, past the records already there. `None` when
    /// it cannot be read (no /dev/kmsg, or `kernel.dmesg_restrict` for a non-root user).
    pub fn open(index: u32) -> Option<Reader> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = open("/dev/kmsg", flags, Mode::empty()).ok()?;
        lseek(&fd, 0, Whence::SeekEnd).ok()?;
        Some(Reader {
            fd,
            index,
            buf: vec![0; RECORD_MAX],
        })
    }

    /// Every note logged since the last call, without waiting.
    pub fn drain(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        loop {
            match read(&self.fd, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let record = String::from_utf8_lossy(&self.buf[..n]);
                    notes.extend(parse(&record, self.index));
                }
                // Records overwritten before they were read: the next read goes on.
                Err(Errno::EPIPE | Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        notes
    }
}

impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_of_this_device_only() {
        let r = "3,1024,5123456,-;block nbd0: Other side returned error (108)\n SUBSYSTEM=block\n DEVICE=b43:0\n";
        assert_eq!(parse(r, 0), Some(Note::ServerError(ESHUTDOWN)));
        assert_eq!(parse(r, 1), None);
        // nbd1 is not nbd10.
        let r10 = "3,1,1,-;block nbd10: Other side returned error (5)\n";
        assert_eq!(parse(r10, 1), None);
        assert_eq!(parse(r10, 10), Some(Note::ServerError(5)));
    }

    #[test]
    fn timeouts_with_the_live_count() {
        let r = "3,77,88,-;block nbd2: Connection timed out, retrying (0/1 alive)\n";
        assert_eq!(parse(r, 2), Some(Note::TimedOut { alive: 0 }));
        let r = "3,77,88,-;block nbd2: Connection timed out, retrying (3/4 alive)\n";
        assert_eq!(parse(r, 2), Some(Note::TimedOut { alive: 3 }));
    }

    #[test]
    fn userspace_records_and_other_lines_are_ignored() {
        // Facility 1 (user), as our own logger writes.
        let user = "12,5,6,-;nbdroot: block nbd0: Other side returned error (108)\n";
        assert_eq!(parse(user, 0), None);
        for r in [
            "6,5,6,-;block nbd0: Receive control failed (result -32)\n",
            "3,5,6,-;block nbd0: Other side returned error (x)\n",
            "3,5,6,-;block nbd0: Connection timed out, retrying (/1 alive)\n",
            "no separator",
            "x,5,6,-;block nbd0: Other side returned error (108)\n",
            "",
        ] {
            assert_eq!(parse(r, 0), None, "{r}");
        }
    }
}
