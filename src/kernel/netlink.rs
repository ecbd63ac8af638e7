//! The kernel nbd driver's generic netlink interface (family "nbd", version 1).
//!
//! CONNECT hands negotiated sockets to the kernel, which keeps its own references: no process
//! has to stay behind in the data path.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::netlink::{genl, message, NetlinkError, NetlinkSocket, NETLINK_GENERIC};

const FAMILY: &str = "nbd";
const VERSION: u8 = 1;

const CMD_CONNECT: u8 = 1;
const CMD_DISCONNECT: u8 = 2;
const CMD_RECONFIGURE: u8 = 3;
const CMD_LINK_DEAD: u8 = 4;
const CMD_STATUS: u8 = 5;
const ATTR_DEVICE_LIST: u16 = 9;
const DEVICE_INDEX: u16 = 1;
const DEVICE_CONNECTED: u16 = 2;
const MCAST_GROUP: &str = "nbd_mc_group";

const ATTR_INDEX: u16 = 1;
const ATTR_SIZE_BYTES: u16 = 2;
const ATTR_BLOCK_SIZE_BYTES: u16 = 3;
const ATTR_TIMEOUT: u16 = 4;
const ATTR_SERVER_FLAGS: u16 = 5;
const ATTR_CLIENT_FLAGS: u16 = 6;
const ATTR_SOCKETS: u16 = 7;
const ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
const ATTR_BACKEND_IDENTIFIER: u16 = 10;
const SOCK_ITEM: u16 = 1;
const SOCK_FD: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel has no \"nbd\" netlink family (is the nbd module loaded? Linux < 4.12 needs --ioctl)")]
    NoFamily,
    #[error("{step}: {source}")]
    Netlink {
        step: &'static str,
        source: NetlinkError,
    },
    #[error("the kernel accepted the connection but did not say which device it used")]
    NoIndex,
}

impl KernelError {
    /// The errno the kernel answered with, if it answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { source, .. } => source.errno(),
            _ => None,
        }
    }
}

/// What to attach, for NBD_CMD_CONNECT.
#[derive(Debug, Clone)]
pub struct Attach<'a> {
    /// `/dev/nbdN` to use; `None` lets the kernel pick (or create) a free one.
    pub index: Option<u32>,
    pub sockets: &'a [RawFd],
    pub size: u64,
    pub block_size: u64,
    /// Transmission flags from the handshake (plus READ_ONLY when forced).
    pub server_flags: u64,
    /// Per-request I/O timeout; `None` keeps the kernel default.
    pub timeout: Option<Duration>,
    pub dead_conn_timeout: Option<Duration>,
    pub client_flags: u64,
    /// Shown in /sys/block/nbdN/backend; RECONFIGURE must then name the same (Linux ≥ 5.14).
    pub identifier: Option<&'a str>,
}

fn family(sock: &mut NetlinkSocket) -> Result<u16, KernelError> {
    genl::resolve(sock, FAMILY)
        .map_err(|source| KernelError::Netlink {
            step: "looking up the nbd netlink family",
            source,
        })?
        .map(|f| f.id)
        .ok_or(KernelError::NoFamily)
}

/// Whether the kernel offers the nbd netlink family (the nbd module is loaded, Linux ≥ 4.12).
pub fn available() -> bool {
    // Any failure to ask (no socket, no answer) counts as "not offered": the caller then
    // uses the ioctls, which report their own errors.
    NetlinkSocket::open(NETLINK_GENERIC)
        .ok()
        .and_then(|mut s| genl::resolve(&mut s, FAMILY).ok())
        .flatten()
        .is_some()
}

