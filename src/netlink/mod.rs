//! Netlink: a minimal codec and socket for rtnetlink and generic netlink requests.

pub mod genl;
pub mod message;
pub mod socket;

pub use message::MessageBuilder;
pub use socket::{NetlinkError, NetlinkSocket, NETLINK_GENERIC, NETLINK_ROUTE};
