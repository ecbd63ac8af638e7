//! The client side of the NBD handshake, over any `Read + Write`.
//!
//! Pure protocol logic: no sockets, no timeouts (the caller bounds every read with socket
//! timeouts). What it negotiates is always safe to hand to the kernel driver: simple replies
//! only, never structured replies or extended headers.

use std::io::{self, Read, Write};

use super::consts::*;

/// The largest option reply payload accepted. Real replies are a few dozen bytes (strings are
/// limited to 4096 by the spec); anything bigger is a broken or hostile server, and refusing it
/// keeps a reply from making the client allocate memory.
pub const MAX_REPLY_LEN: u32 = 16 * 1024;

/// Block size constraints a server announced with NBD_INFO_BLOCK_SIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

/// What the handshake established about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (TFLAG_*).
    pub flags: u16,
    /// Block size constraints, when the server sent them.
    pub block_sizes: Option<BlockSizes>,
    /// Which handshake the server spoke.
    pub style: Style,
}

impl Export {
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// The block size to give the kernel: the server's minimum, raised to 512 and kept within
    /// what the kernel driver accepts (512..=4096, a power of two). Not the preferred size:
    /// it becomes the device's logical block size, and a filesystem with smaller blocks (a
    /// small ext4 has 1 KiB blocks) could then not be mounted.
    pub fn kernel_block_size(&self) -> u32 {
        let wanted = self.block_sizes.map_or(512, |b| b.minimum);
        wanted.clamp(512, 4096).next_power_of_two().min(4096)
    }
}

/// The handshake variant the server used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Oldstyle,
    /// Newstyle without the fixed bit: only NBD_OPT_EXPORT_NAME may be used.
    Newstyle,
    FixedNewstyle,
}

/// An NBD_REP_ERR_* code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepError {
    Unsup,
    Policy,
    Invalid,
    Platform,
    TlsReqd,
    Unknown,
    Shutdown,
    BlockSizeReqd,
    TooBig,
    Other(u32),
}

impl RepError {
    fn from_wire(ty: u32) -> Self {
        match ty & !REP_FLAG_ERROR {
            1 => Self::Unsup,
            2 => Self::Policy,
            3 => Self::Invalid,
            4 => Self::Platform,
            5 => Self::TlsReqd,
            6 => Self::Unknown,
            7 => Self::Shutdown,
            8 => Self::BlockSizeReqd,
            9 => Self::TooBig,
            n => Self::Other(n),
        }
    }
}

/// A failed handshake. Callers add the server address.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("server closed the connection while {step}")]
    Closed { step: &'static str },
    #[error("timed out while {step}")]
    TimedOut { step: &'static str },
    #[error("i/o error while {step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
    #[error("not an NBD server: bad magic {found:#018x} while {step}")]
    BadMagic { step: &'static str, found: u64 },
    #[error("export \"{export}\" not found: {message}")]
    UnknownExport { export: String, message: String },
    #[error("server requires TLS, which nbdroot does not speak: {message}")]
    TlsRequired { message: String },
    #[error("server refused export \"{export}\" ({code:?}): {message}")]
    Refused {
        export: String,
        code: RepError,
        message: String,
    },
    #[error("option reply of {len} bytes is larger than the {MAX_REPLY_LEN}-byte limit")]
    ReplyTooLong { len: u32 },
    #[error("option reply is for option {got}, expected {expected}")]
    WrongOption { expected: u32, got: u32 },
    #[error("malformed NBD_INFO reply (type {info}, {len} bytes)")]
    BadInfo { info: u16, len: usize },
    #[error("server finished NBD_OPT_GO without sending the export size")]
    NoExportInfo,
    #[error(
        "server speaks the oldstyle handshake, which has no export names (asked for \"{export}\")"
    )]
    OldstyleNamed { export: String },
    #[error("server closed the connection after NBD_OPT_EXPORT_NAME: export \"{export}\" probably does not exist")]
    ExportNameClosed { export: String },
}

type Result<T> = std::result::Result<T, HandshakeError>;

