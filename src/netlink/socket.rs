//! A netlink socket that sends one request at a time and collects its replies, with a bound on
//! every wait.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::message::{self, Answer, MessageBuilder};

pub const NETLINK_ROUTE: SockProtocol = SockProtocol::NetlinkRoute;
pub const NETLINK_GENERIC: SockProtocol = SockProtocol::NetlinkGeneric;

/// How long the kernel may take to answer one request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(io::Error),
    #[error("cannot send a netlink request: {0}")]
    Send(io::Error),
    #[error("no netlink reply: {0}")]
    Receive(io::Error),
    #[error("{0}")]
    Kernel(io::Error),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it was an answer.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    pub fn open(protocol: SockProtocol) -> Result<Self, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(|e| NetlinkError::Open(e.into()))?;
        let secs = REPLY_TIMEOUT.as_secs().try_into().unwrap_or(5);
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(secs, 0))
            .map_err(|e| NetlinkError::Open(e.into()))?;
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Joins a multicast group (generic netlink groups come from the family lookup).
    /// The socket, for a poll that also waits on other descriptors.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn join_group(&self, group: u32) -> Result<(), NetlinkError> {
        // nix has no socket option for NETLINK_ADD_MEMBERSHIP, so this one stays on libc.
        // SAFETY: the option value is `group`, a live u32, and the length passed is its size;
        // the kernel only reads it. The descriptor is owned by `self` and open.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                &group as *const u32 as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Open(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Waits up to `timeout` for unsolicited messages (multicast events) and returns them
    /// as (type, payload); empty when none came.
    pub fn receive(&mut self, timeout: Duration) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        // Longer than i32::MAX ms (24 days) is capped there.
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut pfd, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(NetlinkError::Receive(e.into())),
        };
        if ready == 0 {
            return Ok(Vec::new());
        }
        let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(NetlinkError::Receive(e.into())),
        };
        Ok(message::messages(&self.buf[..n])
            .map(|m| (m.ty, m.payload.to_vec()))
            .collect())
    }

    /// Sends `msg` (which must ask for an ACK or a reply) and returns the payloads of the
    /// reply messages. A kernel error becomes [`NetlinkError::Kernel`].
    pub fn request(&mut self, msg: MessageBuilder) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // Port id 0 is the kernel; no multicast groups.
        let kernel = NetlinkAddr::new(0, 0);
        sendto(self.fd.as_raw_fd(), &bytes, &kernel, MsgFlags::empty())
            .map_err(|e| NetlinkError::Send(e.into()))?;

        let mut replies = Vec::new();
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Receive(e.into())),
            };
            match message::absorb(&self.buf[..n], seq, &mut replies) {
                Answer::More => {}
                Answer::Done => return Ok(replies),
                Answer::Error(errno) => {
                    return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(errno)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::genl;
    use crate::netlink::message::{NLM_F_ACK, NLM_F_REQUEST};

    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const NLM_F_DUMP: u16 = 0x300;

    /// The real kernel, unprivileged: what the VM tests rely on, checked on the host.
    #[test]
    fn talks_to_the_kernel() {
        // A multipart dump: one reply per link (loopback at least), ended by DONE.
        let mut route = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
        let dump = MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP).header(&[0; 16]);
        let links = route.request(dump).unwrap();
        assert!(!links.is_empty() && links.iter().all(|(ty, _)| *ty == RTM_NEWLINK));

        // A kernel error is the errno it answered: a link that cannot exist (index i32::MAX) is
        // ENODEV, or EPERM before that without CAP_NET_ADMIN.
        let mut ifinfo = [0u8; 16];
        ifinfo[4..8].copy_from_slice(&i32::MAX.to_ne_bytes());
        let bad = MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfo);
        let err = route.request(bad).unwrap_err();
        assert!(
            matches!(err.errno(), Some(libc::ENODEV | libc::EPERM)),
            "{err:?}"
        );

        // Generic netlink: the controller resolves itself, with its multicast group; joining
        // it and waiting briefly for events works (whether any come or not).
        let mut genl_sock = NetlinkSocket::open(NETLINK_GENERIC).unwrap();
        let ctrl = genl::resolve(&mut genl_sock, "nlctrl").unwrap().unwrap();
        assert_eq!(ctrl.id, 0x10);
        let (_, notify) = ctrl.groups.iter().find(|(n, _)| n == "notify").unwrap();
        genl_sock.join_group(*notify).unwrap();
        genl_sock.receive(Duration::from_millis(10)).unwrap();
        assert_eq!(
            genl::resolve(&mut genl_sock, "no-such-family").unwrap(),
            None
        );
    }
}
