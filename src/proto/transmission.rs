//! The transmission phase: [`Client`], a userspace NBD client for one negotiated export.
//!
//! A `Client` comes from one of two paths:
//!
//! - [`Client::connect`] takes a server as users write it (`host[:port]`, `[v6addr]:port`,
//!   `nbd://host[:port][/export]`, `nbd+unix:///export?socket=PATH`), connects within a
//!   timeout and negotiates the export;
//! - or, over any stream that is `Read + Write` and already connected (a socket set up your
//!   own way, a TLS session, a pipe to a subprocess), [`negotiate`](super::negotiate) runs the
//!   handshake and [`Client::new`] takes over. [`connect::connect`](crate::connect::connect)
//!   (with retries and socket options) and [`connect::open`](crate::connect::open) (just the
//!   connected stream) are the pieces `Client::connect` is made of.
//!
//! Then: [`read`](Client::read), [`write`](Client::write) (with FUA if asked),
//! [`flush`](Client::flush), [`trim`](Client::trim), [`write_zeroes`](Client::write_zeroes)
//! and, to end the session, [`disconnect`](Client::disconnect). The [`Client`] page has an
//! example that runs all of them.
//!
//! Simple replies only (the handshake never negotiates anything else), and one request in
//! flight at a time: each call sends its request and waits for the matching reply before the
//! next, which keeps the client small and makes every reply's cookie checkable against the one
//! request it can answer. Everything the export's flags or block sizes forbid is refused
//! before anything is sent, so the server only ever sees requests it agreed to.
//!
//! A failed call returns a [`TransmissionError`]: a refusal ("refused locally") sent nothing,
//! and an error the server answered ([`TransmissionError::Server`]) leaves the connection
//! usable; after anything else the connection is out of step, and every later call fails
//! with [`TransmissionError::Broken`].

#![warn(missing_docs)]

use std::fmt;
use std::io::{self, Read, Write};

use super::consts::*;
use super::export::Export;

/// A 28-byte request header: magic, command flags, command, cookie, offset, length.
pub(super) fn request_header(flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut h = [0u8; 28];
    h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&cmd.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..24].copy_from_slice(&offset.to_be_bytes());
    h[24..28].copy_from_slice(&len.to_be_bytes());
    h
}

/// A transmission command, named as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// NBD_CMD_READ.
    Read,
    /// NBD_CMD_WRITE.
    Write,
    /// NBD_CMD_DISC: the end of the session.
    Disconnect,
    /// NBD_CMD_FLUSH.
    Flush,
    /// NBD_CMD_TRIM.
    Trim,
    /// NBD_CMD_WRITE_ZEROES.
    WriteZeroes,
}

impl Command {
    fn wire(self) -> u16 {
        match self {
            Self::Read => CMD_READ,
            Self::Write => CMD_WRITE,
            Self::Disconnect => CMD_DISC,
            Self::Flush => CMD_FLUSH,
            Self::Trim => CMD_TRIM,
            Self::WriteZeroes => CMD_WRITE_ZEROES,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "NBD_CMD_READ",
            Self::Write => "NBD_CMD_WRITE",
            Self::Disconnect => "NBD_CMD_DISC",
            Self::Flush => "NBD_CMD_FLUSH",
            Self::Trim => "NBD_CMD_TRIM",
            Self::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
        })
    }
}

/// The error field of a simple reply. The values are the protocol's, not the host's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    /// The protocol's name for the value, when it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            EPERM => "EPERM",
            EIO => "EIO",
            ENOMEM => "ENOMEM",
            EINVAL => "EINVAL",
            ENOSPC => "ENOSPC",
            EOVERFLOW => "EOVERFLOW",
            ENOTSUP => "ENOTSUP",
            ESHUTDOWN => "ESHUTDOWN",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "error {}", self.0),
        }
    }
}

