//! The NBD wire protocol, as pure code over `Read + Write`.

pub mod consts;
pub mod handshake;
mod option;
pub mod query;
#[cfg(test)]
pub(crate) mod testserver;
pub mod transmission;

pub use handshake::{negotiate, BlockSizes, Export, HandshakeError, RepError, Style};
pub use query::{info, list, ExportEntry, ExportInfo};
pub use transmission::{Client, Command, Errno, TransmissionError};
