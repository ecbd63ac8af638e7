//! The NBD handshake against a server that sends arbitrary bytes: `negotiate` (NBD_OPT_GO,
//! falling back to NBD_OPT_EXPORT_NAME), and the queries `list` (NBD_OPT_LIST) and `info`
//! (NBD_OPT_INFO). The input is everything the server sends, whatever the client says.
//!
//! Beyond "no panic": an in-memory stream can only end, so every failure is a protocol error
//! or a close, never an I/O error; what the client reports was sent by the server (the size
//! and flags are in its bytes, block sizes are valid); and the client says only what the
//! protocol lets it say to that server (flags it was offered, options the greeting allows,
//! nothing after the handshake ends).

#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use nbdroot::proto::consts::MAX_LIST_ENTRIES;
use nbdroot::proto::consts::*;
use nbdroot::proto::{self, Export, HandshakeError, Style};

fuzz_target!(|server: &[u8]| {
    // The default export (which an oldstyle server can give) and a named one.
    for export in ["", "root"] {
        run(server, export);
    }
});

fn run(server: &[u8], export: &str) {
    let mut s = Replay::new(server);
    match proto::negotiate(&mut s, export) {
        Ok(e) => check_export(server, &e),
        Err(e) => check_error(&e),
    }
    check_client(server, &s.written, Query::Negotiate, export);

    let mut s = Replay::new(server);
    match proto::list(&mut s) {
        // Every entry is a reply of at least 24 bytes (header and name length).
        Ok(entries) => {
            assert!(entries.len() <= MAX_LIST_ENTRIES && entries.len() * 24 <= server.len())
        }
        Err(e) => check_error(&e),
    }
    check_client(server, &s.written, Query::List, export);

    let mut s = Replay::new(server);
    match proto::info(&mut s, export) {
        Ok(info) => {
            check_export(server, &info.export);
            if info.export.style != Style::FixedNewstyle {
                assert_eq!((info.name, info.description), (None, None));
            }
        }
        Err(e) => check_error(&e),
    }
    check_client(server, &s.written, Query::Info, export);

    // NBD_OPT_STARTTLS, then negotiation inside TLS on the rest of the bytes, as if they had
    // been decrypted. In plain text the client says only its flags and STARTTLS (and
    // NBD_OPT_ABORT when refused): never an option that could leak the export's name.
    let mut s = Replay::new(server);
    match proto::starttls(&mut s) {
        Ok(started) => {
            assert_eq!(s.written.len(), 4 + 16);
            let plain = s.written.len();
            match proto::negotiate_in_tls(&mut s, started, export) {
                Ok(e) => {
                    if let Some(b) = e.block_sizes {
                        assert_eq!(b.validate(e.size).ok(), Some(b));
                    }
                }
                Err(e) => check_error(&e),
            }
            assert!(
                s.written[plain..].starts_with(&IHAVEOPT.to_be_bytes()) || s.written.len() == plain
            );
        }
        Err(e) => {
            check_error(&e);
            assert!(
                s.written.len() <= 4 + 16 + 16,
                "{} bytes in plain text",
                s.written.len()
            );
        }
    }
}

/// A server that sends `input`, then closes; it records what the client writes.
struct Replay<'a> {
    input: &'a [u8],
    written: Vec<u8>,
}

