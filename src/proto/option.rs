//! Pieces of the handshake shared by NBD_OPT_GO, NBD_OPT_INFO and NBD_OPT_LIST: the greeting,
//! option requests and replies, NBD_INFO payloads and the polite NBD_OPT_ABORT.
//!
//! Every read is bounded by the caller's socket timeouts and every allocation by
//! `MAX_REPLY_LEN`, so a hostile server can neither hang nor balloon the client.

use std::io::{self, Read, Write};

use super::consts::*;
use super::error::{HandshakeError, RepError, Result};
use super::export::BlockSizes;

/// Maps an I/O error to the typed error the callers match on: a reset or a short read is the
/// server going away, not a local failure.
pub(super) fn io_err(step: &'static str, e: io::Error) -> HandshakeError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => HandshakeError::Closed { step },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut { step },
        _ => HandshakeError::Io { step, source: e },
    }
}

fn read_array<const N: usize>(s: &mut impl Read, step: &'static str) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    s.read_exact(&mut buf).map_err(|e| io_err(step, e))?;
    Ok(buf)
}

pub(super) fn read_u16(s: &mut impl Read, step: &'static str) -> Result<u16> {
    read_array::<2>(s, step).map(u16::from_be_bytes)
}

pub(super) fn read_u32(s: &mut impl Read, step: &'static str) -> Result<u32> {
    read_array::<4>(s, step).map(u32::from_be_bytes)
}

pub(super) fn read_u64(s: &mut impl Read, step: &'static str) -> Result<u64> {
    read_array::<8>(s, step).map(u64::from_be_bytes)
}

/// Reads and discards `len` bytes without allocating.
pub(super) fn skip(s: &mut impl Read, len: u64, step: &'static str) -> Result<()> {
    let copied =
        io::copy(&mut s.by_ref().take(len), &mut io::sink()).map_err(|e| io_err(step, e))?;
    if copied < len {
        return Err(HandshakeError::Closed { step });
    }
    Ok(())
}

/// Where the connection stands once the greeting is read and the client flags are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Oldstyle: the greeting carried the export, and transmission has begun.
    Oldstyle { size: u64, flags: u16 },
    /// Newstyle: options may follow (only NBD_OPT_EXPORT_NAME unless `fixed`).
    Newstyle { fixed: bool, no_zeroes: bool },
}

/// Reads the server greeting and, for newstyle, answers with the client flags (echoing only
/// what the server offered: a server must drop a client that sets unknown flags).
pub(super) fn start<S: Read + Write>(s: &mut S) -> Result<Start> {
    const STEP: &str = "reading the server greeting";
    let magic = read_u64(s, STEP)?;
    if magic != NBDMAGIC {
        return Err(HandshakeError::BadMagic {
            step: STEP,
            found: magic,
        });
    }
    let handshake_flags = match read_u64(s, STEP)? {
        IHAVEOPT => read_u16(s, STEP)?,
        OLDSTYLE_MAGIC => {
            let size = read_u64(s, STEP)?;
            // 32 bits of flags: the high 16 are reserved, the low 16 are transmission flags.
            let flags = read_u32(s, STEP)? as u16;
            skip(s, 124, STEP)?;
            return Ok(Start::Oldstyle { size, flags });
        }
        other => {
            return Err(HandshakeError::BadMagic {
                step: STEP,
                found: other,
            })
        }
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
    Ok(Start::Newstyle { fixed, no_zeroes })
}

fn sending_step(option: u32) -> &'static str {
    match option {
        OPT_EXPORT_NAME => "sending NBD_OPT_EXPORT_NAME",
        OPT_ABORT => "sending NBD_OPT_ABORT",
        OPT_LIST => "sending NBD_OPT_LIST",
        OPT_INFO => "sending NBD_OPT_INFO",
        OPT_GO => "sending NBD_OPT_GO",
        OPT_STARTTLS => "sending NBD_OPT_STARTTLS",
        _ => "sending an option",
    }
}

fn reply_step(option: u32) -> &'static str {
    match option {
        OPT_ABORT => "reading the reply to NBD_OPT_ABORT",
        OPT_LIST => "reading the reply to NBD_OPT_LIST",
        OPT_INFO => "reading the reply to NBD_OPT_INFO",
        OPT_GO => "reading the reply to NBD_OPT_GO",
        OPT_STARTTLS => "reading the reply to NBD_OPT_STARTTLS",
        _ => "reading an option reply",
    }
}

