//! Dialing a TCP server so that a path coming back is used at once. A connect whose SYN went
//! unanswered waits for the kernel's retransmissions (1, 3, 7 s after it): a server whose
//! network returns after a 10 s outage is reached seconds late, or only by the next attempt.
//! Here a new SYN goes out every [`STAGGER`] while the earlier ones stay pending, and the first
//! socket to connect wins, so the return is seen within that interval, and a path whose
//! round trip is longer than the interval still connects on the earliest socket.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

/// How long a SYN goes unanswered before another one follows on a new socket.
pub const STAGGER: Duration = Duration::from_millis(500);
/// The most sockets pending at once: past it the oldest is closed for the new one (a path
/// whose round trip is longer than this many intervals is not one to boot from).
const MAX_PENDING: usize = 8;

/// Connects to `addr` within `timeout`, a new socket every `stagger` until one connects. The
/// first answer decides: a connection (the others are closed), or an error such as a refusal.
pub fn tcp(addr: &SocketAddr, timeout: Duration, stagger: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<OwnedFd> = Vec::new();
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if now >= next {
            next = now + stagger;
            match start(addr)? {
                Started::Connected(fd) => return into_stream(fd),
                Started::Pending(fd) => pending.push(fd),
            }
            if pending.len() > MAX_PENDING {
                pending.remove(0);
            }
        }
        let wait = next.min(deadline).saturating_duration_since(now);
        let mut fds: Vec<PollFd> = pending
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLOUT))
            .collect();
        match poll(
            &mut fds,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let answered = fds.iter().position(|f| f.any().unwrap_or(false));
        drop(fds);
        if let Some(i) = answered {
            let fd = pending.swap_remove(i);
            return match getsockopt(&fd, sockopt::SocketError)? {
                0 => into_stream(fd),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
        }
    }
}

enum Started {
    Connected(OwnedFd),
    Pending(OwnedFd),
}

/// A non-blocking connect: done at once (loopback may be), or in progress.
fn start(addr: &SocketAddr) -> io::Result<Started> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(*addr)) {
        Ok(()) => Ok(Started::Connected(fd)),
        Err(Errno::EINPROGRESS) => Ok(Started::Pending(fd)),
        Err(e) => Err(e.into()),
    }
}

fn into_stream(fd: OwnedFd) -> io::Result<TcpStream> {
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connects_and_is_blocking() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = tcp(&addr, Duration::from_secs(2), STAGGER).unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        // A blocking socket times out (WouldBlock) instead of failing at once.
        let err = std::io::Read::read(&mut &s, &mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let (_peer, _) = listener.accept().unwrap();
    }

    #[test]
    fn a_refusal_is_the_answer() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = tcp(&addr, Duration::from_secs(2), STAGGER).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    /// A listener whose accept queue is full answers no SYN, as a path that is down: the dial
    /// gives up at its bound, with every socket it started closed.
    #[test]
    fn a_silent_path_is_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // A backlog of 0 holds one connection: this one fills it.
        let _filler = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let err = tcp(&addr, Duration::from_millis(1200), STAGGER).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // A new SYN every 10 ms for 0.3 s: never more than MAX_PENDING of them at once.
        let port = format!(":{:04X} ", addr.port());
        let watch = std::thread::spawn(move || {
            let syn_sent = || {
                let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                // Columns: sl, local, remote, state (02 is SYN_SENT).
                table
                    .lines()
                    .filter(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() > 3 && f[2].ends_with(port.trim_end()) && f[3] == "02"
                    })
                    .count()
            };
            (0..60)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(5));
                    syn_sent()
                })
                .max()
                .unwrap_or(0)
        });
        let _ = tcp(&addr, Duration::from_millis(300), Duration::from_millis(10));
        let most = watch.join().unwrap();
        assert!(
            (2..=MAX_PENDING).contains(&most),
            "{most} SYNs pending at once"
        );
    }
}