/// Attaches the sockets and returns the device index the kernel used.
pub fn connect(a: &Attach<'_>) -> Result<u32, KernelError> {
    let mut sock = NetlinkSocket::open(NETLINK_GENERIC).map_err(|source| KernelError::Netlink {
        step: "opening generic netlink",
        source,
    })?;
    let id = family(&mut sock)?;
    let mut msg = genl::request(id, CMD_CONNECT, VERSION, message::NLM_F_ACK)
        .attr_u64(ATTR_SIZE_BYTES, a.size)
        .attr_u64(ATTR_BLOCK_SIZE_BYTES, a.block_size)
        .attr_u64(ATTR_SERVER_FLAGS, a.server_flags);
    if let Some(index) = a.index {
        msg = msg.attr_u32(ATTR_INDEX, index);
    }
    // A zero timeout would make the kernel time out at once (nbd issue #71): only send real ones.
    if let Some(t) = a.timeout.filter(|t| !t.is_zero()) {
        msg = msg.attr_u64(ATTR_TIMEOUT, t.as_secs());
    }
    if let Some(t) = a.dead_conn_timeout {
        msg = msg.attr_u64(ATTR_DEAD_CONN_TIMEOUT, t.as_secs());
    }
    if let Some(id) = a.identifier {
        msg = msg.attr_str(ATTR_BACKEND_IDENTIFIER, id);
    }
    if a.client_flags != 0 {
        msg = msg.attr_u64(ATTR_CLIENT_FLAGS, a.client_flags);
    }
    msg = msg.begin_nested(ATTR_SOCKETS);
    for &fd in a.sockets {
        msg = msg
            .begin_nested(SOCK_ITEM)
            .attr_u32(SOCK_FD, fd as u32)
            .end_nested();
    }
    msg = msg.end_nested();

    let replies = sock.request(msg).map_err(|source| KernelError::Netlink {
        step: "NBD_CMD_CONNECT",
        source,
    })?;
    connected_index(&replies)
        .or(a.index)
        .ok_or(KernelError::NoIndex)
}

/// The device index the replies to NBD_CMD_CONNECT name, if they name one. Public, as are
/// [`device_status`] and [`dead_links`], for the fuzz targets: the kernel's answers are input.
pub fn connected_index(replies: &[(u16, Vec<u8>)]) -> Option<u32> {
    replies
        .iter()
        .flat_map(|(_, r)| message::attrs(genl::payload(r)))
        .find(|(ty, _)| *ty == ATTR_INDEX)
        .and_then(|(_, p)| message::as_u32(p))
}

/// Disconnects `/dev/nbd<index>`.
pub fn disconnect(index: u32) -> Result<(), KernelError> {
    let mut sock = NetlinkSocket::open(NETLINK_GENERIC).map_err(|source| KernelError::Netlink {
        step: "opening generic netlink",
        source,
    })?;
    let id = family(&mut sock)?;
    let msg =
        genl::request(id, CMD_DISCONNECT, VERSION, message::NLM_F_ACK).attr_u32(ATTR_INDEX, index);
    sock.request(msg).map_err(|source| KernelError::Netlink {
        step: "NBD_CMD_DISCONNECT",
        source,
    })?;
    Ok(())
}

/// Whether `/dev/nbd<index>` still has a configuration (it may be waiting for a dead
/// connection to be replaced). `None` when the kernel does not know the device.
pub fn is_configured(index: u32) -> Result<Option<bool>, KernelError> {
    let step = "NBD_CMD_STATUS";
    let mut sock = NetlinkSocket::open(NETLINK_GENERIC)
        .map_err(|source| KernelError::Netlink { step, source })?;
    let id = family(&mut sock)?;
    let msg = genl::request(id, CMD_STATUS, VERSION, 0).attr_u32(ATTR_INDEX, index);
    let replies = match sock.request(msg) {
        Ok(r) => r,
        Err(e) if e.errno() == Some(libc::EINVAL) || e.errno() == Some(libc::ENOENT) => {
            return Ok(None)
        }
        Err(source) => return Err(KernelError::Netlink { step, source }),
    };
    Ok(device_status(&replies, index))
}

/// Whether the NBD_CMD_STATUS replies say `/dev/nbd<index>` is connected: `None` when they do
/// not list the device, or list it without saying.
pub fn device_status(replies: &[(u16, Vec<u8>)], index: u32) -> Option<bool> {
    for (_, r) in replies {
        for (ty, list) in message::attrs(genl::payload(r)) {
            if ty != ATTR_DEVICE_LIST {
                continue;
            }
            for (_, item) in message::attrs(list) {
                let mut idx = None;
                let mut connected = None;
                for (t, v) in message::attrs(item) {
                    match t {
                        DEVICE_INDEX => idx = message::as_u32(v),
                        DEVICE_CONNECTED => connected = v.first().map(|b| *b != 0),
                        _ => {}
                    }
                }
                if idx == Some(index) {
                    return connected;
                }
            }
        }
    }
    None
}

