//! The transmission phase: `proto::Client` against a scripted server. The input chooses the
//! export (size, flags, block sizes), the requests the caller makes, and how the server
//! answers each request the client sends: properly, with an error, with another cookie or
//! magic, cut short, with raw bytes, or not at all.
//!
//! Beyond "no panic": the server only ever sees requests the export allows (in range,
//! aligned, within the maximum, commands and flags it announced, cookies in sequence); what a
//! successful read returns is what the server sent; a refusal sends nothing; a server error
//! leaves the client usable, and anything else that cuts a reply leaves it refusing with
//! `Broken`.

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nbdroot::proto::consts::*;
use nbdroot::proto::{BlockSizes, Client, Export, Style, TransmissionError};

#[derive(Debug, Arbitrary)]
struct Input {
    size: u32,
    /// The export size and request offsets in 512-byte sectors, so that aligned ranges are
    /// common.
    sectors: bool,
    flags: u16,
    block_sizes: Option<(u32, u32, u32)>,
    ops: Vec<Op>,
    replies: Vec<Reply>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Read {
        offset: u32,
        len: u16,
    },
    Write {
        offset: u32,
        len: u16,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u32,
        len: u32,
    },
    WriteZeroes {
        offset: u32,
        len: u32,
        may_trim: bool,
    },
    /// An offset near the end of the 64-bit range.
    ReadFar {
        back: u16,
        len: u16,
    },
}

/// How the server answers one request.
#[derive(Debug, Clone, Arbitrary)]
enum Reply {
    Ok,
    Error(u32),
    Cookie(u64),
    Magic(u32),
    /// The header, then this many bytes of the read data, then a close.
    Short(u16),
    Raw(Vec<u8>),
    Close,
}

/// Reads and writes longer than this are cut to it: longer ones only make more requests.
const MAX_LEN: usize = 8192;

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    let scale = if input.sectors { 512 } else { 1 };
    let size = u64::from(input.size) * scale;
    let block_sizes = input.block_sizes.and_then(|(minimum, preferred, maximum)| {
        BlockSizes {
            minimum,
            preferred,
            maximum,
        }
        .validate(size)
        .ok()
    });
    let export = Export {
        size,
        flags: input.flags,
        block_sizes,
        style: Style::FixedNewstyle,
    };
    let server = Rc::new(RefCell::new(Server::new(&export, input.replies)));
    let mut client = Client::new(Conn(server.clone()), export);
    // Whether a reply was cut: the client must then refuse everything it would send.
    let mut broken = false;
    for op in &input.ops {
        let before = server.borrow().requests;
        let (result, empty) = match *op {
            Op::Read { offset, len } => read(&mut client, &server, u64::from(offset) * scale, len),
            Op::ReadFar { back, len } => {
                read(&mut client, &server, u64::MAX - u64::from(back), len)
            }
            Op::Write { offset, len, fua } => {
                let offset = u64::from(offset) * scale;
                let data = pattern(offset, usize::from(len) % (MAX_LEN + 1));
                (client.write(offset, &data, fua), data.is_empty())
            }
            Op::Flush => (client.flush(), false),
            Op::Trim { offset, len } => (client.trim(u64::from(offset) * scale, len), false),
            Op::WriteZeroes {
                offset,
                len,
                may_trim,
            } => (
                client.write_zeroes(u64::from(offset) * scale, len, may_trim),
                false,
            ),
        };
        let server = server.borrow();
        let sent = server.requests - before;
        let Err(e) = result else {
            // Only an empty read or write has nothing to refuse.
            assert!(!broken || empty, "a broken client succeeded");
            continue;
        };
        assert!(!e.to_string().is_empty());
        match e {
            TransmissionError::ReadOnly { .. }
            | TransmissionError::NotSupported { .. }
            | TransmissionError::OutOfRange { .. }
            | TransmissionError::TooLong { .. }
            | TransmissionError::Unaligned { .. } => {
                assert_eq!(sent, 0, "a refusal sent {sent} requests: {e}")
            }
            TransmissionError::Broken { .. } => assert!(broken && sent == 0, "{e}"),
            TransmissionError::Server { errno, .. } => {
                assert!(!broken && errno.0 != 0, "{e}");
                if !server.raw {
                    assert_eq!(server.last_error, Some(errno.0));
                }
            }
            TransmissionError::WrongCookie { expected, got, .. } => {
                assert_ne!(expected, got);
                broken = true;
            }
            TransmissionError::BadMagic { found, .. } => {
                assert_ne!(found, SIMPLE_REPLY_MAGIC);
                broken = true;
            }
            TransmissionError::Closed { .. } => broken = true,
            TransmissionError::TimedOut { .. } | TransmissionError::Io { .. } => {
                panic!("an in-memory stream can only end: {e:?}")
            }
        }
    }
    let next = server.borrow().requests + 1;
    match client.disconnect() {
        Ok(_) => {
            assert!(!broken, "a broken client sent NBD_CMD_DISC");
            // NBD_CMD_DISC, with the next cookie, and nothing after it.
            let server = server.borrow();
            assert_eq!(server.requests, next);
            assert!(server.pending.is_empty());
        }
        Err(e) => assert!(
            broken && matches!(e, TransmissionError::Broken { .. }),
            "{e}"
        ),
    }
}

