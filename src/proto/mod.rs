//! The NBD wire protocol, as pure code over `Read + Write`, in layers that only look down:
//! `consts` ← `export` ← `error` ← `option` (framing) ← `handshake` (NBD_OPT_GO/INFO and the
//! old ways) ← `query` (NBD_OPT_LIST, NBD_OPT_INFO); `transmission` is the data phase.
//! `starttls` (NBD_OPT_STARTTLS) sits beside `option`: the TLS session itself is the caller's
//! (`crate::tls`), and negotiation continues inside it with the `*_in_tls` entry points.

pub mod consts;
pub mod error;
pub mod export;
pub mod handshake;
mod option;
pub mod query;
pub mod starttls;
#[cfg(test)]
pub(crate) mod testserver;
pub mod transmission;

pub use error::{HandshakeError, RepError};
pub use export::{BlockSizes, Export, Style};
pub use handshake::{negotiate, negotiate_in_tls, ExportInfo};
pub use query::{info, info_in_tls, list, list_in_tls, ExportEntry};
pub use starttls::{starttls, TlsStarted};
pub use transmission::{Client, Command, Errno, TransmissionError};