fn io_err(step: &'static str, e: io::Error) -> HandshakeError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed { step },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut { step },
        _ => HandshakeError::Io { step, source: e },
    }
}

fn read_array<const N: usize>(s: &mut impl Read, step: &'static str) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    s.read_exact(&mut buf).map_err(|e| io_err(step, e))?;
    Ok(buf)
}

fn read_u16(s: &mut impl Read, step: &'static str) -> Result<u16> {
    read_array::<2>(s, step).map(u16::from_be_bytes)
}

fn read_u32(s: &mut impl Read, step: &'static str) -> Result<u32> {
    read_array::<4>(s, step).map(u32::from_be_bytes)
}

fn read_u64(s: &mut impl Read, step: &'static str) -> Result<u64> {
    read_array::<8>(s, step).map(u64::from_be_bytes)
}

/// Reads and discards `len` bytes without allocating.
fn skip(s: &mut impl Read, len: u64, step: &'static str) -> Result<()> {
    let copied =
        io::copy(&mut s.by_ref().take(len), &mut io::sink()).map_err(|e| io_err(step, e))?;
    if copied < len {
        return Err(HandshakeError::Closed { step });
    }
    Ok(())
}

/// The server greeting, up to the point where the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Greeting {
    Oldstyle { size: u64, flags: u16 },
    Newstyle { handshake_flags: u16 },
}

fn read_greeting(s: &mut impl Read) -> Result<Greeting> {
    const STEP: &str = "reading the server greeting";
    let magic = read_u64(s, STEP)?;
    if magic != NBDMAGIC {
        return Err(HandshakeError::BadMagic {
            step: STEP,
            found: magic,
        });
    }
    match read_u64(s, STEP)? {
        IHAVEOPT => Ok(Greeting::Newstyle {
            handshake_flags: read_u16(s, STEP)?,
        }),
        OLDSTYLE_MAGIC => {
            let size = read_u64(s, STEP)?;
            // 32 bits of flags: the high 16 are reserved, the low 16 are transmission flags.
            let flags = read_u32(s, STEP)? as u16;
            skip(s, 124, STEP)?;
            Ok(Greeting::Oldstyle { size, flags })
        }
        other => Err(HandshakeError::BadMagic {
            step: STEP,
            found: other,
        }),
    }
}

fn send_option(s: &mut impl Write, option: u32, data: &[u8]) -> Result<()> {
    const STEP: &str = "sending an option";
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).map_err(|e| io_err(STEP, e))?;
    s.flush().map_err(|e| io_err(STEP, e))
}

/// One option reply: its type and payload (at most MAX_REPLY_LEN bytes).
struct OptionReply {
    ty: u32,
    data: Vec<u8>,
}

fn read_option_reply(s: &mut impl Read, option: u32) -> Result<OptionReply> {
    const STEP: &str = "reading an option reply";
    let magic = read_u64(s, STEP)?;
    if magic != OPTION_REPLY_MAGIC {
        return Err(HandshakeError::BadMagic {
            step: STEP,
            found: magic,
        });
    }
    let got = read_u32(s, STEP)?;
    let ty = read_u32(s, STEP)?;
    let len = read_u32(s, STEP)?;
    if got != option {
        return Err(HandshakeError::WrongOption {
            expected: option,
            got,
        });
    }
    if len > MAX_REPLY_LEN {
        return Err(HandshakeError::ReplyTooLong { len });
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).map_err(|e| io_err(STEP, e))?;
    Ok(OptionReply { ty, data })
}

fn rep_error(export: &str, ty: u32, data: &[u8]) -> HandshakeError {
    let message = String::from_utf8_lossy(data).trim().to_string();
    let message = if message.is_empty() {
        "(no message from the server)".to_string()
    } else {
        message
    };
    match RepError::from_wire(ty) {
        RepError::Unknown => HandshakeError::UnknownExport {
            export: export.to_string(),
            message,
        },
        RepError::TlsReqd => HandshakeError::TlsRequired { message },
        code => HandshakeError::Refused {
            export: export.to_string(),
            code,
            message,
        },
    }
}

