//! Handshake queries that do not hand the connection on: [`list`] (NBD_OPT_LIST) and [`info`]
//! (NBD_OPT_INFO). Both leave politely, so the stream is finished when they return: with
//! NBD_OPT_ABORT while still haggling, or with NBD_CMD_DISC when only entering transmission
//! could answer the question.

use std::io::{Read, Write};

use super::consts::*;
use super::error::{HandshakeError, RepError, Result};
use super::export::{Export, Style};
use super::handshake::{exchange, export_name, oldstyle, ExportInfo};
use super::option::{
    abort, abort_quietly, read_option_reply, send_option, server_text, start, Start,
};
use super::starttls::TlsStarted;
use super::transmission::request_header;

/// One export an NBD_OPT_LIST answer named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub name: String,
    /// Free text for humans; empty when the server sent none.
    pub description: String,
}

/// Asks the server for its exports (NBD_OPT_LIST). Needs fixed newstyle: older handshakes
/// have no options besides NBD_OPT_EXPORT_NAME.
pub fn list<S: Read + Write>(s: &mut S) -> Result<Vec<ExportEntry>> {
    let started = start(s)?;
    list_after(s, started)
}

/// [`list`] inside the TLS session that [`starttls`](super::starttls) opened.
pub fn list_in_tls<S: Read + Write>(s: &mut S, tls: TlsStarted) -> Result<Vec<ExportEntry>> {
    list_after(s, tls.start())
}

fn list_after<S: Read + Write>(s: &mut S, started: Start) -> Result<Vec<ExportEntry>> {
    match started {
        Start::Newstyle { fixed: true, .. } => {}
        Start::Newstyle { fixed: false, .. } => return Err(no_options(Style::Newstyle)),
        Start::Oldstyle { .. } => return Err(no_options(Style::Oldstyle)),
    }
    send_option(s, OPT_LIST, &[])?;
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    loop {
        let reply = read_option_reply(s, OPT_LIST)?;
        match reply.ty {
            REP_ACK => break,
            REP_SERVER => {
                bytes += reply.data.len();
                if entries.len() == MAX_LIST_ENTRIES || bytes > MAX_LIST_BYTES {
                    return Err(HandshakeError::ListTooLong);
                }
                entries.push(parse_server(&reply.data)?);
            }
            ty if ty & REP_FLAG_ERROR != 0 => {
                let err = match RepError::from_wire(ty) {
                    RepError::TlsReqd => HandshakeError::TlsRequired {
                        message: server_text(&reply.data),
                    },
                    code => HandshakeError::OptionRefused {
                        option: "NBD_OPT_LIST",
                        code,
                        message: server_text(&reply.data),
                    },
                };
                abort_quietly(s);
                return Err(err);
            }
            // Unknown non-error replies must be ignored.
            _ => {}
        }
    }
    abort(s)?;
    Ok(entries)
}

fn no_options(style: Style) -> HandshakeError {
    HandshakeError::NoOptions {
        option: "NBD_OPT_LIST",
        style,
    }
}

/// NBD_REP_SERVER: u32 name length, name, then an optional description filling the rest.
fn parse_server(data: &[u8]) -> Result<ExportEntry> {
    let bad = |name_len| HandshakeError::BadServerEntry {
        name_len,
        len: data.len(),
    };
    let Some(len) = data.get(..4) else {
        return Err(bad(0));
    };
    let name_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let rest = &data[4..];
    if name_len as usize > rest.len() {
        return Err(bad(name_len));
    }
    let (name, description) = rest.split_at(name_len as usize);
    Ok(ExportEntry {
        name: String::from_utf8_lossy(name).into_owned(),
        description: String::from_utf8_lossy(description).into_owned(),
    })
}

/// Asks about `export` (empty: the default export) without using it: size, flags, block sizes,
/// and the name and description the server gives.
///
/// Where the server cannot answer NBD_OPT_INFO (not fixed newstyle, or NBD_REP_ERR_UNSUP), the
/// only way to learn size and flags is NBD_OPT_EXPORT_NAME, which enters transmission; the
/// client then leaves at once with NBD_CMD_DISC, having read and written no data. That is safe
/// for the export, and `name`, `description` and `block_sizes` are then `None`. An oldstyle
/// server describes its one export in the greeting, so the same applies there.
pub fn info<S: Read + Write>(s: &mut S, export: &str) -> Result<ExportInfo> {
    let started = start(s)?;
    info_after(s, started, export)
}

/// [`info`] inside the TLS session that [`starttls`](super::starttls) opened.
pub fn info_in_tls<S: Read + Write>(
    s: &mut S,
    tls: TlsStarted,
    export: &str,
) -> Result<ExportInfo> {
    info_after(s, tls.start(), export)
}

