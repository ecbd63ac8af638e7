//! The client side of the NBD handshake, over any `Read + Write`: [`negotiate`] to enter the
//! transmission phase. The queries [`list`](super::list) and [`info`](super::info) live in
//! `query.rs`; the pieces they share with this file in `option.rs`.
//!
//! Pure protocol logic: no sockets, no timeouts (the caller bounds every read with socket
//! timeouts). What it negotiates is always safe to hand to the kernel driver: simple replies
//! only, never structured replies or extended headers.

use std::io::{Read, Write};

use super::consts::*;
use super::error::{HandshakeError, Result};
use super::export::{BlockSizes, Export, Style};
use super::option::{
    abort_quietly, export_error, info_request, parse_info, read_option_reply, read_u16, read_u64,
    send_option, skip, start, Info, Start,
};
use super::starttls::TlsStarted;

impl BlockSizes {
    /// Checks the announcement against the spec's rules ("block size constraints" in
    /// doc/proto.md) for an export of `size` bytes, then against what the kernel can obey.
    /// Having asked for them, the client must honour them, so nonsense is an error rather
    /// than something to guess around.
    pub fn validate(self, size: u64) -> Result<Self> {
        let Self {
            minimum,
            preferred,
            maximum,
        } = self;
        let bad = |reason| {
            Err(HandshakeError::BadBlockSizes {
                minimum,
                preferred,
                maximum,
                reason,
            })
        };
        if !minimum.is_power_of_two() || minimum > 64 * 1024 {
            return bad("the minimum must be a power of two no larger than 64 KiB");
        }
        if !preferred.is_power_of_two() || preferred < minimum {
            return bad("the preferred size must be a power of two no smaller than the minimum");
        }
        if maximum != u32::MAX && maximum % minimum != 0 {
            return bad("the maximum must be a multiple of the minimum (or 0xffffffff)");
        }
        if maximum < minimum {
            return bad("the maximum is smaller than the minimum");
        }
        // The maximum may be below the preferred size only for an export smaller than that.
        if u64::from(maximum) < u64::from(preferred).min(size) {
            return bad("the maximum is smaller than both the preferred size and the export");
        }
        if minimum > KERNEL_MAX_BLOCK_SIZE {
            return Err(HandshakeError::BlockSizeUnsupported { minimum });
        }
        Ok(self)
    }
}

/// Negotiates `export` (empty: the server's default export) and leaves the stream at the start
/// of the transmission phase.
pub fn negotiate<S: Read + Write>(s: &mut S, export: &str) -> Result<Export> {
    let started = start(s)?;
    negotiate_after(s, started, export)
}

/// [`negotiate`] inside the TLS session that [`starttls`](super::starttls) opened: the
/// greeting is behind, and every option is asked again (the server keeps no state from
/// before STARTTLS).
pub fn negotiate_in_tls<S: Read + Write>(
    s: &mut S,
    tls: TlsStarted,
    export: &str,
) -> Result<Export> {
    negotiate_after(s, tls.start(), export)
}

fn negotiate_after<S: Read + Write>(s: &mut S, started: Start, export: &str) -> Result<Export> {
    let (fixed, no_zeroes) = match started {
        Start::Oldstyle { size, flags } => return oldstyle(export, size, flags),
        Start::Newstyle { fixed, no_zeroes } => (fixed, no_zeroes),
    };
    if fixed {
        match go(s, export)? {
            Some(export) => return Ok(export),
            None => log::debug!("server does not support NBD_OPT_GO, using NBD_OPT_EXPORT_NAME"),
        }
    }
    export_name(s, export, no_zeroes, fixed)
}

/// The export an oldstyle greeting described; it has no name, so only the default matches.
pub(super) fn oldstyle(export: &str, size: u64, flags: u16) -> Result<Export> {
    if !export.is_empty() {
        return Err(HandshakeError::OldstyleNamed {
            export: export.to_string(),
        });
    }
    Ok(Export {
        size,
        flags,
        block_sizes: None,
        style: Style::Oldstyle,
    })
}

/// NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE. `None` when the server does not know GO.
fn go<S: Read + Write>(s: &mut S, export: &str) -> Result<Option<Export>> {
    Ok(exchange(s, OPT_GO, export, &[INFO_BLOCK_SIZE])?.map(|info| info.export))
}

/// NBD_OPT_EXPORT_NAME: the old way, which ends negotiation without an error path.
pub(super) fn export_name<S: Read + Write>(
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

/// What NBD_OPT_INFO told about an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub export: Export,
    /// The server's canonical name for the export (NBD_INFO_NAME), when it sent one.
    pub name: Option<String>,
    /// NBD_INFO_DESCRIPTION, when the server sent one.
    pub description: Option<String>,
}