/// A failed transmission request. Refusals ("refused locally") sent nothing; after any error
/// but a refusal or a server error the connection is out of step and unusable.
///
/// Every variant names the command, and where it applies the offset and length, for the
/// message; the fields are there to match on.
#[allow(missing_docs)] // the fields: command, offset, length, and what the message says
#[derive(Debug, thiserror::Error)]
pub enum TransmissionError {
    /// Refused locally: a write, trim or write-zeroes to a read-only export.
    #[error("{command} at offset {offset} refused locally: the export is read-only")]
    ReadOnly { command: Command, offset: u64 },
    /// Refused locally: the server did not announce support for the command (or for FUA).
    #[error("{command} refused locally: the server did not set {flag}")]
    NotSupported {
        command: Command,
        flag: &'static str,
    },
    /// Refused locally: the range does not lie within the export.
    #[error("{command} of {} at offset {offset} refused locally: beyond the end of the {size}-byte export", crate::text::plural(.len, "byte"))]
    OutOfRange {
        command: Command,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// Refused locally: a trim or write-zeroes longer than the server's maximum request.
    #[error("{command} of {} at offset {offset} refused locally: longer than the server's {maximum}-byte maximum", crate::text::plural(.len, "byte"))]
    TooLong {
        command: Command,
        offset: u64,
        len: u64,
        maximum: u32,
    },
    /// Refused locally: offset or length not a multiple of the server's minimum block size.
    #[error("{command} of {} at offset {offset} refused locally: not aligned to the server's {minimum}-byte minimum block size", crate::text::plural(.len, "byte"))]
    Unaligned {
        command: Command,
        offset: u64,
        len: u64,
        minimum: u32,
    },
    /// The server answered with an error; the connection stays usable. ESHUTDOWN means the
    /// server is going away: the caller should disconnect.
    #[error("server failed {command} of {} at offset {offset}: {errno}", crate::text::plural(.len, "byte"))]
    Server {
        command: Command,
        offset: u64,
        len: u64,
        errno: Errno,
    },
    /// The server closed the connection (or reset it) before the reply was complete.
    #[error("server closed the connection during {command} of {} at offset {offset}", crate::text::plural(.len, "byte"))]
    Closed {
        command: Command,
        offset: u64,
        len: u64,
    },
    /// The stream's read or write timeout expired (only with timeouts set on the stream).
    #[error("timed out waiting for the server during {command} of {} at offset {offset}", crate::text::plural(.len, "byte"))]
    TimedOut {
        command: Command,
        offset: u64,
        len: u64,
    },
    /// Any other error of the stream.
    #[error("i/o error during {command} of {} at offset {offset}: {source}", crate::text::plural(.len, "byte"))]
    Io {
        command: Command,
        offset: u64,
        len: u64,
        source: io::Error,
    },
    /// The reply is not a simple reply: the server does not speak the protocol as negotiated.
    #[error("bad reply magic {found:#010x} to {command} at offset {offset} (expected a simple reply, {SIMPLE_REPLY_MAGIC:#010x})")]
    BadMagic {
        command: Command,
        offset: u64,
        found: u32,
    },
    /// The reply answers another request than the one in flight.
    #[error(
        "reply to {command} at offset {offset} carries cookie {got:#x}, expected {expected:#x}"
    )]
    WrongCookie {
        command: Command,
        offset: u64,
        expected: u64,
        got: u64,
    },
    /// Nothing sent: an earlier error left the connection out of step.
    #[error("{command} not sent: the connection is out of step after an earlier error")]
    Broken { command: Command },
}

type Result<T> = std::result::Result<T, TransmissionError>;

