//! The NBD wire protocol, as pure code over `Read + Write`, in layers that only look down:
//! `consts` ← `export` ← `error` ← `option` (framing) ← `handshake` (NBD_OPT_GO/INFO and the
//! old ways) ← `query` (NBD_OPT_LIST, NBD_OPT_INFO); `transmission` is the data phase.

pub mod consts;
pub mod error;
pub mod export;
pub mod handshake;
mod option;
pub mod query;
#[cfg(test)]
pub(crate) mod testserver;
pub mod transmission;

pub use error::{HandshakeError, RepError};
pub use export::{BlockSizes, Export, Style};
pub use handshake::{negotiate, ExportInfo};
pub use query::{info, list, ExportEntry};
pub use transmission::{Client, Command, Errno, TransmissionError};