fn info_after<S: Read + Write>(s: &mut S, started: Start, export: &str) -> Result<ExportInfo> {
    let (fixed, no_zeroes) = match started {
        Start::Oldstyle { size, flags } => {
            let export = oldstyle(export, size, flags)?;
            soft_disconnect(s);
            return Ok(bare(export));
        }
        Start::Newstyle { fixed, no_zeroes } => (fixed, no_zeroes),
    };
    if fixed {
        if let Some(info) = opt_info(s, export)? {
            abort(s)?;
            return Ok(info);
        }
        log::debug!("server does not support NBD_OPT_INFO, using NBD_OPT_EXPORT_NAME");
    }
    let export = export_name(s, export, no_zeroes, fixed)?;
    soft_disconnect(s);
    Ok(bare(export))
}

fn bare(export: Export) -> ExportInfo {
    ExportInfo {
        export,
        name: None,
        description: None,
    }
}

/// NBD_OPT_INFO asking for NAME, DESCRIPTION and BLOCK_SIZE. `None` on NBD_REP_ERR_UNSUP.
fn opt_info<S: Read + Write>(s: &mut S, export: &str) -> Result<Option<ExportInfo>> {
    exchange(
        s,
        OPT_INFO,
        export,
        &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE],
    )
}

/// NBD_CMD_DISC after a handshake that entered transmission only to learn the export. Best
/// effort: the answer is already in hand, and a server that has gone ends the session anyway.
fn soft_disconnect<S: Write>(s: &mut S) {
    let _ = s
        .write_all(&request_header(0, CMD_DISC, 0, 0, 0))
        .and_then(|()| s.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testserver::Script;

    fn fixed() -> Script {
        Script::new()
            .u64(NBDMAGIC)
            .u64(IHAVEOPT)
            .u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    }

    /// The options the client sent, as (option, data), after the 4 bytes of client flags.
    fn options(written: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 4;
        while at + 16 <= written.len() && written[at..at + 8] == IHAVEOPT.to_be_bytes() {
            let opt = u32::from_be_bytes(written[at + 8..at + 12].try_into().unwrap());
            let len = u32::from_be_bytes(written[at + 12..at + 16].try_into().unwrap()) as usize;
            out.push((opt, written[at + 16..at + 16 + len].to_vec()));
            at += 16 + len;
        }
        out
    }

    #[test]
    fn list_collects_entries_then_aborts() {
        let script = fixed()
            .server(OPT_LIST, "root", "the root fs")
            .server(OPT_LIST, "swap", "")
            .reply(OPT_LIST, 77, b"unknown, ignored")
            .reply(OPT_LIST, REP_ACK, b"")
            .reply(OPT_ABORT, REP_ACK, b"");
        let mut conn = script.into_conn();
        let entries = list(&mut conn).unwrap();
        assert_eq!(
            entries,
            vec![
                ExportEntry {
                    name: "root".into(),
                    description: "the root fs".into()
                },
                ExportEntry {
                    name: "swap".into(),
                    description: String::new()
                },
            ]
        );
        assert!(conn.fully_read());
        let sent = options(&conn.written);
        assert_eq!(sent, vec![(OPT_LIST, vec![]), (OPT_ABORT, vec![])]);
    }

    #[test]
    fn list_accepts_a_close_instead_of_the_abort_ack() {
        let script = fixed()
            .server(OPT_LIST, "a", "")
            .reply(OPT_LIST, REP_ACK, b"");
        assert_eq!(list(&mut script.into_conn()).unwrap().len(), 1);
    }

    #[test]
    fn list_policy_error_carries_the_server_text() {
        let script = fixed().reply(OPT_LIST, REP_ERR_POLICY, b"listing is not allowed\n");
        let err = list(&mut script.into_conn()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server refused NBD_OPT_LIST (NBD_REP_ERR_POLICY): listing is not allowed"
        );
        let script = fixed().reply(OPT_LIST, REP_ERR_UNSUP, b"");
        let err = list(&mut script.into_conn()).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::OptionRefused {
                code: RepError::Unsup,
                ..
            }
        ));
    }

    #[test]
    fn list_needs_fixed_newstyle() {
        let script = Script::new().u64(NBDMAGIC).u64(IHAVEOPT).u16(0);
        let err = list(&mut script.into_conn()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server speaks the non-fixed newstyle handshake, which has no NBD_OPT_LIST"
        );
        let script = Script::new()
            .u64(NBDMAGIC)
            .u64(OLDSTYLE_MAGIC)
            .u64(1 << 20)
            .u32(1)
            .zeroes(124);
        let err = list(&mut script.into_conn()).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::NoOptions {
                style: Style::Oldstyle,
                ..
            }
        ));
    }

    #[test]
    fn list_rejects_a_name_longer_than_its_reply() {
        let mut data = 10u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"short");
        let script = fixed().reply(OPT_LIST, REP_SERVER, &data);
        let err = list(&mut script.into_conn()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed NBD_REP_SERVER reply: name length 10 in a 9-byte reply"
        );
        let script = fixed().reply(OPT_LIST, REP_SERVER, &[0, 0]);
        let err = list(&mut script.into_conn()).unwrap_err();
        assert!(matches!(err, HandshakeError::BadServerEntry { len: 2, .. }));
    }

    #[test]
    fn list_is_bounded() {
        let mut script = fixed();
        for i in 0..=MAX_LIST_ENTRIES {
            script = script.server(OPT_LIST, &format!("e{i}"), "");
        }
        let err = list(&mut script.into_conn()).unwrap_err();
        assert!(matches!(err, HandshakeError::ListTooLong), "{err}");
        // Fewer, larger entries hit the byte bound instead.
        let big = "d".repeat(8000);
        let mut script = fixed();
        for i in 0..200 {
            script = script.server(OPT_LIST, &format!("e{i}"), &big);
        }
        let err = list(&mut script.into_conn()).unwrap_err();
        assert!(matches!(err, HandshakeError::ListTooLong), "{err}");
    }

    fn info_replies(s: Script, min: u32) -> Script {
        s.info_export(OPT_INFO, 1 << 30, TFLAG_HAS_FLAGS | TFLAG_READ_ONLY)
            .info_string(OPT_INFO, INFO_NAME, "canonical")
            .info_string(OPT_INFO, INFO_DESCRIPTION, "a test disk")
            .info_block_size(OPT_INFO, min, min.max(4096), 1 << 25)
            .reply(OPT_INFO, REP_ACK, b"")
    }

    #[test]
    fn info_reports_everything_and_aborts() {
        let script = info_replies(fixed(), 512).reply(OPT_ABORT, REP_ACK, b"");
        let mut conn = script.into_conn();
        let got = info(&mut conn, "disk").unwrap();
        assert_eq!(got.export.size, 1 << 30);
        assert!(got.export.read_only());
        assert_eq!(got.name.as_deref(), Some("canonical"));
        assert_eq!(got.description.as_deref(), Some("a test disk"));
        assert_eq!(got.export.block_sizes.unwrap().minimum, 512);
        assert!(conn.fully_read());
        let sent = options(&conn.written);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, OPT_INFO);
        // Name length, name, three requests: NAME, DESCRIPTION, BLOCK_SIZE.
        assert_eq!(
            sent[0].1,
            [&[0, 0, 0, 4][..], b"disk", &[0, 3, 0, 1, 0, 2, 0, 3]].concat()
        );
        assert_eq!(sent[1], (OPT_ABORT, vec![]));
    }

    #[test]
    fn info_refuses_a_minimum_block_size_the_kernel_cannot_obey() {
        let script = info_replies(fixed(), 8192);
        let err = info(&mut script.into_conn(), "").unwrap_err();
        assert!(
            matches!(err, HandshakeError::BlockSizeUnsupported { minimum: 8192 }),
            "{err}"
        );
    }

    #[test]
    fn info_unknown_export() {
        let script = fixed().reply(OPT_INFO, REP_ERR_UNKNOWN, b"no such export");
        let err = info(&mut script.into_conn(), "x").unwrap_err();
        assert_eq!(err.to_string(), "export \"x\" not found: no such export");
    }

    #[test]
    fn info_unsupported_falls_back_to_export_name_then_disconnects() {
        let script = fixed()
            .reply(OPT_INFO, REP_ERR_UNSUP, b"")
            .u64(4096)
            .u16(TFLAG_HAS_FLAGS);
        let mut conn = script.into_conn();
        let got = info(&mut conn, "x").unwrap();
        assert_eq!(
            (got.export.size, got.name, got.export.block_sizes),
            (4096, None, None)
        );
        let sent = options(&conn.written);
        assert_eq!(sent[1], (OPT_EXPORT_NAME, b"x".to_vec()));
        // The last 28 bytes are NBD_CMD_DISC.
        let disc = &conn.written[conn.written.len() - 28..];
        assert_eq!(disc, request_header(0, CMD_DISC, 0, 0, 0));
    }

    #[test]
    fn info_on_oldstyle_uses_the_greeting() {
        let script = Script::new()
            .u64(NBDMAGIC)
            .u64(OLDSTYLE_MAGIC)
            .u64(1 << 20)
            .u32(u32::from(TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH))
            .zeroes(124);
        let mut conn = script.clone().into_conn();
        let got = info(&mut conn, "").unwrap();
        assert_eq!(got.export.style, Style::Oldstyle);
        assert_eq!(got.export.flags, TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH);
        assert_eq!(conn.written, request_header(0, CMD_DISC, 0, 0, 0));
        let err = info(&mut script.into_conn(), "named").unwrap_err();
        assert!(matches!(err, HandshakeError::OldstyleNamed { .. }));
    }
}