pub(super) fn send_option(s: &mut impl Write, option: u32, data: &[u8]) -> Result<()> {
    let step = sending_step(option);
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).map_err(|e| io_err(step, e))?;
    s.flush().map_err(|e| io_err(step, e))
}

/// One option reply: its type and payload (at most MAX_REPLY_LEN bytes).
pub(super) struct OptionReply {
    pub ty: u32,
    pub data: Vec<u8>,
}

pub(super) fn read_option_reply(s: &mut impl Read, option: u32) -> Result<OptionReply> {
    let step = reply_step(option);
    let magic = read_u64(s, step)?;
    if magic != OPTION_REPLY_MAGIC {
        return Err(HandshakeError::BadMagic { step, found: magic });
    }
    let got = read_u32(s, step)?;
    let ty = read_u32(s, step)?;
    let len = read_u32(s, step)?;
    if got != option {
        return Err(HandshakeError::WrongOption {
            expected: option,
            got,
        });
    }
    // Checked before allocating: the length is the server's word only.
    if len > MAX_REPLY_LEN {
        return Err(HandshakeError::ReplyTooLong { len });
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).map_err(|e| io_err(step, e))?;
    Ok(OptionReply { ty, data })
}

/// The server's message in an error reply, trimmed, or a placeholder when it sent none.
pub(super) fn server_text(data: &[u8]) -> String {
    let message = String::from_utf8_lossy(data).trim().to_string();
    if message.is_empty() {
        "(no message from the server)".to_string()
    } else {
        message
    }
}

/// An error reply to NBD_OPT_GO or NBD_OPT_INFO for `export`.
pub(super) fn export_error(export: &str, ty: u32, data: &[u8]) -> HandshakeError {
    let message = server_text(data);
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

/// The payload of NBD_OPT_GO and NBD_OPT_INFO: the export name and the NBD_INFO_* requested.
pub(super) fn info_request(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut data = Vec::with_capacity(6 + export.len() + 2 * infos.len());
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for info in infos {
        data.extend_from_slice(&info.to_be_bytes());
    }
    data
}

/// One NBD_REP_INFO payload.
pub(super) enum Info {
    Export {
        size: u64,
        flags: u16,
    },
    Name(String),
    Description(String),
    BlockSizes(BlockSizes),
    /// An information type this client does not know: the spec says to ignore it.
    Other,
}

pub(super) fn parse_info(data: &[u8]) -> Result<Info> {
    let bad = |info| HandshakeError::BadInfo {
        info,
        len: data.len(),
    };
    let Some(ty) = data.get(..2) else {
        return Err(bad(u16::MAX));
    };
    let ty = u16::from_be_bytes([ty[0], ty[1]]);
    let be32 = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    match ty {
        INFO_EXPORT => {
            if data.len() != 12 {
                return Err(bad(ty));
            }
            let size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
            let flags = u16::from_be_bytes([data[10], data[11]]);
            Ok(Info::Export { size, flags })
        }
        INFO_NAME => Ok(Info::Name(String::from_utf8_lossy(&data[2..]).into_owned())),
        INFO_DESCRIPTION => Ok(Info::Description(
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
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

/// Leaves after an error reply: the server is still haggling, and an NBD_OPT_ABORT lets it
/// end the session cleanly (nbd-server run with `-d` exits altogether when a client just
/// drops the connection mid-negotiation). Nothing is awaited: the error is what matters, and
/// the spec lets a client close without reading the ACK.
pub(super) fn abort_quietly<S: Write>(s: &mut S) {
    let _ = send_option(s, OPT_ABORT, &[]);
}

/// Ends the handshake with NBD_OPT_ABORT once the answer is in hand. The server should ACK,
/// but older servers just close (the spec asks clients to accept both), so a close at any
/// point counts as success.
pub(super) fn abort<S: Read + Write>(s: &mut S) -> Result<()> {
    match send_option(s, OPT_ABORT, &[]) {
        Err(HandshakeError::Closed { .. }) => return Ok(()),
        other => other?,
    }
    match read_option_reply(s, OPT_ABORT) {
        Ok(reply) if reply.ty == REP_ACK => Ok(()),
        Ok(reply) => Err(HandshakeError::UnexpectedReply {
            option: "NBD_OPT_ABORT",
            ty: reply.ty,
        }),
        Err(HandshakeError::Closed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