/// A client for one negotiated export: blocking, one request at a time, over any
/// `Read + Write` stream.
///
/// Reads and writes longer than the server's maximum request are split into several requests;
/// trims and write-zeroes are single requests and must fit. Ranges outside the export, ranges
/// not aligned to the server's minimum block size (when it announced one), changes to a
/// read-only export and commands whose flag the server did not set are refused before
/// anything is sent. For parallel I/O, open several connections when the server allows it
/// (NBD_FLAG_CAN_MULTI_CONN, see [`connect_many`](crate::connect::connect_many)).
///
/// # Examples
///
/// Against a small in-memory server on 127.0.0.1, started at the top of the example (hidden
/// here); nbdkit, qemu-nbd or nbd-server answer the same way.
///
/// ```
/// # use std::io::{Read, Write};
/// # // An in-memory NBD server on 127.0.0.1 standing in for nbdkit: oldstyle handshake,
/// # // simple replies; it hands back the disk when the client disconnects.
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let addr = listener.local_addr()?;
/// # let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
/// #     let (mut s, _) = listener.accept()?;
/// #     let mut disk = vec![0u8; 1 << 20];
/// #     let flags: u32 = 1 | 1 << 2 | 1 << 3 | 1 << 5 | 1 << 6; // FLUSH, FUA, TRIM, WRITE_ZEROES
/// #     s.write_all(b"NBDMAGIC")?;
/// #     s.write_all(&0x0000_4202_8186_1253u64.to_be_bytes())?;
/// #     s.write_all(&(disk.len() as u64).to_be_bytes())?;
/// #     s.write_all(&flags.to_be_bytes())?;
/// #     s.write_all(&[0; 124])?;
/// #     loop {
/// #         let mut h = [0u8; 28];
/// #         s.read_exact(&mut h)?;
/// #         let cmd = u16::from_be_bytes([h[6], h[7]]);
/// #         let offset = u64::from_be_bytes(h[16..24].try_into().unwrap()) as usize;
/// #         let len = u32::from_be_bytes(h[24..28].try_into().unwrap()) as usize;
/// #         let range = offset..offset + len;
/// #         let mut reply = 0x6744_6698u32.to_be_bytes().to_vec(); // simple reply
/// #         reply.extend_from_slice(&[0; 4]); // no error
/// #         reply.extend_from_slice(&h[8..16]); // the request's cookie
/// #         match cmd {
/// #             0 => reply.extend_from_slice(&disk[range]),
/// #             1 => s.read_exact(&mut disk[range])?,
/// #             2 => return Ok(disk),
/// #             4 | 6 => disk[range].fill(0),
/// #             _ => {}
/// #         }
/// #         s.write_all(&reply)?;
/// #     }
/// # });
/// use nbdroot::proto::Client;
///
/// // Any form the command line takes: host:port, nbd://host:port/export, nbd+unix://...
/// let mut client = Client::connect(&format!("nbd://{addr}"), None)?;
/// assert_eq!(client.size(), 1 << 20);
/// assert!(!client.read_only());
///
/// // Write with FUA: the reply comes once the data is on stable storage.
/// client.write(4096, b"hello, world", true)?;
/// let mut buf = [0u8; 12];
/// client.read(4096, &mut buf)?;
/// assert_eq!(&buf, b"hello, world");
///
/// client.write_zeroes(4096, 5, false)?;
/// client.trim(65536, 4096)?;
/// client.flush()?;
///
/// // A request beyond the end is refused without reaching the server.
/// let err = client.read(1 << 20, &mut buf).unwrap_err();
/// assert!(err.to_string().ends_with("beyond the end of the 1048576-byte export"));
///
/// client.disconnect()?;
/// # let disk = server.join().unwrap()?;
/// # assert_eq!(&disk[4096..4108], b"\0\0\0\0\0, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client<S: Read + Write> {
    stream: S,
    export: Export,
    next_cookie: u64,
    /// Set once a reply could not be read whole: later replies would be misparsed.
    broken: bool,
}

/// Where a request goes and how much it covers, for checks and error messages.
#[derive(Debug, Clone, Copy)]
struct Span {
    command: Command,
    offset: u64,
    len: u64,
}

