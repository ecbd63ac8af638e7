//! nbdroot: boot Linux from a root filesystem served over NBD.
//!
//! The library holds everything; `main.rs` only parses the command line. Pure logic
//! (command line grammar, the NBD protocol, netlink encoding, module ordering, cpio) lives
//! apart from the code that makes syscalls.

pub mod attach;
pub mod blkid;
pub mod boot;
pub mod cmdline;
pub mod commands;
pub mod connect;
pub mod initramfs;
pub mod kernel;
pub mod logger;
pub mod modules;
pub mod net;
pub mod netlink;
pub mod proto;
pub mod supervise;
pub mod swap;
pub mod uri;
