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
// Property tests: arbitrary and mutated bytes

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

/// Checks what every handshake entry point must guarantee on any input: an in-memory stream
/// can only end, so the only failures are typed protocol errors or a close, never `Io`.
fn check_handshake(bytes: &[u8]) {
    match proto::negotiate(&mut replay(bytes), "root") {
        Ok(export) => {
            if let Some(b) = export.block_sizes {
                assert_valid(b);
            }
            assert!((512..=4096).contains(&export.kernel_block_size()));
        }
        Err(e) => assert_typed(&e),
    }
    match proto::list(&mut replay(bytes)) {
        Ok(entries) => assert!(entries.len() <= MAX_LIST_ENTRIES),
        Err(e) => assert_typed(&e),
    }
    match proto::info(&mut replay(bytes), "root") {
        Ok(info) => {
            if let Some(b) = info.export.block_sizes {
                assert_valid(b);
            }
        }
        Err(e) => assert_typed(&e),
    }
}

fn assert_valid(b: BlockSizes) {
    assert!(b.minimum.is_power_of_two() && b.minimum <= 4096, "{b:?}");
    assert!(b.preferred >= b.minimum && b.maximum >= b.minimum, "{b:?}");
}

fn assert_typed(e: &HandshakeError) {
    assert!(!matches!(e, HandshakeError::Io { .. }), "{e:?}");
    assert!(!e.to_string().is_empty());
}

/// Runs every transmission command against `bytes` as the server's replies.
fn check_transmission(bytes: &[u8], block_sizes: Option<BlockSizes>) {
    let export = Export {
        size: SIZE,
        flags: FLAGS | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES,
        block_sizes,
        style: Style::FixedNewstyle,
    };
    let mut c = Client::new(replay(bytes), export);
    let mut buf = vec![0u8; 3 * 512];
    let results = [
        c.read(0, &mut buf),
        c.write(512, &[1; 1024], true),
        c.flush(),
        c.trim(0, 512),
        c.write_zeroes(1024, 512, false),
    ];
    for r in results {
        if let Err(e) = r {
            assert!(!matches!(e, TransmissionError::Io { .. }), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
    let _ = c.disconnect();
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

fn valid_replies() -> Vec<u8> {
    let mut b = Bytes::default();
    for cookie in 1..=7 {
        b = b.simple_reply(0, cookie, if cookie <= 3 { &[7; 512] } else { &[] });
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_handshake(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_handshake(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_greeting(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = Bytes::greeting().0;
        bytes.extend_from_slice(&tail);
        check_handshake(&bytes);
    }

    #[test]
    fn mutated_handshakes_never_panic(
        which in 0..4usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let bytes = mutate(valid_handshakes()[which].clone(), &edits, cut);
        check_handshake(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_transmission_reader(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        check_transmission(&bytes, None);
    }

    #[test]
    fn mutated_replies_never_panic_the_transmission_reader(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        maximum in prop::sample::select(vec![512u32, 1024, 4096, u32::MAX]),
    ) {
        let bytes = mutate(valid_replies(), &edits, cut);
        let sizes = BlockSizes { minimum: 512, preferred: 4096, maximum };
        check_transmission(&bytes, Some(sizes));
    }
}