impl<S: Read + Write> Client<S> {
    /// Takes over `stream` right after the handshake that produced `export`
    /// ([`negotiate`](super::negotiate)). Sends nothing.
    ///
    /// # Examples
    ///
    /// Over a socket pair, with the server's greeting already waiting in it:
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use nbdroot::proto::{negotiate, Client};
    ///
    /// let (mut stream, mut server) = UnixStream::pair()?;
    /// # // An oldstyle greeting: magic, size, flags (NBD_FLAG_HAS_FLAGS, READ_ONLY), padding.
    /// # server.write_all(b"NBDMAGIC")?;
    /// # server.write_all(&0x0000_4202_8186_1253u64.to_be_bytes())?;
    /// # server.write_all(&(64u64 << 20).to_be_bytes())?;
    /// # server.write_all(&3u32.to_be_bytes())?;
    /// # server.write_all(&[0; 124])?;
    /// let export = negotiate(&mut stream, "")?;
    /// let client = Client::new(stream, export);
    /// assert_eq!((client.size(), client.read_only()), (64 << 20, true));
    /// client.disconnect()?;
    ///
    /// // The server got NBD_CMD_DISC: request magic, no flags, command 2.
    /// let mut request = [0u8; 28];
    /// server.read_exact(&mut request)?;
    /// assert_eq!(request[..8], [0x25, 0x60, 0x95, 0x13, 0, 0, 0, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(stream: S, export: Export) -> Self {
        Self {
            stream,
            export,
            next_cookie: 1,
            broken: false,
        }
    }

    /// What the handshake established: size, transmission flags, block sizes, handshake style.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.export.size
    }

    /// The transmission flags the server sent: `NBD_FLAG_*`, the `TFLAG_*` constants in
    /// [`consts`](super::consts).
    pub fn flags(&self) -> u16 {
        self.export.flags
    }

    /// The server set NBD_FLAG_READ_ONLY: writes, trims and write-zeroes are refused locally.
    pub fn read_only(&self) -> bool {
        self.export.read_only()
    }

    /// The longest single request the server accepts: its announced maximum, else the 32 MiB
    /// every server must take.
    pub fn max_request(&self) -> u32 {
        self.export
            .block_sizes
            .map_or(DEFAULT_MAX_PAYLOAD, |b| b.maximum)
    }

    /// Offsets and lengths must be multiples of this: the server's minimum block size, which a
    /// client that asked for it must obey.
    fn alignment(&self) -> u32 {
        self.export.block_sizes.map_or(1, |b| b.minimum.max(1))
    }

    /// How much one read or write request carries: the server's maximum, capped at 32 MiB
    /// (nbdkit, for one, refuses more than 64 MiB while announcing no maximum at all), and a
    /// multiple of the alignment so that every chunk stays aligned.
    fn chunk_len(&self) -> usize {
        let align = self.alignment();
        let max = self.max_request().min(DEFAULT_MAX_PAYLOAD);
        (max - max % align).max(align) as usize
    }

    /// Reads `buf.len()` bytes at `offset`, in as many requests as the server's maximum needs.
    /// On an error `buf` may be partly filled.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(Command::Read, offset, buf.len() as u64)?;
        let chunk = self.chunk_len();
        let mut at = offset;
        for part in buf.chunks_mut(chunk) {
            self.transact(Command::Read, 0, at, part.len() as u32, &[], part)?;
            at += part.len() as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, in as many requests as the server's maximum needs; with
    /// `fua` (Force Unit Access), each request returns only once its data is on stable
    /// storage (needs NBD_FLAG_SEND_FUA). On an error, a prefix of `data` may be written.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let command = Command::Write;
        self.check_writable(command, offset)?;
        if fua {
            self.check_flag(command, TFLAG_SEND_FUA, "NBD_FLAG_SEND_FUA")?;
        }
        self.check_range(command, offset, data.len() as u64)?;
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        let chunk = self.chunk_len();
        let mut at = offset;
        for part in data.chunks(chunk) {
            self.transact(command, flags, at, part.len() as u32, part, &mut [])?;
            at += part.len() as u64;
        }
        Ok(())
    }

    /// Asks the server to make all completed writes durable (needs NBD_FLAG_SEND_FLUSH).
    pub fn flush(&mut self) -> Result<()> {
        self.check_flag(Command::Flush, TFLAG_SEND_FLUSH, "NBD_FLAG_SEND_FLUSH")?;
        self.transact(Command::Flush, 0, 0, 0, &[], &mut [])
    }

    /// Tells the server `len` bytes at `offset` are no longer needed; their contents become
    /// unspecified (needs NBD_FLAG_SEND_TRIM). One request: `len` may not exceed
    /// [`max_request`](Self::max_request).
    pub fn trim(&mut self, offset: u64, len: u32) -> Result<()> {
        let command = Command::Trim;
        self.check_writable(command, offset)?;
        self.check_flag(command, TFLAG_SEND_TRIM, "NBD_FLAG_SEND_TRIM")?;
        self.check_single(command, offset, len)?;
        self.transact(command, 0, offset, len, &[], &mut [])
    }

    /// Zeroes `len` bytes at `offset` (needs NBD_FLAG_SEND_WRITE_ZEROES). Unless `may_trim`,
    /// NBD_CMD_FLAG_NO_HOLE asks the server to keep the range allocated. One request: `len`
    /// may not exceed [`max_request`](Self::max_request).
    pub fn write_zeroes(&mut self, offset: u64, len: u32, may_trim: bool) -> Result<()> {
        let command = Command::WriteZeroes;
        self.check_writable(command, offset)?;
        self.check_flag(
            command,
            TFLAG_SEND_WRITE_ZEROES,
            "NBD_FLAG_SEND_WRITE_ZEROES",
        )?;
        self.check_single(command, offset, len)?;
        let flags = if may_trim { 0 } else { CMD_FLAG_NO_HOLE };
        self.transact(command, flags, offset, len, &[], &mut [])
    }

    /// Hands back the stream, with the session still open, once every request has been
    /// answered (nothing is in flight between calls): for a socket checked here and then
    /// handed to the kernel, which goes on with its own cookies.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Ends the session with NBD_CMD_DISC, which has no reply, and hands back the stream (the
    /// server closes its side once earlier requests are done). Dropping a `Client` without
    /// it just closes the stream, which servers take as an abrupt disconnect.
    pub fn disconnect(mut self) -> Result<S> {
        let span = Span {
            command: Command::Disconnect,
            offset: 0,
            len: 0,
        };
        if self.broken {
            return Err(TransmissionError::Broken {
                command: span.command,
            });
        }
        let header = request_header(0, CMD_DISC, self.next_cookie, 0, 0);
        self.stream
            .write_all(&header)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io_error(span, e))?;
        Ok(self.stream)
    }

    fn check_writable(&self, command: Command, offset: u64) -> Result<()> {
        if self.export.read_only() {
            return Err(TransmissionError::ReadOnly { command, offset });
        }
        Ok(())
    }

    fn check_flag(&self, command: Command, flag: u16, name: &'static str) -> Result<()> {
        if self.export.flags & flag == 0 {
            return Err(TransmissionError::NotSupported {
                command,
                flag: name,
            });
        }
        Ok(())
    }

    /// The range lies within the export and on the server's block boundaries.
    fn check_range(&self, command: Command, offset: u64, len: u64) -> Result<()> {
        let size = self.export.size;
        if !matches!(offset.checked_add(len), Some(end) if end <= size) {
            return Err(TransmissionError::OutOfRange {
                command,
                offset,
                len,
                size,
            });
        }
        let minimum = self.alignment();
        if !offset.is_multiple_of(u64::from(minimum)) || !len.is_multiple_of(u64::from(minimum)) {
            return Err(TransmissionError::Unaligned {
                command,
                offset,
                len,
                minimum,
            });
        }
        Ok(())
    }

    /// For commands sent as one request whatever their length.
    fn check_single(&self, command: Command, offset: u64, len: u32) -> Result<()> {
        self.check_range(command, offset, len.into())?;
        let maximum = self.max_request();
        if len > maximum {
            return Err(TransmissionError::TooLong {
                command,
                offset,
                len: len.into(),
                maximum,
            });
        }
        Ok(())
    }

    /// Sends one request and waits for its reply. `payload` goes out after the header
    /// (writes); a successful reply's data fills `into` (reads).
    fn transact(
        &mut self,
        command: Command,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
        into: &mut [u8],
    ) -> Result<()> {
        if self.broken {
            return Err(TransmissionError::Broken { command });
        }
        // Zero-length requests have no defined meaning in the spec: there is nothing to do.
        if len == 0 && command != Command::Flush {
            return Ok(());
        }
        let span = Span {
            command,
            offset,
            len: len.into(),
        };
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        // Until the reply is read whole, an error leaves the stream out of step.
        self.broken = true;
        let header = request_header(flags, command.wire(), cookie, offset, len);
        self.stream
            .write_all(&header)
            .and_then(|()| self.stream.write_all(payload))
            .and_then(|()| self.stream.flush())
            .map_err(|e| io_error(span, e))?;

        let mut reply = [0u8; 16];
        self.stream
            .read_exact(&mut reply)
            .map_err(|e| io_error(span, e))?;
        let magic = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(TransmissionError::BadMagic {
                command,
                offset,
                found: magic,
            });
        }
        let error = u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]);
        let got = u64::from_be_bytes(reply[8..16].try_into().expect("8 bytes"));
        if got != cookie {
            return Err(TransmissionError::WrongCookie {
                command,
                offset,
                expected: cookie,
                got,
            });
        }
        if error != 0 {
            // A simple error reply carries no data, even for a read: still in step.
            self.broken = false;
            return Err(TransmissionError::Server {
                command,
                offset,
                len: len.into(),
                errno: Errno(error),
            });
        }
        self.stream
            .read_exact(into)
            .map_err(|e| io_error(span, e))?;
        self.broken = false;
        Ok(())
    }
}