impl<'a> Replay<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            written: Vec::new(),
        }
    }
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn check_error(e: &HandshakeError) {
    assert!(
        !matches!(
            e,
            HandshakeError::Io { .. } | HandshakeError::TimedOut { .. }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().is_empty());
}

/// The export's size and flags come from the server's bytes; its block sizes are valid.
fn check_export(server: &[u8], export: &Export) {
    match export.style {
        Style::Oldstyle => {
            assert_eq!(be64(&server[8..]), OLDSTYLE_MAGIC);
            assert_eq!(export.size, be64(&server[16..]));
            assert_eq!(export.flags, be32(&server[24..]) as u16);
        }
        Style::Newstyle | Style::FixedNewstyle => {
            // After NBD_OPT_EXPORT_NAME, or in NBD_INFO_EXPORT: size then flags.
            let mut field = export.size.to_be_bytes().to_vec();
            field.extend_from_slice(&export.flags.to_be_bytes());
            assert!(
                server.windows(10).any(|w| w == field.as_slice()),
                "size {} and flags {:#x} are not in the server's bytes",
                export.size,
                export.flags
            );
        }
    }
    if let Some(b) = export.block_sizes {
        assert_eq!(b.validate(export.size).ok(), Some(b));
        assert!(b.minimum <= 4096);
    }
    assert!([512, 1024, 2048, 4096].contains(&export.kernel_block_size()));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Query {
    Negotiate,
    List,
    Info,
}

/// What the client wrote is what the protocol lets it write to this server.
fn check_client(server: &[u8], written: &[u8], query: Query, export: &str) {
    let greeting = server.get(..18);
    let newstyle = greeting.filter(|g| be64(g) == NBDMAGIC && be64(&g[8..]) == IHAVEOPT);
    let Some(g) = newstyle else {
        // Nothing before a newstyle greeting; after an oldstyle one, `info` has its answer and
        // leaves with NBD_CMD_DISC.
        let oldstyle = server.len() >= 16 + 8 + 4 + 124 && be64(&server[8..]) == OLDSTYLE_MAGIC;
        match written {
            [] => {}
            disc if oldstyle && query == Query::Info => assert_disc(disc),
            w => panic!(
                "{query:?} wrote {} bytes to a server without a greeting",
                w.len()
            ),
        }
        return;
    };
    let offered = be16(&g[16..]);
    let fixed = offered & FLAG_FIXED_NEWSTYLE != 0;
    let mut flags = 0;
    if fixed {
        flags |= FLAG_C_FIXED_NEWSTYLE;
    }
    if offered & FLAG_NO_ZEROES != 0 {
        flags |= FLAG_C_NO_ZEROES;
    }
    assert_eq!(
        be32(written),
        flags,
        "client flags for server flags {offered:#x}"
    );

    let mut rest = &written[4..];
    let mut sent = Vec::new();
    while !rest.is_empty() {
        if sent.last() == Some(&OPT_EXPORT_NAME) {
            // Transmission: only `info` leaves it, at once.
            assert_eq!(
                query,
                Query::Info,
                "{query:?} wrote after NBD_OPT_EXPORT_NAME"
            );
            assert_disc(rest);
            break;
        }
        assert!(
            sent.last() != Some(&OPT_ABORT),
            "{query:?} wrote after NBD_OPT_ABORT"
        );
        assert!(rest.len() >= 16, "a partial option header");
        assert_eq!(be64(rest), IHAVEOPT);
        let option = be32(&rest[8..]);
        let len = be32(&rest[12..]) as usize;
        let data = &rest[16..16 + len];
        let allowed: &[u32] = match (query, fixed) {
            (_, false) => &[OPT_EXPORT_NAME],
            (Query::Negotiate, true) => &[OPT_GO, OPT_EXPORT_NAME, OPT_ABORT],
            (Query::List, true) => &[OPT_LIST, OPT_ABORT],
            (Query::Info, true) => &[OPT_INFO, OPT_EXPORT_NAME, OPT_ABORT],
        };
        assert!(allowed.contains(&option), "{query:?} sent option {option}");
        match option {
            OPT_EXPORT_NAME => assert_eq!(data, export.as_bytes()),
            OPT_GO | OPT_INFO => assert_eq!(&data[4..4 + export.len()], export.as_bytes()),
            _ => assert!(data.is_empty()),
        }
        sent.push(option);
        rest = &rest[16 + len..];
    }
    // One NBD_OPT_GO at most: its failure is final, or falls back to NBD_OPT_EXPORT_NAME.
    assert!(sent.iter().filter(|&&o| o == OPT_GO).count() <= 1);
}

fn assert_disc(bytes: &[u8]) {
    assert_eq!(bytes.len(), 28, "one request header");
    assert_eq!(be32(bytes), REQUEST_MAGIC);
    assert_eq!(be16(&bytes[6..]), CMD_DISC);
}