/// Sends NBD_OPT_INFO or NBD_OPT_GO with the `wanted` information requests and collects the
/// replies up to the ACK. `None` on NBD_REP_ERR_UNSUP (the server does not know the option).
pub(super) fn exchange<S: Read + Write>(
    s: &mut S,
    option: u32,
    export: &str,
    wanted: &[u16],
) -> Result<Option<ExportInfo>> {
    send_option(s, option, &info_request(export, wanted))?;
    let (mut size_flags, mut block_sizes, mut name, mut description) = (None, None, None, None);
    loop {
        let reply = read_option_reply(s, option)?;
        match reply.ty {
            REP_ACK => break,
            REP_INFO => match parse_info(&reply.data)? {
                Info::Export { size, flags } => size_flags = Some((size, flags)),
                Info::BlockSizes(b) => block_sizes = Some(b),
                Info::Name(n) => name = Some(n),
                Info::Description(d) => description = Some(d),
                Info::Other => {}
            },
            REP_ERR_UNSUP => return Ok(None),
            ty if ty & REP_FLAG_ERROR != 0 => {
                abort_quietly(s);
                return Err(export_error(export, ty, &reply.data));
            }
            _ => {}
        }
    }
    let (size, flags) = size_flags.ok_or(HandshakeError::NoExportInfo {
        option: if option == OPT_GO {
            "NBD_OPT_GO"
        } else {
            "NBD_OPT_INFO"
        },
    })?;
    Ok(Some(ExportInfo {
        export: Export {
            size,
            flags,
            block_sizes: block_sizes.map(|b| b.validate(size)).transpose()?,
            style: Style::FixedNewstyle,
        },
        name,
        description,
    }))
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
        let mut conn = script.into_conn();
        let err = negotiate(&mut conn, "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "export \"x\" not found: export 'x' not present"
        );
        // The client leaves with NBD_OPT_ABORT rather than just dropping the connection.
        let w = &conn.written;
        let abort = [
            &IHAVEOPT.to_be_bytes()[..],
            &OPT_ABORT.to_be_bytes(),
            &[0; 4],
        ]
        .concat();
        assert_eq!(&w[w.len() - 16..], &abort[..]);
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
        assert!(matches!(err, HandshakeError::NoExportInfo { .. }));
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

    fn go_with_sizes(min: u32, preferred: u32, max: u32) -> Result<Export> {
        let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [min, preferred, max] {
            bs.extend_from_slice(&v.to_be_bytes());
        }
        let script = info_export(newstyle(FLAG_FIXED_NEWSTYLE))
            .reply(OPT_GO, REP_INFO, &bs)
            .reply(OPT_GO, REP_ACK, b"");
        negotiate(&mut script.into_conn(), "")
    }

    #[test]
    fn block_sizes_are_validated() {
        // Accepted: typical announcements, "no maximum", and a maximum below the preferred
        // size only when the export is smaller still.
        for (min, pref, max) in [
            (1, 4096, 32 << 20),
            (512, 4096, u32::MAX),
            (4096, 65536, 1 << 20),
        ] {
            let got = go_with_sizes(min, pref, max).unwrap().block_sizes.unwrap();
            assert_eq!((got.minimum, got.preferred, got.maximum), (min, pref, max));
        }
        for (min, pref, max, reason) in [
            (0, 4096, 1 << 20, "the minimum must be a power of two"),
            (768, 4096, 1 << 20, "the minimum must be a power of two"),
            (1 << 17, 1 << 17, 1 << 20, "no larger than 64 KiB"),
            (512, 256, 1 << 20, "the preferred size must be"),
            (512, 3000, 1 << 20, "the preferred size must be"),
            (512, 4096, 1000, "a multiple of the minimum"),
            (4096, 4096, 2048, "a multiple of the minimum"),
            (
                512,
                4096,
                1024,
                "smaller than both the preferred size and the export",
            ),
        ] {
            let err = go_with_sizes(min, pref, max).unwrap_err();
            assert!(
                matches!(err, HandshakeError::BadBlockSizes { .. }),
                "{min}/{pref}/{max}: {err}"
            );
            assert!(
                err.to_string().contains(reason),
                "{min}/{pref}/{max}: {err}"
            );
        }
        let err = go_with_sizes(8192, 8192, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server requires a minimum block size of 8192 bytes; the kernel driver handles at most 4096"
        );
        // A small export may have a maximum below the preferred size.
        let small = BlockSizes {
            minimum: 512,
            preferred: 4096,
            maximum: 1024,
        };
        assert_eq!(small.validate(1024).unwrap(), small);
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
