//! How a handshake or a handshake query fails. Callers add the server address.

use std::fmt;
use std::io;

use super::consts::*;
use super::export::Style;

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
    pub(super) fn from_wire(ty: u32) -> Self {
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

impl fmt::Display for RepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Unsup => "NBD_REP_ERR_UNSUP",
            Self::Policy => "NBD_REP_ERR_POLICY",
            Self::Invalid => "NBD_REP_ERR_INVALID",
            Self::Platform => "NBD_REP_ERR_PLATFORM",
            Self::TlsReqd => "NBD_REP_ERR_TLS_REQD",
            Self::Unknown => "NBD_REP_ERR_UNKNOWN",
            Self::Shutdown => "NBD_REP_ERR_SHUTDOWN",
            Self::BlockSizeReqd => "NBD_REP_ERR_BLOCK_SIZE_REQD",
            Self::TooBig => "NBD_REP_ERR_TOO_BIG",
            Self::Other(n) => return write!(f, "error reply 2^31+{n}"),
        };
        f.write_str(name)
    }
}

/// A failed handshake or handshake query. Callers add the server address.
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
    #[error("server requires TLS and TLS was not asked for (--tls, or `tls` in the root's nbdopts): {message}")]
    TlsRequired { message: String },
    #[error("server does not offer TLS ({code} to NBD_OPT_STARTTLS): {message}; refusing to continue without it")]
    TlsRefused { code: RepError, message: String },
    #[error("server speaks the {style} handshake, which cannot start TLS; refusing to continue without it")]
    TlsImpossible { style: Style },
    #[error("server refused export \"{export}\" ({code}): {message}")]
    Refused {
        export: String,
        code: RepError,
        message: String,
    },
    #[error("server refused {option} ({code}): {message}")]
    OptionRefused {
        option: &'static str,
        code: RepError,
        message: String,
    },
    #[error("server speaks the {style} handshake, which has no {option}")]
    NoOptions { option: &'static str, style: Style },
    #[error("option reply of {len} bytes is larger than the {MAX_REPLY_LEN}-byte limit")]
    ReplyTooLong { len: u32 },
    #[error("reply for option {got} while waiting for {}", option_name(*.expected))]
    WrongOption { expected: u32, got: u32 },
    #[error("unexpected reply type {ty:#x} to {option}")]
    UnexpectedReply { option: &'static str, ty: u32 },
    #[error("malformed NBD_INFO reply (type {info}, {})", crate::text::plural(.len, "byte"))]
    BadInfo { info: u16, len: usize },
    #[error("malformed NBD_REP_SERVER reply: name length {name_len} in a {len}-byte reply")]
    BadServerEntry { name_len: u32, len: usize },
    #[error("export list is longer than {MAX_LIST_ENTRIES} entries or {MAX_LIST_BYTES} bytes")]
    ListTooLong,
    #[error("server finished {option} without sending the export size")]
    NoExportInfo { option: &'static str },
    #[error("server announced invalid block sizes (minimum {minimum}, preferred {preferred}, maximum {maximum}): {reason}")]
    BadBlockSizes {
        minimum: u32,
        preferred: u32,
        maximum: u32,
        reason: &'static str,
    },
    #[error("server requires a minimum block size of {minimum} bytes; the kernel driver handles at most {KERNEL_MAX_BLOCK_SIZE}")]
    BlockSizeUnsupported { minimum: u32 },
    #[error(
        "server speaks the oldstyle handshake, which has no export names (asked for \"{export}\")"
    )]
    OldstyleNamed { export: String },
    #[error("server closed the connection after NBD_OPT_EXPORT_NAME: export \"{export}\" probably does not exist")]
    ExportNameClosed { export: String },
}

pub(super) type Result<T> = std::result::Result<T, HandshakeError>;
