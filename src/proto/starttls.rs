//! NBD_OPT_STARTTLS: the plain-text part of a TLS session. The greeting, the client flags and
//! the one option; the TLS handshake that follows is the caller's, and negotiation continues
//! inside it ([`negotiate_in_tls`](super::negotiate_in_tls), [`list_in_tls`](super::list_in_tls),
//! [`info_in_tls`](super::info_in_tls)).
//!
//! There is no way back to plain text: a server that cannot or will not start TLS is an error,
//! never a reason to carry on without it (doc/proto.md, "TLS support": a client that wants TLS
//! must not continue if STARTTLS fails, or a man in the middle could downgrade the session).

use std::io::{Read, Write};

use super::consts::*;
use super::error::{HandshakeError, RepError, Result};
use super::export::Style;
use super::option::{abort_quietly, read_option_reply, send_option, server_text, start, Start};

/// A session that has switched to TLS: what the plain greeting said, for the negotiation that
/// continues inside TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsStarted {
    no_zeroes: bool,
}

impl TlsStarted {
    /// Where negotiation stands inside TLS: fixed newstyle (STARTTLS needs it), with the
    /// flags agreed in plain text.
    pub(super) fn start(self) -> Start {
        Start::Newstyle {
            fixed: true,
            no_zeroes: self.no_zeroes,
        }
    }
}