fn io_error(span: Span, e: io::Error) -> TransmissionError {
    let Span {
        command,
        offset,
        len,
    } = span;
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TransmissionError::Closed {
            command,
            offset,
            len,
        },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransmissionError::TimedOut {
            command,
            offset,
            len,
        },
        _ => TransmissionError::Io {
            command,
            offset,
            len,
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::export::{BlockSizes, Style};
    use crate::proto::testserver::{Conn, Script};

    const ALL: u16 = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES;

    fn export(flags: u16, block_sizes: Option<BlockSizes>) -> Export {
        Export {
            size: 1 << 20,
            flags,
            block_sizes,
            style: Style::FixedNewstyle,
        }
    }

    fn sizes(minimum: u32, maximum: u32) -> Option<BlockSizes> {
        Some(BlockSizes {
            minimum,
            preferred: 4096,
            maximum,
        })
    }

    /// The requests the client wrote: (flags, command, cookie, offset, length, payload).
    fn requests(written: &[u8]) -> Vec<(u16, u16, u64, u64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < written.len() {
            let h = &written[at..at + 28];
            assert_eq!(h[..4], REQUEST_MAGIC.to_be_bytes());
            let flags = u16::from_be_bytes([h[4], h[5]]);
            let cmd = u16::from_be_bytes([h[6], h[7]]);
            let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
            let offset = u64::from_be_bytes(h[16..24].try_into().unwrap());
            let len = u32::from_be_bytes(h[24..28].try_into().unwrap());
            at += 28;
            let payload = if cmd == CMD_WRITE {
                at += len as usize;
                written[at - len as usize..at].to_vec()
            } else {
                Vec::new()
            };
            out.push((flags, cmd, cookie, offset, len, payload));
        }
        out
    }

    fn client(script: Script, flags: u16, block_sizes: Option<BlockSizes>) -> Client<Conn> {
        Client::new(script.into_conn(), export(flags, block_sizes))
    }

    #[test]
    fn large_reads_are_split_at_the_server_maximum() {
        let data: Vec<u8> = (0..39_936u32).map(|i| (i % 251) as u8).collect();
        let script = Script::new()
            .simple_reply(0, 1, &data[..16384])
            .simple_reply(0, 2, &data[16384..32768])
            .simple_reply(0, 3, &data[32768..]);
        let mut c = client(script, ALL, sizes(512, 16384));
        let mut buf = vec![0u8; data.len()];
        c.read(4096, &mut buf).unwrap();
        assert_eq!(buf, data);
        let sent = requests(&c.stream.written);
        let spans: Vec<_> = sent.iter().map(|r| (r.1, r.2, r.3, r.4)).collect();
        assert_eq!(
            spans,
            vec![
                (CMD_READ, 1, 4096, 16384),
                (CMD_READ, 2, 4096 + 16384, 16384),
                (CMD_READ, 3, 4096 + 32768, 7168),
            ]
        );
        assert!(c.stream.fully_read());
    }

    #[test]
    fn without_a_server_maximum_chunks_are_32_mib() {
        let mut c = Client::new(
            Script::new().into_conn(),
            Export {
                size: 1 << 30,
                ..export(ALL, None)
            },
        );
        assert_eq!(c.max_request(), 32 << 20);
        assert_eq!(c.chunk_len(), 32 << 20);
        c.export.block_sizes = sizes(4096, u32::MAX);
        assert_eq!((c.max_request(), c.chunk_len()), (u32::MAX, 32 << 20));
    }

    #[test]
    fn write_with_fua_sends_header_and_payload() {
        let script = Script::new()
            .simple_reply(0, 1, b"")
            .simple_reply(0, 2, b"");
        let mut c = client(script, ALL, sizes(1, 6));
        c.write(10, b"helloworld", true).unwrap();
        let sent = requests(&c.stream.written);
        assert_eq!(
            sent,
            vec![
                (CMD_FLAG_FUA, CMD_WRITE, 1, 10, 6, b"hellow".to_vec()),
                (CMD_FLAG_FUA, CMD_WRITE, 2, 16, 4, b"orld".to_vec()),
            ]
        );
    }

    #[test]
    fn flush_trim_and_write_zeroes() {
        let script = Script::new()
            .simple_reply(0, 1, b"")
            .simple_reply(0, 2, b"")
            .simple_reply(0, 3, b"")
            .simple_reply(0, 4, b"");
        let mut c = client(script, ALL, None);
        c.flush().unwrap();
        c.trim(4096, 8192).unwrap();
        c.write_zeroes(0, 512, false).unwrap();
        c.write_zeroes(512, 512, true).unwrap();
        let sent = requests(&c.stream.written);
        let got: Vec<_> = sent.iter().map(|r| (r.0, r.1, r.3, r.4)).collect();
        assert_eq!(
            got,
            vec![
                (0, CMD_FLUSH, 0, 0),
                (0, CMD_TRIM, 4096, 8192),
                (CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 512),
                (0, CMD_WRITE_ZEROES, 512, 512),
            ]
        );
        let stream = c.disconnect().unwrap();
        let last = requests(&stream.written).pop().unwrap();
        assert_eq!((last.1, last.4), (CMD_DISC, 0));
    }

    #[test]
    fn server_errors_are_typed_and_leave_the_connection_usable() {
        let script = Script::new()
            .simple_reply(ENOSPC, 1, b"")
            .simple_reply(EIO, 2, b"")
            .simple_reply(0, 3, b"ok")
            .simple_reply(4242, 4, b"");
        let mut c = client(script, ALL, None);
        let err = c.write(8192, &[7; 4096], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server failed NBD_CMD_WRITE of 4096 bytes at offset 8192: ENOSPC (28)"
        );
        // An error reply to a read carries no data: the next reply follows directly.
        let mut buf = [0u8; 2];
        let err = c.read(0, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            TransmissionError::Server {
                command: Command::Read,
                errno: Errno(EIO),
                ..
            }
        ));
        c.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        let err = c.flush().unwrap_err();
        assert_eq!(
            err.to_string(),
            "server failed NBD_CMD_FLUSH of 0 bytes at offset 0: error 4242"
        );
    }

    #[test]
    fn a_wrong_cookie_breaks_the_connection() {
        let script = Script::new()
            .simple_reply(0, 99, b"")
            .simple_reply(0, 2, b"");
        let mut c = client(script, ALL, None);
        let err = c.flush().unwrap_err();
        assert_eq!(
            err.to_string(),
            "reply to NBD_CMD_FLUSH at offset 0 carries cookie 0x63, expected 0x1"
        );
        let err = c.flush().unwrap_err();
        assert!(matches!(err, TransmissionError::Broken { .. }), "{err}");
        assert!(matches!(
            c.disconnect().unwrap_err(),
            TransmissionError::Broken {
                command: Command::Disconnect
            }
        ));
    }

    #[test]
    fn a_structured_reply_is_a_bad_magic() {
        let script = Script::new().u32(0x668e_33ef).u32(0).u64(1);
        let mut c = client(script, ALL, None);
        let err = c.read(0, &mut [0u8; 512]).unwrap_err();
        assert!(
            matches!(
                err,
                TransmissionError::BadMagic {
                    found: 0x668e_33ef,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_short_read_reply_is_closed() {
        let script = Script::new().simple_reply(0, 1, &[1; 100]);
        let mut c = client(script, ALL, None);
        let err = c.read(0, &mut [0u8; 512]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server closed the connection during NBD_CMD_READ of 512 bytes at offset 0"
        );
    }

    #[test]
    fn forbidden_requests_are_refused_before_sending() {
        let none = TFLAG_HAS_FLAGS;
        let ro = TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | ALL;
        type Call = Box<dyn Fn(&mut Client<Conn>) -> Result<()>>;
        let cases: Vec<(u16, Call, &str)> = vec![
            (ro, Box::new(|c| c.write(0, &[0; 512], false)), "NBD_CMD_WRITE at offset 0 refused locally: the export is read-only"),
            (ro, Box::new(|c| c.trim(0, 512)), "NBD_CMD_TRIM at offset 0 refused locally: the export is read-only"),
            (ro, Box::new(|c| c.write_zeroes(512, 512, true)), "NBD_CMD_WRITE_ZEROES at offset 512 refused locally: the export is read-only"),
            (none, Box::new(|c| c.flush()), "NBD_CMD_FLUSH refused locally: the server did not set NBD_FLAG_SEND_FLUSH"),
            (none, Box::new(|c| c.trim(0, 512)), "NBD_CMD_TRIM refused locally: the server did not set NBD_FLAG_SEND_TRIM"),
            (none, Box::new(|c| c.write_zeroes(0, 512, false)), "NBD_CMD_WRITE_ZEROES refused locally: the server did not set NBD_FLAG_SEND_WRITE_ZEROES"),
            (none, Box::new(|c| c.write(0, &[0; 512], true)), "NBD_CMD_WRITE refused locally: the server did not set NBD_FLAG_SEND_FUA"),
            (ALL, Box::new(|c| c.read((1 << 20) - 511, &mut [0; 512])), "NBD_CMD_READ of 512 bytes at offset 1048065 refused locally: beyond the end of the 1048576-byte export"),
            (ALL, Box::new(|c| c.read(u64::MAX, &mut [0; 2])), "NBD_CMD_READ of 2 bytes at offset 18446744073709551615 refused locally: beyond the end of the 1048576-byte export"),
            (ALL, Box::new(|c| c.write(1 << 20, &[0; 1], false)), "NBD_CMD_WRITE of 1 byte at offset 1048576 refused locally: beyond the end of the 1048576-byte export"),
            (ALL, Box::new(|c| c.trim(0, 65536 + 512)), "NBD_CMD_TRIM of 66048 bytes at offset 0 refused locally: longer than the server's 65536-byte maximum"),
            (ALL, Box::new(|c| c.write_zeroes(100, 512, true)), "NBD_CMD_WRITE_ZEROES of 512 bytes at offset 100 refused locally: not aligned to the server's 512-byte minimum block size"),
            (ALL, Box::new(|c| c.read(0, &mut [0; 100])), "NBD_CMD_READ of 100 bytes at offset 0 refused locally: not aligned to the server's 512-byte minimum block size"),
        ];
        for (flags, call, want) in cases {
            let mut c = client(Script::new(), flags, sizes(512, 65536));
            let err = call(&mut c).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert!(c.stream.written.is_empty(), "{want}: sent something");
            assert!(!c.broken);
        }
    }

    #[test]
    fn without_block_sizes_any_alignment_goes() {
        let script = Script::new().simple_reply(0, 1, b"abc");
        let mut c = client(script, ALL, None);
        let mut buf = [0u8; 3];
        c.read(7, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        // Zero-length requests send nothing.
        c.read(9, &mut []).unwrap();
        c.write(9, &[], false).unwrap();
        assert_eq!(requests(&c.stream.written).len(), 1);
    }
}
