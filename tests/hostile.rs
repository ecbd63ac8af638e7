//! Misbehaving servers: scripted bytes on a real TCP socket on 127.0.0.1 (a thread that
//! accepts once, sends its script, then closes or stalls), and property tests that feed
//! arbitrary and mutated bytes to every reader. Whatever the server does, the client must
//! return promptly with a typed error, never panic, hang or allocate on the server's word.

use std::io::{self, Cursor, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nbdroot::proto::consts::*;
use nbdroot::proto::consts::{MAX_LIST_ENTRIES, MAX_REPLY_LEN};
use nbdroot::proto::{
    self, BlockSizes, Client, Export, HandshakeError, RepError, Style, TransmissionError,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The client's read timeout in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A close must be noticed at once, well before the timeout could fire.
const PROMPT: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Building server bytes

#[derive(Clone, Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self
    }
    fn greeting() -> Self {
        Self::default()
            .u64(NBDMAGIC)
            .u64(IHAVEOPT)
            .u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    }
    fn reply(self, option: u32, ty: u32, data: &[u8]) -> Self {
        self.u64(OPTION_REPLY_MAGIC)
            .u32(option)
            .u32(ty)
            .u32(data.len() as u32)
            .raw(data)
    }
    fn info_export(self, option: u32, size: u64, flags: u16) -> Self {
        let data = Self::default().u16(INFO_EXPORT).u64(size).u16(flags);
        self.reply(option, REP_INFO, &data.0)
    }
    fn info_block_size(self, option: u32, min: u32, preferred: u32, max: u32) -> Self {
        let data = Self::default()
            .u16(INFO_BLOCK_SIZE)
            .u32(min)
            .u32(preferred)
            .u32(max);
        self.reply(option, REP_INFO, &data.0)
    }
    fn server(self, name: &str, description: &str) -> Self {
        let data = Self::default()
            .u32(name.len() as u32)
            .raw(name.as_bytes())
            .raw(description.as_bytes());
        self.reply(OPT_LIST, REP_SERVER, &data.0)
    }
    fn simple_reply(self, error: u32, cookie: u64, data: &[u8]) -> Self {
        self.u32(SIMPLE_REPLY_MAGIC)
            .u32(error)
            .u64(cookie)
            .raw(data)
    }
}

const SIZE: u64 = 1 << 20;
const FLAGS: u16 = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;

/// A complete, valid NBD_OPT_GO handshake as the server sends it.
fn full_go() -> Bytes {
    Bytes::greeting()
        .info_export(OPT_GO, SIZE, FLAGS)
        .info_block_size(OPT_GO, 512, 4096, 1 << 20)
        .reply(OPT_GO, REP_ACK, b"")
}

/// A complete NBD_OPT_LIST answer; `.1` is where the ACK to NBD_OPT_ABORT starts.
fn full_list() -> (Bytes, usize) {
    let b = Bytes::greeting()
        .server("root", "the root")
        .server("swap", "")
        .reply(OPT_LIST, REP_ACK, b"");
    let at = b.0.len();
    (b.reply(OPT_ABORT, REP_ACK, b""), at)
}

/// A complete NBD_OPT_INFO answer; `.1` is where the ACK to NBD_OPT_ABORT starts.
fn full_info() -> (Bytes, usize) {
    let mut name = INFO_NAME.to_be_bytes().to_vec();
    name.extend_from_slice(b"root");
    let b = Bytes::greeting()
        .info_export(OPT_INFO, SIZE, FLAGS)
        .reply(OPT_INFO, REP_INFO, &name)
        .info_block_size(OPT_INFO, 512, 4096, 1 << 20)
        .reply(OPT_INFO, REP_ACK, b"");
    let at = b.0.len();
    (b.reply(OPT_ABORT, REP_ACK, b""), at)
}

// ---------------------------------------------------------------------------------------------
// A scripted server on a real socket

/// What the server does once its bytes are sent.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// Closes its side (FIN), then reads until the client goes.
    Close,
    /// Keeps the connection open, silent, until the client goes.
    Stall,
}

struct Scripted {
    port: u16,
    thread: JoinHandle<()>,
}

