//! The real transport: a UDP socket on port 68 bound to one interface, broadcasting to the
//! servers' port 67.
//!
//! The interface is up but has no address yet. Linux still delivers broadcast datagrams to a
//! socket bound to 0.0.0.0 on that device, and we ask servers to broadcast (the flag in every
//! request), so no raw packet socket is needed.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::client::Transport;
use super::packet::{CLIENT_PORT, SERVER_PORT};

/// Where the socket listens and sends. Tests use other ports or addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketConfig {
    pub client_port: u16,
    pub server: SocketAddrV4,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            client_port: CLIENT_PORT,
            server: SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot open a UDP socket: {0}")]
    Open(nix::Error),
    #[error("cannot set {option} on the UDP socket: {source}")]
    Option {
        option: &'static str,
        source: nix::Error,
    },
    #[error("cannot bind the UDP socket to port {port}: {source}")]
    Bind { port: u16, source: nix::Error },
}

#[derive(Debug)]
pub struct DhcpSocket {
    sock: UdpSocket,
    server: SocketAddrV4,
}

impl DhcpSocket {
    pub fn open(iface: &str, config: &SocketConfig) -> Result<Self, SocketError> {
        let fd = sock::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(SocketError::Open)?;
        let opt = |option| move |source| SocketError::Option { option, source };
        // Only this interface's traffic, in both directions: with no address yet, routing
        // could not pick the interface for the broadcast.
        sock::setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface))
            .map_err(opt("SO_BINDTODEVICE"))?;
        sock::setsockopt(&fd, sockopt::Broadcast, &true).map_err(opt("SO_BROADCAST"))?;
        // Another client (or an earlier run) may hold port 68 on another interface.
        sock::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(opt("SO_REUSEADDR"))?;
        let any = SockaddrIn::new(0, 0, 0, 0, config.client_port);
        sock::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any).map_err(|source| {
            SocketError::Bind {
                port: config.client_port,
                source,
            }
        })?;
        Ok(Self {
            sock: UdpSocket::from(fd),
            server: config.server,
        })
    }

    /// The local port (useful when the configuration asked for port 0).
    pub fn local_port(&self) -> io::Result<u16> {
        self.sock.local_addr().map(|a| a.port())
    }
}

impl Transport for DhcpSocket {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(packet, self.server)
            .map(drop)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.server)))
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // SO_RCVTIMEO rounds down to microseconds; zero would mean "forever".
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
            match self.sock.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (SO_BINDTODEVICE before Linux 5.7), like the rest of nbdroot's tests.
    #[test]
    fn exchanges_datagrams_on_loopback_and_times_out() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            a => panic!("{a}"),
        };
        let config = SocketConfig {
            client_port: 0,
            server: server_addr,
        };
        let mut client = DhcpSocket::open("lo", &config).unwrap();
        let port = client.local_port().unwrap();
        assert_ne!(port, 0);

        client.send(b"discover").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"discover");
        assert_eq!(from.port(), port);
        server.send_to(b"offer", from).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(client.recv(&mut buf, deadline).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"offer");

        let start = Instant::now();
        let deadline = start + Duration::from_millis(200);
        assert_eq!(client.recv(&mut buf, deadline).unwrap(), None);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // A deadline already past returns at once.
        assert_eq!(client.recv(&mut buf, start).unwrap(), None);
    }

    #[test]
    fn bind_errors_name_the_option_or_port() {
        let err = DhcpSocket::open("no-such-if0", &SocketConfig::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot set SO_BINDTODEVICE on the UDP socket: ENODEV: No such device"
        );
        let taken = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let config = SocketConfig {
            client_port: port,
            ..SocketConfig::default()
        };
        let err = DhcpSocket::open("lo", &config).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot bind the UDP socket to port {port}: EADDRINUSE"
            )),
            "{err}"
        );
    }
}