/// Negotiates `export` (empty: the server's default export) and leaves the stream at the start
/// of the transmission phase.
pub fn negotiate<S: Read + Write>(s: &mut S, export: &str) -> Result<Export> {
    let handshake_flags = match read_greeting(s)? {
        Greeting::Oldstyle { size, flags } => {
            if !export.is_empty() {
                return Err(HandshakeError::OldstyleNamed {
                    export: export.to_string(),
                });
            }
            return Ok(Export {
                size,
                flags,
                block_sizes: None,
                style: Style::Oldstyle,
            });
        }
        Greeting::Newstyle { handshake_flags } => handshake_flags,
    };
    let fixed = handshake_flags & FLAG_FIXED_NEWSTYLE != 0;
    let no_zeroes = handshake_flags & FLAG_NO_ZEROES != 0;
    let mut client_flags = 0u32;
    if fixed {
        client_flags |= FLAG_C_FIXED_NEWSTYLE;
    }
    if no_zeroes {
        client_flags |= FLAG_C_NO_ZEROES;
    }
    s.write_all(&client_flags.to_be_bytes())
        .map_err(|e| io_err("sending the client flags", e))?;

    if fixed {
        match go(s, export)? {
            Some(export) => return Ok(export),
            None => log::debug!("server does not support NBD_OPT_GO, using NBD_OPT_EXPORT_NAME"),
        }
    }
    export_name(s, export, no_zeroes, fixed)
}

/// NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE. `None` when the server does not know GO.
fn go<S: Read + Write>(s: &mut S, export: &str) -> Result<Option<Export>> {
    let mut data = Vec::with_capacity(8 + export.len());
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &data)?;

    let mut size_flags = None;
    let mut block_sizes = None;
    loop {
        let reply = read_option_reply(s, OPT_GO)?;
        match reply.ty {
            REP_ACK => break,
            REP_INFO => match parse_info(&reply.data)? {
                Info::Export { size, flags } => size_flags = Some((size, flags)),
                Info::BlockSizes(b) => block_sizes = Some(b),
                Info::Other => {}
            },
            ty if ty & REP_FLAG_ERROR != 0 => {
                if RepError::from_wire(ty) == RepError::Unsup {
                    return Ok(None);
                }
                return Err(rep_error(export, ty, &reply.data));
            }
            // Unknown non-error replies may be ignored (spec: "the client MUST ignore").
            _ => {}
        }
    }
    let (size, flags) = size_flags.ok_or(HandshakeError::NoExportInfo)?;
    Ok(Some(Export {
        size,
        flags,
        block_sizes,
        style: Style::FixedNewstyle,
    }))
}

enum Info {
    Export { size: u64, flags: u16 },
    BlockSizes(BlockSizes),
    Other,
}

fn parse_info(data: &[u8]) -> Result<Info> {
    let bad = |info| HandshakeError::BadInfo {
        info,
        len: data.len(),
    };
    let Some(ty) = data.get(..2) else {
        return Err(bad(u16::MAX));
    };
    let ty = u16::from_be_bytes([ty[0], ty[1]]);
    let be32 = |at: usize| u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
    match ty {
        INFO_EXPORT => {
            if data.len() != 12 {
                return Err(bad(ty));
            }
            let size = u64::from_be_bytes(data[2..10].try_into().unwrap());
            let flags = u16::from_be_bytes([data[10], data[11]]);
            Ok(Info::Export { size, flags })
        }
        INFO_BLOCK_SIZE => {
            if data.len() != 14 {
                return Err(bad(ty));
            }
            Ok(Info::BlockSizes(BlockSizes {
                minimum: be32(2),
                preferred: be32(6),
                maximum: be32(10),
            }))
        }
        _ => Ok(Info::Other),
    }
}