impl Scripted {
    fn start(bytes: Vec<u8>, end: End) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The server never waits for the client before writing: it can only be "early",
            // which is what a hostile server would be anyway.
            let _ = s.write_all(&bytes);
            if end == End::Close {
                let _ = s.shutdown(Shutdown::Write);
            }
            // Reading what the client sends until it closes keeps the kernel from answering
            // with a reset (a close with unread data), so the client sees a plain EOF.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = io::copy(&mut s, &mut io::sink());
        });
        Self { port, thread }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// Runs `f` on a fresh connection, closes it, and returns the result and the time taken.
    fn run<T>(self, f: impl FnOnce(&mut TcpStream) -> T) -> (T, Duration) {
        let mut s = self.connect();
        let start = Instant::now();
        let out = f(&mut s);
        let took = start.elapsed();
        drop(s);
        self.thread.join().unwrap();
        (out, took)
    }
}

fn negotiate_against(bytes: Vec<u8>, end: End) -> (Result<Export, HandshakeError>, Duration) {
    Scripted::start(bytes, end).run(|s| proto::negotiate(s, ""))
}

// ---------------------------------------------------------------------------------------------
// Handshake

#[test]
fn wrong_magic_is_bad_magic() {
    let (r, took) = negotiate_against(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), End::Close);
    let err = r.unwrap_err();
    assert_eq!(
        err.to_string(),
        "not an NBD server: bad magic 0x485454502f312e31 while reading the server greeting"
    );
    assert!(took < PROMPT);
    // Right first magic, wrong second.
    let bytes = Bytes::default().u64(NBDMAGIC).u64(0xdead_beef).0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert!(matches!(
        r.unwrap_err(),
        HandshakeError::BadMagic {
            found: 0xdead_beef,
            ..
        }
    ));
    // A wrong option reply magic.
    let bytes = Bytes::greeting().u64(0x1122_3344_5566_7788).0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert!(matches!(
        r.unwrap_err(),
        HandshakeError::BadMagic {
            step: "reading the reply to NBD_OPT_GO",
            found: 0x1122_3344_5566_7788
        }
    ));
}

