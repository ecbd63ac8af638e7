//! A netlink socket that sends one request at a time and collects its replies, with a bound on
//! every wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::message::{self, Answer, MessageBuilder};

pub const NETLINK_ROUTE: i32 = libc::NETLINK_ROUTE;
pub const NETLINK_GENERIC: i32 = libc::NETLINK_GENERIC;

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
    pub fn open(protocol: i32) -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(NetlinkError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs().try_into().unwrap_or(5),
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Open(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Joins a multicast group (generic netlink groups come from the family lookup).
    pub fn join_group(&self, group: u32) -> Result<(), NetlinkError> {
        // SAFETY: `group` is a valid u32 for the duration of the call.
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
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(NetlinkError::Receive(e));
        }
        if ready == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(NetlinkError::Receive(e)),
            };
        }
        Ok(message::messages(&self.buf[..n as usize])
            .map(|m| (m.ty, m.payload.to_vec()))
            .collect())
    }

    /// Sends `msg` (which must ask for an ACK or a reply) and returns the payloads of the
    /// reply messages. A kernel error becomes [`NetlinkError::Kernel`].
    pub fn request(&mut self, msg: MessageBuilder) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: `bytes` is a valid buffer of the given length; the kernel address is zeroed
        // (pid 0 = the kernel).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(NetlinkError::Send(io::Error::last_os_error()));
        }

        let mut replies = Vec::new();
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Receive(e));
            }
            match message::absorb(&self.buf[..n as usize], seq, &mut replies) {
                Answer::More => {}
                Answer::Done => return Ok(replies),
                Answer::Error(errno) => {
                    return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(errno)))
                }
            }
        }
    }
}