/// NBD_OPT_EXPORT_NAME: the old way, which ends negotiation without an error path.
fn export_name<S: Read + Write>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
    fixed: bool,
) -> Result<Export> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
    const STEP: &str = "reading the export size";
    let size = read_u64(s, STEP).map_err(|e| match e {
        HandshakeError::Closed { .. } => HandshakeError::ExportNameClosed {
            export: export.to_string(),
        },
        e => e,
    })?;
    let flags = read_u16(s, STEP)?;
    if !no_zeroes {
        skip(s, 124, STEP)?;
    }
    Ok(Export {
        size,
        flags,
        block_sizes: None,
        style: if fixed {
            Style::FixedNewstyle
        } else {
            Style::Newstyle
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testserver::Script;

    const SIZE: u64 = 64 << 20;
    const FLAGS: u16 = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;

    fn newstyle(hflags: u16) -> Script {
        Script::new().u64(NBDMAGIC).u64(IHAVEOPT).u16(hflags)
    }

    fn info_export(s: Script) -> Script {
        let mut data = INFO_EXPORT.to_be_bytes().to_vec();
        data.extend_from_slice(&SIZE.to_be_bytes());
        data.extend_from_slice(&FLAGS.to_be_bytes());
        s.reply(OPT_GO, REP_INFO, &data)
    }

    #[test]
    fn go_with_block_size() {
        let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [512u32, 4096, 32 << 20] {
            bs.extend_from_slice(&v.to_be_bytes());
        }
        let script = info_export(newstyle(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
            .reply(OPT_GO, REP_INFO, &bs)
            .reply(OPT_GO, 99, b"ignored")
            .reply(OPT_GO, REP_ACK, b"");
        let mut conn = script.into_conn();
        let export = negotiate(&mut conn, "root").unwrap();
        assert_eq!(export.size, SIZE);
        assert_eq!(export.flags, FLAGS);
        assert_eq!(export.kernel_block_size(), 512);
        assert_eq!(export.style, Style::FixedNewstyle);
        // Client flags, then IHAVEOPT GO with the name and one info request.
        let w = &conn.written;
        assert_eq!(
            &w[..4],
            &(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()
        );
        assert_eq!(&w[4..12], &IHAVEOPT.to_be_bytes());
        assert_eq!(&w[12..16], &OPT_GO.to_be_bytes());
        assert_eq!(&w[16..20], &(4u32 + 4 + 2 + 2).to_be_bytes());
        assert_eq!(&w[24..28], b"root");
        assert_eq!(&w[28..32], &[0, 1, 0, 3]);
    }

    #[test]
    fn unknown_export_carries_server_text() {
        let script = newstyle(FLAG_FIXED_NEWSTYLE).reply(
            OPT_GO,
            REP_FLAG_ERROR | 6,
            b"export 'x' not present",
        );
        let err = negotiate(&mut script.into_conn(), "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "export \"x\" not found: export 'x' not present"
        );
    }

    #[test]
    fn every_rep_error_is_typed() {
        for code in 1..=10u32 {
            if code == 1 {
                continue; // UNSUP falls back, tested below.
            }
            let script = newstyle(FLAG_FIXED_NEWSTYLE).reply(OPT_GO, REP_FLAG_ERROR | code, b"why");
            let err = negotiate(&mut script.into_conn(), "e").unwrap_err();
            let text = err.to_string();
            assert!(text.contains("why"), "{code}: {text}");
        }
        let script = newstyle(FLAG_FIXED_NEWSTYLE).reply(OPT_GO, REP_FLAG_ERROR | 5, b"");
        let err = negotiate(&mut script.into_conn(), "e").unwrap_err();
        assert!(matches!(err, HandshakeError::TlsRequired { .. }), "{err}");
    }

    #[test]
    fn go_unsupported_falls_back_to_export_name() {
        let script = newstyle(FLAG_FIXED_NEWSTYLE)
            .reply(OPT_GO, REP_FLAG_ERROR | 1, b"")
            .u64(SIZE)
            .u16(FLAGS)
            .zeroes(124);
        let mut conn = script.into_conn();
        let export = negotiate(&mut conn, "x").unwrap();
        assert_eq!((export.size, export.flags), (SIZE, FLAGS));
        assert!(conn.fully_read());
    }

    #[test]
    fn plain_newstyle_uses_export_name_and_no_zeroes() {
        let script = newstyle(FLAG_NO_ZEROES).u64(SIZE).u16(FLAGS);
        let mut conn = script.into_conn();
        let export = negotiate(&mut conn, "").unwrap();
        assert_eq!(export.style, Style::Newstyle);
        assert_eq!(&conn.written[..4], &FLAG_C_NO_ZEROES.to_be_bytes());
        assert_eq!(&conn.written[12..16], &OPT_EXPORT_NAME.to_be_bytes());
    }

    #[test]
    fn oldstyle() {
        let script = Script::new()
            .u64(NBDMAGIC)
            .u64(OLDSTYLE_MAGIC)
            .u64(SIZE)
            .u32(FLAGS as u32)
            .zeroes(124);
        let export = negotiate(&mut script.clone().into_conn(), "").unwrap();
        assert_eq!((export.size, export.style), (SIZE, Style::Oldstyle));
        let err = negotiate(&mut script.into_conn(), "named").unwrap_err();
        assert!(matches!(err, HandshakeError::OldstyleNamed { .. }));
    }

    #[test]
    fn export_name_close_names_the_export() {
        let script = newstyle(0);
        let err = negotiate(&mut script.into_conn(), "nope").unwrap_err();
        assert!(
            err.to_string().contains("\"nope\" probably does not exist"),
            "{err}"
        );
    }

    #[test]
    fn hostile_replies() {
        // Wrong magic.
        let err = negotiate(&mut Script::new().u64(0x1234).into_conn(), "").unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::BadMagic { found: 0x1234, .. }
        ));
        // A reply that claims 4 GiB is refused before any allocation.
        let script = newstyle(FLAG_FIXED_NEWSTYLE)
            .u64(OPTION_REPLY_MAGIC)
            .u32(OPT_GO)
            .u32(REP_INFO)
            .u32(u32::MAX);
        let err = negotiate(&mut script.into_conn(), "").unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::ReplyTooLong { len: u32::MAX }
        ));
        // ACK without the export size.
        let script = newstyle(FLAG_FIXED_NEWSTYLE).reply(OPT_GO, REP_ACK, b"");
        let err = negotiate(&mut script.into_conn(), "").unwrap_err();
        assert!(matches!(err, HandshakeError::NoExportInfo));
        // A short NBD_INFO_EXPORT.
        let script = newstyle(FLAG_FIXED_NEWSTYLE).reply(OPT_GO, REP_INFO, &[0, 0, 1]);
        let err = negotiate(&mut script.into_conn(), "").unwrap_err();
        assert!(matches!(err, HandshakeError::BadInfo { info: 0, len: 3 }));
    }

    #[test]
    fn truncation_at_every_byte_is_a_clean_error() {
        let full = info_export(newstyle(FLAG_FIXED_NEWSTYLE)).reply(OPT_GO, REP_ACK, b"");
        let bytes = full.bytes();
        for cut in 0..bytes.len() {
            let script = Script::from_bytes(bytes[..cut].to_vec());
            let err = negotiate(&mut script.into_conn(), "").unwrap_err();
            assert!(
                matches!(err, HandshakeError::Closed { .. }),
                "cut at {cut}: {err:?}"
            );
        }
        negotiate(&mut Script::from_bytes(bytes).into_conn(), "").unwrap();
    }

    #[test]
    fn kernel_block_size_is_clamped() {
        let mut e = Export {
            size: 0,
            flags: 0,
            block_sizes: None,
            style: Style::FixedNewstyle,
        };
        assert_eq!(e.kernel_block_size(), 512);
        for (min, pref, want) in [
            (1, 4096, 512),
            (512, 65536, 512),
            (4096, 4096, 4096),
            (8192, 8192, 4096),
            (1000, 4096, 1024),
        ] {
            e.block_sizes = Some(BlockSizes {
                minimum: min,
                preferred: pref,
                maximum: 1 << 25,
            });
            assert_eq!(e.kernel_block_size(), want, "{min}/{pref}");
        }
    }
}