/// Hands replacement sockets to `/dev/nbd<index>`. The kernel only replaces sockets it has
/// marked dead; extra ones are dropped.
pub fn reconfigure(
    index: u32,
    sockets: &[RawFd],
    identifier: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(), KernelError> {
    let mut sock = NetlinkSocket::open(NETLINK_GENERIC).map_err(|source| KernelError::Netlink {
        step: "opening generic netlink",
        source,
    })?;
    let id = family(&mut sock)?;
    let mut msg =
        genl::request(id, CMD_RECONFIGURE, VERSION, message::NLM_F_ACK).attr_u32(ATTR_INDEX, index);
    if let Some(ident) = identifier {
        msg = msg.attr_str(ATTR_BACKEND_IDENTIFIER, ident);
    }
    // The kernel applies a new I/O timeout to the requests it sends from now on.
    if let Some(t) = timeout {
        msg = msg.attr_u64(ATTR_TIMEOUT, t.as_secs());
    }
    msg = msg.begin_nested(ATTR_SOCKETS);
    for &fd in sockets {
        msg = msg
            .begin_nested(SOCK_ITEM)
            .attr_u32(SOCK_FD, fd as u32)
            .end_nested();
    }
    msg = msg.end_nested();
    sock.request(msg).map_err(|source| KernelError::Netlink {
        step: "NBD_CMD_RECONFIGURE",
        source,
    })?;
    Ok(())
}

/// The most queued events one wait reads after the first.
const MAX_QUEUED_EVENTS: usize = 64;

/// The driver's multicast events: it announces each connection it marks dead.
#[derive(Debug)]
pub struct Events {
    sock: NetlinkSocket,
    family: u16,
}

impl Events {
    pub fn subscribe() -> Result<Self, KernelError> {
        let step = "subscribing to nbd events";
        let mut sock = NetlinkSocket::open(NETLINK_GENERIC)
            .map_err(|source| KernelError::Netlink { step, source })?;
        let fam = genl::resolve(&mut sock, FAMILY)
            .map_err(|source| KernelError::Netlink { step, source })?
            .ok_or(KernelError::NoFamily)?;
        let group = fam
            .groups
            .iter()
            .find(|(name, _)| name == MCAST_GROUP)
            .map(|(_, id)| *id)
            .ok_or(KernelError::NoFamily)?;
        sock.join_group(group)
            .map_err(|source| KernelError::Netlink { step, source })?;
        Ok(Self {
            sock,
            family: fam.id,
        })
    }

    /// The socket the events arrive on, for a poll that also waits on other descriptors.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.fd()
    }

    /// Waits up to `timeout`; returns the device indexes announced dead, by every event
    /// queued by then (each is a datagram of its own: one failure of several connections is
    /// one answer, not one per connection).
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<u32>, KernelError> {
        let err = |source| KernelError::Netlink {
            step: "receiving nbd events",
            source,
        };
        let mut msgs = self.sock.receive(timeout).map_err(err)?;
        // Bounded: a device whose links die without end must not keep this from returning.
        for _ in 0..MAX_QUEUED_EVENTS {
            let more = self.sock.receive(Duration::ZERO).map_err(err)?;
            if msgs.is_empty() || more.is_empty() {
                break;
            }
            msgs.extend(more);
        }
        let mut dead = dead_links(&msgs, self.family);
        dead.sort_unstable();
        dead.dedup();
        Ok(dead)
    }
}

/// The device indexes that the NBD_CMD_LINK_DEAD events among `msgs` (generic netlink
/// messages as (type, payload)) from the nbd family `family` announce.
pub fn dead_links(msgs: &[(u16, Vec<u8>)], family: u16) -> Vec<u32> {
    msgs.iter()
        .filter(|(ty, p)| *ty == family && p.first() == Some(&CMD_LINK_DEAD))
        .filter_map(|(_, p)| {
            message::attrs(genl::payload(p))
                .find(|(t, _)| *t == ATTR_INDEX)
                .and_then(|(_, v)| message::as_u32(v))
        })
        .collect()
}