/// Reads the greeting, asks for TLS and returns once the server has agreed: the next bytes on
/// the stream are the TLS handshake (the client speaks first).
pub fn starttls<S: Read + Write>(s: &mut S) -> Result<TlsStarted> {
    let no_zeroes = match start(s)? {
        Start::Newstyle {
            fixed: true,
            no_zeroes,
        } => no_zeroes,
        Start::Newstyle { fixed: false, .. } => {
            return Err(HandshakeError::TlsImpossible {
                style: Style::Newstyle,
            })
        }
        Start::Oldstyle { .. } => {
            return Err(HandshakeError::TlsImpossible {
                style: Style::Oldstyle,
            })
        }
    };
    send_option(s, OPT_STARTTLS, &[])?;
    let reply = read_option_reply(s, OPT_STARTTLS)?;
    match reply.ty {
        REP_ACK if reply.data.is_empty() => Ok(TlsStarted { no_zeroes }),
        ty if ty & REP_FLAG_ERROR != 0 => {
            abort_quietly(s);
            Err(HandshakeError::TlsRefused {
                code: RepError::from_wire(ty),
                message: server_text(&reply.data),
            })
        }
        ty => Err(HandshakeError::UnexpectedReply {
            option: "NBD_OPT_STARTTLS",
            ty,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testserver::Script;
    use crate::proto::{info_in_tls, list_in_tls, negotiate_in_tls};

    fn fixed() -> Script {
        Script::new()
            .u64(NBDMAGIC)
            .u64(IHAVEOPT)
            .u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    }

    #[test]
    fn ack_starts_tls_after_flags_and_one_option() {
        let mut conn = fixed().reply(OPT_STARTTLS, REP_ACK, b"").into_conn();
        let started = starttls(&mut conn).unwrap();
        assert!(conn.fully_read());
        let w = &conn.written;
        assert_eq!(
            &w[..4],
            &(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()
        );
        assert_eq!(&w[4..12], &IHAVEOPT.to_be_bytes());
        assert_eq!(&w[12..16], &OPT_STARTTLS.to_be_bytes());
        assert_eq!(&w[16..20], &0u32.to_be_bytes());
        assert_eq!(
            w.len(),
            20,
            "nothing after STARTTLS: the TLS handshake is next"
        );
        assert_eq!(
            started.start(),
            Start::Newstyle {
                fixed: true,
                no_zeroes: true
            }
        );
    }

    #[test]
    fn refusals_are_errors_never_plain_text() {
        for (code, want) in [
            (REP_ERR_UNSUP, RepError::Unsup),
            (REP_ERR_POLICY, RepError::Policy),
            (REP_ERR_INVALID, RepError::Invalid),
        ] {
            let mut conn = fixed()
                .reply(OPT_STARTTLS, code, b"no tls here")
                .into_conn();
            let err = starttls(&mut conn).unwrap_err();
            assert!(
                matches!(&err, HandshakeError::TlsRefused { code, .. } if *code == want),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("does not offer TLS"), "{text}");
            assert!(text.contains("no tls here"), "{text}");
            // It leaves with NBD_OPT_ABORT and sends no other option (no GO in plain text).
            let opts: Vec<u32> = conn.written[4..]
                .chunks(16)
                .map(|c| u32::from_be_bytes(c[8..12].try_into().unwrap()))
                .collect();
            assert_eq!(opts, [OPT_STARTTLS, OPT_ABORT]);
        }
    }

    #[test]
    fn old_handshakes_cannot_start_tls() {
        let conn = &mut Script::new()
            .u64(NBDMAGIC)
            .u64(IHAVEOPT)
            .u16(FLAG_NO_ZEROES)
            .into_conn();
        let err = starttls(conn).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::TlsImpossible {
                style: Style::Newstyle
            }
        ));
        let script = Script::new()
            .u64(NBDMAGIC)
            .u64(OLDSTYLE_MAGIC)
            .u64(1 << 20)
            .u32(0)
            .zeroes(124);
        let err = starttls(&mut script.into_conn()).unwrap_err();
        assert!(err.to_string().contains("cannot start TLS"), "{err}");
    }

    #[test]
    fn truncated_or_odd_replies_fail() {
        let err = starttls(&mut fixed().into_conn()).unwrap_err();
        assert!(matches!(err, HandshakeError::Closed { .. }), "{err:?}");
        let err =
            starttls(&mut fixed().reply(OPT_STARTTLS, REP_INFO, b"").into_conn()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::UnexpectedReply { .. }),
            "{err:?}"
        );
        // An ACK must be empty.
        let err =
            starttls(&mut fixed().reply(OPT_STARTTLS, REP_ACK, b"x").into_conn()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::UnexpectedReply { .. }),
            "{err:?}"
        );
    }

    /// Inside TLS the greeting is not read again: the first bytes are an option.
    #[test]
    fn negotiation_inside_tls_starts_with_an_option() {
        let started = starttls(&mut fixed().reply(OPT_STARTTLS, REP_ACK, b"").into_conn()).unwrap();
        let mut data = INFO_EXPORT.to_be_bytes().to_vec();
        data.extend_from_slice(&(1u64 << 20).to_be_bytes());
        data.extend_from_slice(&TFLAG_HAS_FLAGS.to_be_bytes());
        let inner = Script::new()
            .reply(OPT_GO, REP_INFO, &data)
            .reply(OPT_GO, REP_ACK, b"");
        let mut conn = inner.clone().into_conn();
        let export = negotiate_in_tls(&mut conn, started, "root").unwrap();
        assert_eq!(export.size, 1 << 20);
        assert_eq!(&conn.written[..8], &IHAVEOPT.to_be_bytes());
        assert_eq!(&conn.written[8..12], &OPT_GO.to_be_bytes());

        let list = Script::new()
            .reply(OPT_LIST, REP_SERVER, &[0, 0, 0, 1, b'a'])
            .reply(OPT_LIST, REP_ACK, b"")
            .reply(OPT_ABORT, REP_ACK, b"");
        let got = list_in_tls(&mut list.into_conn(), started).unwrap();
        assert_eq!(got[0].name, "a");

        let info = Script::new()
            .reply(OPT_INFO, REP_INFO, &data)
            .reply(OPT_INFO, REP_ACK, b"")
            .reply(OPT_ABORT, REP_ACK, b"");
        let got = info_in_tls(&mut info.into_conn(), started, "").unwrap();
        assert_eq!(got.export.size, 1 << 20);
    }
}