#[test]
fn truncation_at_every_byte_of_go_is_closed_promptly() {
    let full = full_go().0;
    for cut in 0..full.len() {
        let (r, took) = negotiate_against(full[..cut].to_vec(), End::Close);
        let err = r.unwrap_err();
        assert!(
            matches!(err, HandshakeError::Closed { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(took < PROMPT, "cut at {cut}: took {took:?}");
    }
    let (r, _) = negotiate_against(full, End::Close);
    let export = r.unwrap();
    assert_eq!((export.size, export.flags), (SIZE, FLAGS));
}

#[test]
fn truncation_of_list_and_info_is_closed_except_for_the_abort_ack() {
    let (list, ack) = full_list();
    for cut in 0..=list.0.len() {
        let bytes = list.0[..cut].to_vec();
        let (r, took) = Scripted::start(bytes, End::Close).run(proto::list);
        assert!(took < PROMPT, "list cut at {cut}: took {took:?}");
        if cut < ack {
            let err = r.unwrap_err();
            assert!(
                matches!(err, HandshakeError::Closed { .. }),
                "list cut at {cut}: {err:?}"
            );
        } else {
            // A close instead of (or during) the ACK to NBD_OPT_ABORT is fine.
            let names: Vec<_> = r.unwrap().into_iter().map(|e| e.name).collect();
            assert_eq!(names, ["root", "swap"], "list cut at {cut}");
        }
    }
    let (info, ack) = full_info();
    for cut in 0..=info.0.len() {
        let bytes = info.0[..cut].to_vec();
        let (r, took) = Scripted::start(bytes, End::Close).run(|s| proto::info(s, "root"));
        assert!(took < PROMPT, "info cut at {cut}: took {took:?}");
        if cut < ack {
            assert!(
                matches!(r, Err(HandshakeError::Closed { .. })),
                "info cut at {cut}: {r:?}"
            );
        } else {
            let info = r.unwrap();
            assert_eq!(
                (info.export.size, info.name.as_deref()),
                (SIZE, Some("root"))
            );
        }
    }
}

#[test]
fn a_reply_claiming_4_gib_is_refused_before_allocating() {
    let huge = |option| {
        Bytes::greeting()
            .u64(OPTION_REPLY_MAGIC)
            .u32(option)
            .u32(REP_INFO)
            .u32(u32::MAX)
            .0
    };
    // The server would have to send 4 GiB; it stalls instead, so only a client that checks
    // the length before reading (or allocating) returns promptly.
    let (r, took) = negotiate_against(huge(OPT_GO), End::Stall);
    assert!(
        matches!(r, Err(HandshakeError::ReplyTooLong { len: u32::MAX })),
        "{r:?}"
    );
    assert!(took < PROMPT);
    let (r, _) = Scripted::start(huge(OPT_INFO), End::Stall).run(|s| proto::info(s, ""));
    assert!(
        matches!(r, Err(HandshakeError::ReplyTooLong { .. })),
        "{r:?}"
    );
    let (r, _) = Scripted::start(huge(OPT_LIST), End::Stall).run(proto::list);
    assert!(
        matches!(r, Err(HandshakeError::ReplyTooLong { .. })),
        "{r:?}"
    );
    // The limit itself is allowed; one byte more is not.
    let just_over = Bytes::greeting()
        .u64(OPTION_REPLY_MAGIC)
        .u32(OPT_GO)
        .u32(REP_INFO)
        .u32(MAX_REPLY_LEN + 1)
        .0;
    let (r, _) = negotiate_against(just_over, End::Stall);
    assert!(
        matches!(r, Err(HandshakeError::ReplyTooLong { .. })),
        "{r:?}"
    );
}

#[test]
fn an_endless_export_list_is_cut_off() {
    let mut b = Bytes::greeting();
    for i in 0..=MAX_LIST_ENTRIES {
        b = b.server(&format!("export{i}"), "");
    }
    let (r, took) = Scripted::start(b.0, End::Stall).run(proto::list);
    assert!(matches!(r, Err(HandshakeError::ListTooLong)), "{r:?}");
    assert!(took < Duration::from_secs(5));
}

#[test]
fn unknown_reply_types_are_ignored_unless_errors() {
    let mut unknown_info = 0x4242u16.to_be_bytes().to_vec();
    unknown_info.extend_from_slice(b"future info");
    let bytes = Bytes::greeting()
        .reply(OPT_GO, 0x55, b"future reply")
        .reply(OPT_GO, REP_INFO, &unknown_info)
        .info_export(OPT_GO, SIZE, FLAGS)
        .reply(OPT_GO, REP_ACK, b"")
        .0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert_eq!(r.unwrap().size, SIZE);

    let bytes = Bytes::greeting()
        .reply(OPT_GO, REP_FLAG_ERROR | 100, b"a future error")
        .0;
    let (r, _) = negotiate_against(bytes, End::Close);
    let err = r.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Refused {
                code: RepError::Other(100),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "server refused export \"\" (error reply 2^31+100): a future error"
    );
    // The same for NBD_OPT_LIST.
    let bytes = Bytes::greeting()
        .reply(OPT_LIST, 0x77, b"")
        .server("only", "")
        .reply(OPT_LIST, REP_FLAG_ERROR | 200, b"")
        .0;
    let (r, _) = Scripted::start(bytes, End::Close).run(proto::list);
    assert_eq!(
        r.unwrap_err().to_string(),
        "server refused NBD_OPT_LIST (error reply 2^31+200): (no message from the server)"
    );
}

#[test]
fn a_reply_for_another_option_is_refused() {
    let bytes = Bytes::greeting().reply(OPT_LIST, REP_ACK, b"").0;
    let (r, _) = negotiate_against(bytes, End::Close);
    let err = r.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::WrongOption {
                expected: OPT_GO,
                got: OPT_LIST
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "reply for option 3 while waiting for NBD_OPT_GO"
    );
}

#[test]
fn close_in_the_middle_of_go() {
    let go = full_go().0;
    // The greeting (18 bytes), then half of the first reply header.
    let (r, took) = negotiate_against(go[..18 + 10].to_vec(), End::Close);
    let err = r.unwrap_err();
    assert_eq!(
        err.to_string(),
        "server closed the connection while reading the reply to NBD_OPT_GO"
    );
    assert!(took < PROMPT);
    // After a complete NBD_INFO_EXPORT, before the ACK.
    let bytes = Bytes::greeting().info_export(OPT_GO, SIZE, FLAGS).0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert!(matches!(r, Err(HandshakeError::Closed { .. })), "{r:?}");
}

#[test]
fn invalid_block_sizes_are_refused() {
    let bytes = Bytes::greeting()
        .info_export(OPT_GO, SIZE, FLAGS)
        .info_block_size(OPT_GO, 3, 4096, 1 << 20)
        .reply(OPT_GO, REP_ACK, b"")
        .0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert!(
        matches!(r, Err(HandshakeError::BadBlockSizes { minimum: 3, .. })),
        "{r:?}"
    );
    let bytes = Bytes::greeting()
        .info_export(OPT_GO, SIZE, FLAGS)
        .info_block_size(OPT_GO, 65536, 65536, 1 << 20)
        .reply(OPT_GO, REP_ACK, b"")
        .0;
    let (r, _) = negotiate_against(bytes, End::Close);
    assert!(
        matches!(
            r,
            Err(HandshakeError::BlockSizeUnsupported { minimum: 65536 })
        ),
        "{r:?}"
    );
}

#[test]
fn a_silent_server_times_out_within_the_bound() {
    let (r, took) = negotiate_against(Vec::new(), End::Stall);
    let err = r.unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out while reading the server greeting"
    );
    assert!(
        took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT + Duration::from_secs(2),
        "took {took:?}"
    );
    // Silent after the greeting.
    let (r, took) = negotiate_against(Bytes::greeting().0, End::Stall);
    assert!(
        matches!(
            r,
            Err(HandshakeError::TimedOut {
                step: "reading the reply to NBD_OPT_GO"
            })
        ),
        "{r:?}"
    );
    assert!(took < TIMEOUT + Duration::from_secs(2));
    // Silent instead of answering NBD_OPT_ABORT: the list is in hand, but a server that
    // neither answers nor closes is broken, and the caller hears so within the bound.
    let (list, ack) = full_list();
    let (r, took) = Scripted::start(list.0[..ack].to_vec(), End::Stall).run(proto::list);
    assert!(
        matches!(
            r,
            Err(HandshakeError::TimedOut {
                step: "reading the reply to NBD_OPT_ABORT"
            })
        ),
        "{r:?}"
    );
    assert!(took < TIMEOUT + Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Transmission

fn export() -> Export {
    Export {
        size: SIZE,
        flags: FLAGS,
        block_sizes: None,
        style: Style::FixedNewstyle,
    }
}

fn read_against(
    bytes: Vec<u8>,
    end: End,
    len: usize,
) -> (Result<Vec<u8>, TransmissionError>, Duration) {
    Scripted::start(bytes, end).run(|s| {
        let mut c = Client::new(s, export());
        let mut buf = vec![0u8; len];
        c.read(0, &mut buf).map(|()| buf)
    })
}

#[test]
fn transmission_replies_are_checked() {
    // Good.
    let (r, _) = read_against(
        Bytes::default().simple_reply(0, 1, b"data").0,
        End::Close,
        4,
    );
    assert_eq!(r.unwrap(), b"data");
    // Another request's cookie.
    let (r, _) = read_against(
        Bytes::default().simple_reply(0, 7, b"data").0,
        End::Close,
        4,
    );
    assert!(
        matches!(
            r,
            Err(TransmissionError::WrongCookie {
                expected: 1,
                got: 7,
                ..
            })
        ),
        "{r:?}"
    );
    // A structured reply, which was never negotiated.
    let bytes = Bytes::default().u32(0x668e_33ef).u32(0).u64(1).0;
    let (r, _) = read_against(bytes, End::Close, 4);
    assert!(
        matches!(
            r,
            Err(TransmissionError::BadMagic {
                found: 0x668e_33ef,
                ..
            })
        ),
        "{r:?}"
    );
    // Data cut short.
    let (r, took) = read_against(Bytes::default().simple_reply(0, 1, b"da").0, End::Close, 4);
    assert_eq!(
        r.unwrap_err().to_string(),
        "server closed the connection during NBD_CMD_READ of 4 bytes at offset 0"
    );
    assert!(took < PROMPT);
    // Silence.
    let (r, took) = read_against(Vec::new(), End::Stall, 4);
    assert_eq!(
        r.unwrap_err().to_string(),
        "timed out waiting for the server during NBD_CMD_READ of 4 bytes at offset 0"
    );
    assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
    // An error reply.
    let (r, _) = read_against(Bytes::default().simple_reply(EIO, 1, b"").0, End::Close, 4);
    assert_eq!(
        r.unwrap_err().to_string(),
        "server failed NBD_CMD_READ of 4 bytes at offset 0: EIO (5)"
    );
}

#[test]
fn a_client_that_lost_step_refuses_further_requests() {
    let bytes = Bytes::default()
        .simple_reply(0, 9, b"")
        .simple_reply(0, 2, b"")
        .0;
    let ((first, second), _) = Scripted::start(bytes, End::Close).run(|s| {
        let mut c = Client::new(s, export());
        (c.flush(), c.flush())
    });
    assert!(matches!(first, Err(TransmissionError::WrongCookie { .. })));
    assert!(
        matches!(second, Err(TransmissionError::Broken { .. })),
        "{second:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: what the client makes of arbitrary, generated and mutated server bytes

/// A stream that replays `input` and swallows writes.
struct Replay(Cursor<Vec<u8>>);

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn replay(bytes: &[u8]) -> Replay {
    Replay(Cursor::new(bytes.to_vec()))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// An in-memory stream can only end: the only failures are protocol errors or a close.
fn assert_typed(e: &HandshakeError) -> Result<(), TestCaseError> {
    prop_assert!(
        !matches!(
            e,
            HandshakeError::Io { .. } | HandshakeError::TimedOut { .. }
        ),
        "{e:?}"
    );
    prop_assert!(!e.to_string().is_empty());
    Ok(())
}

/// What every handshake entry point must report for any server bytes: a typed error, or an
/// export whose size and flags the server sent (in NBD_INFO_EXPORT, after
/// NBD_OPT_EXPORT_NAME or in an oldstyle greeting) and whose block sizes are valid.
fn check_handshake(bytes: &[u8]) -> Result<(), TestCaseError> {
    let sent = |e: &Export| -> Result<(), TestCaseError> {
        let mut field = e.size.to_be_bytes().to_vec();
        field.extend_from_slice(&e.flags.to_be_bytes());
        let oldstyle = e.style == Style::Oldstyle
            && bytes.get(16..24) == Some(&e.size.to_be_bytes()[..])
            && bytes.get(26..28) == Some(&e.flags.to_be_bytes()[..]);
        prop_assert!(
            oldstyle || bytes.windows(10).any(|w| w == field.as_slice()),
            "size {} and flags {:#x} are not in the server's bytes",
            e.size,
            e.flags
        );
        if let Some(b) = e.block_sizes {
            prop_assert_eq!(b.validate(e.size).ok(), Some(b));
        }
        prop_assert!([512, 1024, 2048, 4096].contains(&e.kernel_block_size()));
        Ok(())
    };
    for export in ["", "root"] {
        match proto::negotiate(&mut replay(bytes), export) {
            Ok(e) => sent(&e)?,
            Err(e) => assert_typed(&e)?,
        }
        match proto::info(&mut replay(bytes), export) {
            Ok(info) => sent(&info.export)?,
            Err(e) => assert_typed(&e)?,
        }
    }
    match proto::list(&mut replay(bytes)) {
        // Each entry is a reply of at least 24 bytes.
        Ok(entries) => {
            prop_assert!(entries.len() <= MAX_LIST_ENTRIES && entries.len() * 24 <= bytes.len())
        }
        Err(e) => assert_typed(&e)?,
    }
    Ok(())
}

/// One reply a server may send to NBD_OPT_GO.
#[derive(Debug, Clone)]
enum GoReply {
    Export {
        size: u64,
        flags: u16,
    },
    BlockSizes(BlockSizes),
    Name(String),
    /// An information type this client does not know: ignored.
    OtherInfo(u16, Vec<u8>),
    /// NBD_INFO_EXPORT (0) or NBD_INFO_BLOCK_SIZE (3) of the wrong length.
    BadInfo(u16, usize),
    /// A reply type this client does not know, without the error bit: ignored.
    Unknown(u32, Vec<u8>),
    /// An error reply; NBD_REP_ERR_UNSUP (1, which falls back to NBD_OPT_EXPORT_NAME) aside.
    Error(u32, String),
    Ack,
}

fn go_reply() -> impl Strategy<Value = GoReply> {
    let sizes = (
        0u32..8,
        0u32..16,
        prop_oneof![Just(u32::MAX), 0u32..(1 << 26)],
    );
    prop_oneof![
        3 => (any::<u64>(), any::<u16>()).prop_map(|(size, flags)| GoReply::Export { size, flags }),
        2 => sizes.prop_map(|(min, pref, maximum)| GoReply::BlockSizes(BlockSizes {
            minimum: 1 << (min * 2),
            preferred: 1 << pref,
            maximum,
        })),
        1 => "\\PC{0,20}".prop_map(GoReply::Name),
        1 => (4u16.., prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(ty, data)| GoReply::OtherInfo(ty, data)),
        1 => (prop::sample::select(vec![INFO_EXPORT, INFO_BLOCK_SIZE]), 2usize..30)
            .prop_filter("a wrong length", |&(ty, len)| len != if ty == INFO_EXPORT { 12 } else { 14 })
            .prop_map(|(ty, len)| GoReply::BadInfo(ty, len)),
        1 => (4u32..REP_FLAG_ERROR, prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(ty, data)| GoReply::Unknown(ty, data)),
        1 => (prop::sample::select(vec![2u32, 3, 4, 5, 6, 7, 8, 9, 10, 100]), "[ -~]{0,30}")
            .prop_map(|(code, text)| GoReply::Error(code, text)),
        2 => Just(GoReply::Ack),
    ]
}

fn go_bytes(replies: &[GoReply]) -> Vec<u8> {
    let mut b = Bytes::greeting();
    for r in replies {
        b = match r {
            GoReply::Export { size, flags } => b.info_export(OPT_GO, *size, *flags),
            GoReply::BlockSizes(s) => b.info_block_size(OPT_GO, s.minimum, s.preferred, s.maximum),
            GoReply::Name(n) => {
                let data = Bytes::default().u16(INFO_NAME).raw(n.as_bytes());
                b.reply(OPT_GO, REP_INFO, &data.0)
            }
            GoReply::OtherInfo(ty, data) => {
                b.reply(OPT_GO, REP_INFO, &Bytes::default().u16(*ty).raw(data).0)
            }
            GoReply::BadInfo(ty, len) => {
                let data = Bytes::default().u16(*ty).raw(&vec![0; len - 2]);
                b.reply(OPT_GO, REP_INFO, &data.0)
            }
            GoReply::Unknown(ty, data) => b.reply(OPT_GO, *ty, data),
            GoReply::Error(code, text) => b.reply(OPT_GO, REP_FLAG_ERROR | code, text.as_bytes()),
            GoReply::Ack => b.reply(OPT_GO, REP_ACK, b""),
        };
    }
    b.0
}

/// How NBD_OPT_GO must end for these replies: the protocol, stated on its own.
#[derive(Debug, PartialEq)]
enum GoOutcome {
    Export(u64, u16, Option<BlockSizes>),
    Closed,
    BadInfo(u16),
    NoExportInfo,
    BadBlockSizes,
    UnknownExport(String),
    TlsRequired(String),
    Refused(RepError, String),
}

fn go_outcome(replies: &[GoReply]) -> GoOutcome {
    let (mut export, mut sizes) = (None, None);
    let message = |m: &str| {
        let m = m.trim();
        if m.is_empty() {
            "(no message from the server)".to_string()
        } else {
            m.to_string()
        }
    };
    for r in replies {
        match r {
            GoReply::Export { size, flags } => export = Some((*size, *flags)),
            GoReply::BlockSizes(s) => sizes = Some(*s),
            GoReply::Name(_) | GoReply::OtherInfo(..) | GoReply::Unknown(..) => {}
            GoReply::BadInfo(ty, _) => return GoOutcome::BadInfo(*ty),
            GoReply::Error(5, m) => return GoOutcome::TlsRequired(message(m)),
            GoReply::Error(6, m) => return GoOutcome::UnknownExport(message(m)),
            GoReply::Error(code, m) => {
                let codes = [
                    (2, RepError::Policy),
                    (3, RepError::Invalid),
                    (4, RepError::Platform),
                    (7, RepError::Shutdown),
                    (8, RepError::BlockSizeReqd),
                    (9, RepError::TooBig),
                ];
                let rep = codes
                    .iter()
                    .find(|(c, _)| c == code)
                    .map_or(RepError::Other(*code), |r| r.1);
                return GoOutcome::Refused(rep, message(m));
            }
            GoReply::Ack => {
                let Some((size, flags)) = export else {
                    return GoOutcome::NoExportInfo;
                };
                return match sizes.map(|s| s.validate(size)).transpose() {
                    Ok(sizes) => GoOutcome::Export(size, flags, sizes),
                    Err(_) => GoOutcome::BadBlockSizes,
                };
            }
        }
    }
    GoOutcome::Closed
}

/// The export the transmission properties run against.
fn transmission_export(block_sizes: Option<BlockSizes>) -> Export {
    Export {
        size: SIZE,
        flags: FLAGS | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES,
        block_sizes,
        style: Style::FixedNewstyle,
    }
}

/// What a request sequence must come to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// With the data a read returned.
    Done(Vec<u8>),
    Server(u32),
    BadMagic(u32),
    WrongCookie {
        expected: u64,
        got: u64,
    },
    Closed,
    Broken,
}

fn outcome(r: Result<Vec<u8>, TransmissionError>) -> Outcome {
    match r {
        Ok(data) => Outcome::Done(data),
        Err(TransmissionError::Server { errno, .. }) => Outcome::Server(errno.0),
        Err(TransmissionError::BadMagic { found, .. }) => Outcome::BadMagic(found),
        Err(TransmissionError::WrongCookie { expected, got, .. }) => {
            Outcome::WrongCookie { expected, got }
        }
        Err(TransmissionError::Closed { .. }) => Outcome::Closed,
        Err(TransmissionError::Broken { .. }) => Outcome::Broken,
        Err(e) => panic!("not a reply outcome: {e:?}"),
    }
}

/// Reads, writes, flushes, trims and zeroes on `bytes` as the server's replies.
fn run_transmission(bytes: &[u8], block_sizes: Option<BlockSizes>) -> Vec<Outcome> {
    let mut c = Client::new(replay(bytes), transmission_export(block_sizes));
    let mut buf = vec![0u8; 3 * 512];
    let read = c.read(0, &mut buf).map(|()| buf);
    let mut out = vec![outcome(read)];
    for r in [
        c.write(512, &[1; 1024], true),
        c.flush(),
        c.trim(0, 512),
        c.write_zeroes(1024, 512, false),
    ] {
        out.push(outcome(r.map(|()| Vec::new())));
    }
    out
}

/// Per operation of `run_transmission`, how much data each of its requests' replies carries:
/// reads and writes are split at the server's maximum request.
fn reply_data(block_sizes: Option<BlockSizes>) -> Vec<Vec<usize>> {
    let chunk = block_sizes.map_or(32 << 20, |b| {
        let max = b.maximum.min(32 << 20);
        (max - max % b.minimum).max(b.minimum) as usize
    });
    let chunks = |len: usize| (0..len).step_by(chunk).map(move |at| chunk.min(len - at));
    vec![
        chunks(1536).collect(),
        chunks(1024).map(|_| 0).collect(),
        vec![0],
        vec![0],
        vec![0],
    ]
}

/// What the same requests must come to, from the simple reply format alone: each request
/// takes a 16-byte reply with its cookie, then a read's data unless the reply is an error.
fn transmission_outcome(bytes: &[u8], block_sizes: Option<BlockSizes>) -> Vec<Outcome> {
    let ops = reply_data(block_sizes);
    let (mut at, mut cookie, mut broken) = (0, 1u64, false);
    let mut out = Vec::new();
    'ops: for replies in ops {
        if broken {
            out.push(Outcome::Broken);
            continue;
        }
        let mut data = Vec::new();
        for len in replies {
            let Some(h) = bytes.get(at..at + 16) else {
                broken = true;
                out.push(Outcome::Closed);
                continue 'ops;
            };
            at += 16;
            let magic = u32::from_be_bytes(h[..4].try_into().unwrap());
            let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
            let got = be64(&h[8..]);
            let expected = cookie;
            cookie += 1;
            let end = if magic != SIMPLE_REPLY_MAGIC {
                Some(Outcome::BadMagic(magic))
            } else if got != expected {
                Some(Outcome::WrongCookie { expected, got })
            } else if error != 0 {
                out.push(Outcome::Server(error));
                continue 'ops;
            } else if let Some(d) = bytes.get(at..at + len) {
                data.extend_from_slice(d);
                at += len;
                None
            } else {
                Some(Outcome::Closed)
            };
            if let Some(end) = end {
                broken = true;
                out.push(end);
                continue 'ops;
            }
        }
        out.push(Outcome::Done(data));
    }
    out
}

/// Valid exchanges to mutate.
fn valid_handshakes() -> Vec<Vec<u8>> {
    let oldstyle = Bytes::default()
        .u64(NBDMAGIC)
        .u64(OLDSTYLE_MAGIC)
        .u64(SIZE)
        .u32(u32::from(FLAGS))
        .raw(&[0; 124]);
    vec![full_go().0, full_list().0 .0, full_info().0 .0, oldstyle.0]
}

/// Valid replies to every request of `run_transmission`.
fn valid_replies(block_sizes: Option<BlockSizes>) -> Vec<u8> {
    let mut b = Bytes::default();
    for (cookie, len) in (1..).zip(reply_data(block_sizes).into_iter().flatten()) {
        b = b.simple_reply(0, cookie, &vec![7; len]);
    }
    b.0
}

/// Applies byte replacements, then optionally a truncation, to `bytes`.
fn mutate(
    mut bytes: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    for (at, value) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *value;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes
}

/// Arbitrary bytes, or arbitrary bytes after the first magic.
fn greeting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let tail = prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        tail.clone(),
        tail.prop_map(|t| Bytes::default().u64(NBDMAGIC).raw(&t).0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Without NBDMAGIC and IHAVEOPT (or the oldstyle magic), every entry point stops at the
    /// greeting: bad magic when 8 bytes came, closed when fewer.
    #[test]
    fn anything_but_a_greeting_is_bad_magic_or_closed(bytes in greeting_bytes()) {
        let second = bytes.get(8..16).map(be64);
        prop_assume!(second != Some(IHAVEOPT) && second != Some(OLDSTYLE_MAGIC));
        let first_bad = bytes.get(..8).map(be64).filter(|&m| m != NBDMAGIC);
        let want = match (first_bad, second) {
            (Some(found), _) | (None, Some(found)) => Some(found),
            (None, None) => None,
        };
        let results = [
            proto::negotiate(&mut replay(&bytes), "root").map(drop),
            proto::list(&mut replay(&bytes)).map(drop),
            proto::info(&mut replay(&bytes), "root").map(drop),
        ];
        for r in results {
            match (r, want) {
                (Err(HandshakeError::BadMagic { step, found }), Some(want)) => {
                    prop_assert_eq!((step, found), ("reading the server greeting", want))
                }
                (Err(HandshakeError::Closed { step }), None) => {
                    prop_assert_eq!(step, "reading the server greeting")
                }
                (r, want) => prop_assert!(false, "{r:?} for magic {want:?}"),
            }
        }
    }

    /// NBD_OPT_GO against any sequence of well-framed replies ends as the protocol says: the
    /// export the last NBD_INFO_EXPORT before the ACK described, or the error the replies call
    /// for.
    #[test]
    fn go_yields_the_export_the_server_described_or_a_typed_error(
        replies in prop::collection::vec(go_reply(), 0..8),
    ) {
        let want = go_outcome(&replies);
        let got = match proto::negotiate(&mut replay(&go_bytes(&replies)), "root") {
            Ok(e) => {
                prop_assert_eq!(e.style, Style::FixedNewstyle);
                GoOutcome::Export(e.size, e.flags, e.block_sizes)
            }
            Err(HandshakeError::Closed { .. }) => GoOutcome::Closed,
            Err(HandshakeError::BadInfo { info, .. }) => GoOutcome::BadInfo(info),
            Err(HandshakeError::NoExportInfo { .. }) => GoOutcome::NoExportInfo,
            Err(HandshakeError::BadBlockSizes { .. } | HandshakeError::BlockSizeUnsupported { .. }) => {
                GoOutcome::BadBlockSizes
            }
            Err(HandshakeError::UnknownExport { export, message }) => {
                prop_assert_eq!(export, "root");
                GoOutcome::UnknownExport(message)
            }
            Err(HandshakeError::TlsRequired { message }) => GoOutcome::TlsRequired(message),
            Err(HandshakeError::Refused { export, code, message }) => {
                prop_assert_eq!(export, "root");
                GoOutcome::Refused(code, message)
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        prop_assert_eq!(got, want);
    }

    /// Valid exchanges with a few bytes replaced or cut off: a typed error, or values the
    /// server sent.
    #[test]
    fn mutated_handshakes_fail_typed_or_report_what_was_sent(
        which in 0..4usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        check_handshake(&mutate(valid_handshakes()[which].clone(), &edits, cut))?;
    }

    /// Arbitrary reply bytes, the first reply's magic and cookie made right at random: every
    /// request comes to what the simple reply format says.
    #[test]
    fn transmission_replies_are_read_as_the_format_says(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        magic: bool,
        cookie: bool,
        error: bool,
    ) {
        let mut bytes = bytes;
        if bytes.len() >= 16 {
            if magic {
                bytes[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            }
            if cookie {
                bytes[8..16].copy_from_slice(&1u64.to_be_bytes());
            }
            if !error {
                bytes[4..8].fill(0);
            }
        }
        prop_assert_eq!(run_transmission(&bytes, None), transmission_outcome(&bytes, None));
    }

    /// Valid replies with a few bytes replaced or cut off, whatever the server's maximum
    /// request (which splits reads and writes): the same.
    #[test]
    fn mutated_transmission_replies_are_read_as_the_format_says(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        maximum in prop::sample::select(vec![512u32, 1024, 4096, u32::MAX]),
    ) {
        let sizes = Some(BlockSizes { minimum: 512, preferred: 4096, maximum });
        let bytes = mutate(valid_replies(sizes), &edits, cut);
        prop_assert_eq!(run_transmission(&bytes, sizes), transmission_outcome(&bytes, sizes));
    }
}