/// Reads into a buffer; success must mean the server's data (unless raw bytes stood in for
/// a reply). Also says whether the read was empty.
fn read(
    client: &mut Client<Conn>,
    server: &Rc<RefCell<Server>>,
    offset: u64,
    len: u16,
) -> (Result<(), TransmissionError>, bool) {
    let mut buf = vec![0xEE; usize::from(len) % (MAX_LEN + 1)];
    let result = client.read(offset, &mut buf);
    if result.is_ok() && !server.borrow().raw {
        assert!(
            buf == pattern(offset, buf.len()),
            "read data differs from the server's"
        );
    }
    (result, buf.is_empty())
}

/// The data at `offset`, as the server holds it and as writes send it.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (offset.wrapping_add(i) % 251) as u8)
        .collect()
}

/// The client's end of the connection to the shared [`Server`].
struct Conn(Rc<RefCell<Server>>);

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut server = self.0.borrow_mut();
        let n = buf.len().min(server.out.len());
        for (b, x) in buf.iter_mut().zip(server.out.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut server = self.0.borrow_mut();
        server.pending.extend_from_slice(buf);
        server.serve();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server that answers each complete request as its next [`Reply`] says, and checks that
/// the request was one the export allows.
struct Server {
    export: Export,
    replies: VecDeque<Reply>,
    /// What the client wrote that is not yet a whole request.
    pending: Vec<u8>,
    /// What the client has yet to read; once it is read, the connection is closed.
    out: VecDeque<u8>,
    closed: bool,
    /// Whether raw bytes stood in for a reply: from then on, what the client reads is
    /// whatever it makes of them.
    raw: bool,
    requests: u64,
    last_error: Option<u32>,
}

impl Server {
    fn new(export: &Export, replies: Vec<Reply>) -> Self {
        Self {
            export: export.clone(),
            replies: replies.into(),
            pending: Vec::new(),
            out: VecDeque::new(),
            closed: false,
            raw: false,
            requests: 0,
            last_error: None,
        }
    }

    /// Takes one request off `pending` when it is whole.
    fn serve(&mut self) {
        let Some(h) = self.pending.get(..28) else {
            return;
        };
        let be = |r: std::ops::Range<usize>| h[r].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        assert_eq!(be(0..4) as u32, REQUEST_MAGIC);
        let (flags, cmd, cookie) = (be(4..6) as u16, be(6..8) as u16, be(8..16));
        let (offset, len) = (be(16..24), be(24..28));
        let payload = if cmd == CMD_WRITE { len as usize } else { 0 };
        if self.pending.len() < 28 + payload {
            return;
        }
        self.requests += 1;
        assert_eq!(cookie, self.requests, "cookies count up from 1");
        self.check(flags, cmd, offset, len);
        if cmd == CMD_WRITE {
            let data = &self.pending[28..28 + payload];
            assert!(
                data == pattern(offset, payload),
                "written data differs from the caller's"
            );
        }
        self.pending.drain(..28 + payload);
        if cmd == CMD_DISC {
            return;
        }
        self.last_error = None;
        let data_len = if cmd == CMD_READ { len as usize } else { 0 };
        let header = |error: u32, cookie: u64| {
            let mut h = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
            h.extend_from_slice(&error.to_be_bytes());
            h.extend_from_slice(&cookie.to_be_bytes());
            h
        };
        if self.closed {
            return;
        }
        let reply = match self.replies.pop_front().unwrap_or(Reply::Close) {
            Reply::Ok | Reply::Error(0) => [header(0, cookie), pattern(offset, data_len)].concat(),
            Reply::Error(e) => {
                self.last_error = Some(e);
                header(e, cookie)
            }
            Reply::Cookie(c) => [header(0, c), pattern(offset, data_len)].concat(),
            Reply::Magic(m) => {
                let mut h = header(0, cookie);
                h[..4].copy_from_slice(&m.to_be_bytes());
                h
            }
            Reply::Short(n) => {
                self.closed = true;
                let cut = usize::from(n).min(data_len.saturating_sub(1));
                [header(0, cookie), pattern(offset, cut)].concat()
            }
            Reply::Raw(bytes) => {
                self.raw = true;
                bytes
            }
            Reply::Close => {
                self.closed = true;
                Vec::new()
            }
        };
        self.out.extend(reply);
    }

    /// The request is one this export allows.
    fn check(&self, flags: u16, cmd: u16, offset: u64, len: u64) {
        let e = &self.export;
        let read_only = e.flags & TFLAG_READ_ONLY != 0;
        let (allowed_flags, needs) = match cmd {
            CMD_READ => (0, 0),
            CMD_WRITE => (CMD_FLAG_FUA, 0),
            CMD_FLUSH => (0, TFLAG_SEND_FLUSH),
            CMD_TRIM => (0, TFLAG_SEND_TRIM),
            CMD_WRITE_ZEROES => (CMD_FLAG_NO_HOLE, TFLAG_SEND_WRITE_ZEROES),
            CMD_DISC => (0, 0),
            other => panic!("unknown command {other}"),
        };
        assert_eq!(
            flags & !allowed_flags,
            0,
            "command {cmd} with flags {flags:#x}"
        );
        assert_eq!(e.flags & needs, needs, "command {cmd} without its flag");
        if flags & CMD_FLAG_FUA != 0 {
            assert_ne!(e.flags & TFLAG_SEND_FUA, 0, "FUA without NBD_FLAG_SEND_FUA");
        }
        if matches!(cmd, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) {
            assert!(!read_only, "command {cmd} to a read-only export");
        }
        if matches!(cmd, CMD_FLUSH | CMD_DISC) {
            assert_eq!((offset, len), (0, 0));
            return;
        }
        assert!(len > 0, "an empty command {cmd}");
        assert!(offset.checked_add(len).is_some_and(|end| end <= e.size));
        let (minimum, maximum) = e
            .block_sizes
            .map_or((1, DEFAULT_MAX_PAYLOAD), |b| (b.minimum, b.maximum));
        let minimum = u64::from(minimum);
        assert!(offset.is_multiple_of(minimum) && len.is_multiple_of(minimum));
        assert!(len <= u64::from(maximum));
        if matches!(cmd, CMD_READ | CMD_WRITE) {
            assert!(len <= u64::from(DEFAULT_MAX_PAYLOAD));
        }
    }
}
