//! The NBD wire protocol, as pure code over `Read + Write`.

pub mod consts;
pub mod handshake;
#[cfg(test)]
pub(crate) mod testserver;

pub use handshake::{negotiate, BlockSizes, Export, HandshakeError, Style};
