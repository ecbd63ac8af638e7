//! Reaching an NBD server: connect and handshake, each attempt bounded in time, retried with
//! backoff while the failure may be transient; socket options that detect a dead peer.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use crate::address::{self, Endpoint, Host, TargetError};
use crate::dial;
use crate::proto::consts::TFLAG_CAN_MULTI_CONN;
use crate::proto::{self, Export, HandshakeError, TlsStarted};
use crate::settings::{ConnectPolicy, SocketOptions, FIRST_BACKOFF, MAX_BACKOFF};
use crate::text;
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve \"{host}\": {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot reach {peer}: {reason} ({})", text::tried(*.secs, *.attempts))]
    Unreachable {
        peer: String,
        reason: String,
        secs: f64,
        attempts: u32,
    },
    #[error("export \"{export}\" not found on {peer}: {message}")]
    UnknownExport {
        export: String,
        peer: String,
        message: String,
    },
    #[error("NBD handshake with {peer} failed: {source}")]
    Handshake {
        peer: String,
        source: HandshakeError,
    },
    #[error("cannot set socket option {option} for {peer}: {source}")]
    SocketOption {
        option: &'static str,
        peer: String,
        source: io::Error,
    },
    #[error("{peer} does not allow {wanted} connections to export \"{export}\" (no CAN_MULTI_CONN flag); use one connection")]
    NoMultiConn {
        peer: String,
        export: String,
        wanted: usize,
    },
    #[error("connection {index} to {peer} saw a different export (size {size}, flags {flags:#x}) than the first")]
    Inconsistent {
        peer: String,
        index: usize,
        size: u64,
        flags: u16,
    },
    #[error("TLS with {peer}: {source}")]
    Tls { peer: String, source: TlsError },
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// A resolved server address: kept for reconnects, so no name lookup happens after boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Resolves an endpoint once.
pub fn resolve(endpoint: &Endpoint) -> Result<Peer, ConnectError> {
    match endpoint {
        Endpoint::Unix(p) => Ok(Peer::Unix(p.clone())),
        Endpoint::Tcp {
            host: Host::Ip(ip),
            port,
        } => Ok(Peer::Tcp(SocketAddr::new(*ip, *port))),
        Endpoint::Tcp {
            host: Host::Name(name),
            port,
        } => (name.as_str(), *port)
            .to_socket_addrs()
            .and_then(|mut a| a.next().ok_or_else(|| io::Error::other("no address found")))
            .map(Peer::Tcp)
            .map_err(|source| ConnectError::Resolve {
                host: name.clone(),
                source,
            }),
    }
}

/// A connected socket of either kind, or a TLS session in userspace. A TCP socket may be a
/// kernel-TLS one: it reads and writes clear text like any other.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tls::Session>),
}

impl Stream {
    /// Bounds every read and write (`None`: unbounded).
    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        let tcp = |s: &TcpStream| s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t));
        match self {
            Stream::Tcp(s) => tcp(s),
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
            Stream::Tls(s) => tcp(s.tcp()),
        }
    }

    /// Runs NBD_OPT_STARTTLS and the TLS handshake: afterwards the stream is a TLS session in
    /// userspace, ready for the options asked again inside it.
    pub fn start_tls(
        self,
        peer: &Peer,
        client: &tls::Client,
    ) -> Result<(Stream, TlsStarted), AttemptError> {
        let Stream::Tcp(mut tcp) = self else {
            return Err(tls_fatal(peer, TlsError::NotTcp));
        };
        let started = proto::starttls(&mut tcp).map_err(|e| classify(peer, e))?;
        let session = client.handshake(tcp).map_err(|e| tls_attempt(peer, e))?;
        Ok((Stream::Tls(Box::new(session)), started))
    }

    /// Makes a negotiated stream one the kernel can hold: a TLS session in userspace becomes a
    /// kernel-TLS socket; plain sockets are already fine.
    pub fn into_kernel(self, peer: &Peer) -> Result<Stream, AttemptError> {
        match self {
            Stream::Tls(session) => session
                .into_kernel()
                .map(Stream::Tcp)
                .map_err(|e| tls_attempt(peer, e)),
            plain => Ok(plain),
        }
    }
}

fn tls_fatal(peer: &Peer, source: TlsError) -> AttemptError {
    AttemptError::Fatal(ConnectError::Tls {
        peer: peer.to_string(),
        source,
    })
}

/// A TLS failure is worth another attempt only when the network failed, never when a
/// certificate or the configuration did.
fn tls_attempt(peer: &Peer, e: TlsError) -> AttemptError {
    match e {
        TlsError::Io(e) => AttemptError::Connect(e),
        e => tls_fatal(peer, e),
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.as_raw_fd(),
        }
    }
}

/// A negotiated connection, ready for the transmission phase.
#[derive(Debug)]
pub struct Connection {
    pub stream: Stream,
    pub export: Export,
    pub peer: Peer,
}

/// Why one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The socket could not connect: worth retrying.
    Connect(io::Error),
    /// The server went away or stalled mid-handshake: worth retrying.
    Transient(HandshakeError),
    /// The server answered, and the answer will not change.
    Fatal(ConnectError),
}

/// Sets TCP_NODELAY, keepalive and TCP_USER_TIMEOUT as asked.
fn tune(s: &TcpStream, peer: &Peer, o: &SocketOptions) -> Result<(), ConnectError> {
    let err = |option| {
        let peer = peer.to_string();
        move |e: nix::errno::Errno| ConnectError::SocketOption {
            option,
            peer,
            source: e.into(),
        }
    };
    setsockopt(s, sockopt::TcpNoDelay, &true).map_err(err("TCP_NODELAY"))?;
    if let Some(k) = o.keepalive {
        setsockopt(s, sockopt::KeepAlive, &true).map_err(err("SO_KEEPALIVE"))?;
        let secs = |d: Duration| d.as_secs().clamp(1, u32::MAX as u64) as u32;
        setsockopt(s, sockopt::TcpKeepIdle, &secs(k.idle)).map_err(err("TCP_KEEPIDLE"))?;
        setsockopt(s, sockopt::TcpKeepInterval, &secs(k.interval)).map_err(err("TCP_KEEPINTVL"))?;
        setsockopt(s, sockopt::TcpKeepCount, &k.count.max(1)).map_err(err("TCP_KEEPCNT"))?;
    }
    if let Some(t) = o.user_timeout {
        let ms = t.as_millis().min(u32::MAX as u128) as u32;
        setsockopt(s, sockopt::TcpUserTimeout, &ms).map_err(err("TCP_USER_TIMEOUT"))?;
    }
    Ok(())
}

/// Connects within `timeout` and leaves `timeout` as the socket's read and write bound.
fn dial(peer: &Peer, timeout: Duration, opts: &SocketOptions) -> Result<Stream, AttemptError> {
    let stream = match peer {
        Peer::Tcp(addr) => {
            let s = dial::tcp(addr, timeout, dial::STAGGER).map_err(AttemptError::Connect)?;
            tune(&s, peer, opts).map_err(AttemptError::Fatal)?;
            Stream::Tcp(s)
        }
        Peer::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(AttemptError::Connect)?),
    };
    set_timeouts(&stream, peer, Some(timeout))?;
    Ok(stream)
}

fn set_timeouts(stream: &Stream, peer: &Peer, t: Option<Duration>) -> Result<(), AttemptError> {
    stream.set_timeouts(t).map_err(|source| {
        AttemptError::Fatal(ConnectError::SocketOption {
            option: "SO_RCVTIMEO/SO_SNDTIMEO",
            peer: peer.to_string(),
            source,
        })
    })
}

/// One bounded attempt: connect within `timeout`, then negotiate within `timeout` (inside TLS
/// when `tls` is given: the connection is then a TLS session in userspace).
pub fn attempt(
    peer: &Peer,
    export: &str,
    timeout: Duration,
    opts: &SocketOptions,
    tls: Option<&tls::Client>,
) -> Result<Connection, AttemptError> {
    let mut stream = dial(peer, timeout, opts)?;
    let export = match tls {
        None => proto::negotiate(&mut stream, export).map_err(|e| classify(peer, e)),
        Some(client) => {
            let started;
            (stream, started) = stream.start_tls(peer, client)?;
            proto::negotiate_in_tls(&mut stream, started, export).map_err(|e| match e {
                // In TLS 1.3 a server checks the client's certificate only after the
                // handshake, and those that want one just close: say what is likely missing.
                HandshakeError::Closed { .. } if client.settings().cert.is_none() => {
                    tls_fatal(peer, TlsError::ClosedWithoutClientCert)
                }
                e => classify(peer, e),
            })
        }
    }?;
    // The kernel (or a long-lived client) owns the socket from here: no userspace timeouts.
    set_timeouts(&stream, peer, None)?;
    Ok(Connection {
        stream,
        export,
        peer: peer.clone(),
    })
}

fn classify(peer: &Peer, e: HandshakeError) -> AttemptError {
    match e {
        HandshakeError::Closed { .. }
        | HandshakeError::TimedOut { .. }
        | HandshakeError::Io { .. } => AttemptError::Transient(e),
        HandshakeError::UnknownExport { export, message } => {
            AttemptError::Fatal(ConnectError::UnknownExport {
                export,
                peer: peer.to_string(),
                message,
            })
        }
        e => AttemptError::Fatal(ConnectError::Handshake {
            peer: peer.to_string(),
            source: e,
        }),
    }
}

/// Connects and negotiates, retrying transient failures as the policy allows.
pub fn connect(
    peer: &Peer,
    export: &str,
    policy: &ConnectPolicy,
    opts: &SocketOptions,
    tls: Option<&tls::Client>,
) -> Result<Connection, ConnectError> {
    retry(peer, policy, || {
        attempt(peer, export, policy.attempt_timeout, opts, tls)
    })
}

/// [`connect`] for the kernel: a TLS session becomes a kernel-TLS socket, keys installed for
/// both directions, checked to have nothing in flight.
pub fn connect_for_kernel(
    peer: &Peer,
    export: &str,
    policy: &ConnectPolicy,
    opts: &SocketOptions,
    tls: Option<&tls::Client>,
) -> Result<Connection, ConnectError> {
    retry(peer, policy, || {
        let c = attempt(peer, export, policy.attempt_timeout, opts, tls)?;
        Ok(Connection {
            stream: c.stream.into_kernel(peer)?,
            ..c
        })
    })
}

/// Connects without negotiating, retrying as the policy allows; every read and write on the
/// returned stream is bounded by the attempt timeout (for option-only sessions: list, info).
pub fn open(
    peer: &Peer,
    policy: &ConnectPolicy,
    opts: &SocketOptions,
) -> Result<Stream, ConnectError> {
    retry(peer, policy, || dial(peer, policy.attempt_timeout, opts))
}

fn retry<T>(
    peer: &Peer,
    policy: &ConnectPolicy,
    mut once: impl FnMut() -> Result<T, AttemptError>,
) -> Result<T, ConnectError> {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reason = match once() {
            Ok(c) => return Ok(c),
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Connect(e)) => describe_io(&e),
            Err(AttemptError::Transient(e)) => e.to_string(),
        };
        if attempts > policy.retries {
            return Err(ConnectError::Unreachable {
                peer: peer.to_string(),
                reason,
                secs: start.elapsed().as_secs_f64(),
                attempts,
            });
        }
        log::warn!("{peer}: {reason}; retrying in {} ms", backoff.as_millis());
        sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `count` connections to the same export, for the kernel (see [`connect_for_kernel`]; with
/// TLS, one session per socket). More than one needs the server's CAN_MULTI_CONN, and every
/// connection must see the same export.
pub fn connect_many(
    peer: &Peer,
    export: &str,
    count: usize,
    policy: &ConnectPolicy,
    opts: &SocketOptions,
    tls: Option<&tls::Client>,
) -> Result<Vec<Connection>, ConnectError> {
    let first = connect_for_kernel(peer, export, policy, opts, tls)?;
    if count > 1 && first.export.flags & TFLAG_CAN_MULTI_CONN == 0 {
        return Err(ConnectError::NoMultiConn {
            peer: peer.to_string(),
            export: export.to_string(),
            wanted: count,
        });
    }
    let mut all = vec![first];
    for index in 1..count {
        let c = connect_for_kernel(peer, export, policy, opts, tls)?;
        if (c.export.size, c.export.flags) != (all[0].export.size, all[0].export.flags) {
            return Err(ConnectError::Inconsistent {
                peer: peer.to_string(),
                index,
                size: c.export.size,
                flags: c.export.flags,
            });
        }
        all.push(c);
    }
    Ok(all)
}

impl proto::Client<Stream> {
    /// Connects to `target` and negotiates an export, ready for I/O.
    ///
    /// `target` is a server as the command line takes it: `host[:port]`, `[v6addr]:port`,
    /// `nbd://host[:port][/export]` or `nbd+unix:///export?socket=PATH` (port 10809 unless
    /// given). The export is `export` if given, else the one the URI names, else the server's
    /// default export.
    ///
    /// One attempt ([`ConnectPolicy::COMMAND`]): the connect, and each read or write of the
    /// handshake, may take up to [`ATTEMPT_TIMEOUT`](crate::settings::ATTEMPT_TIMEOUT). TCP
    /// connections get TCP_NODELAY, keepalive and TCP_USER_TIMEOUT
    /// ([`SocketOptions::default`]), so a server that vanishes fails a request within about
    /// half a minute; there are no read or write timeouts once negotiated. For retries or
    /// other options, [`connect`] and [`proto::Client::new`] are the pieces this is made of.
    ///
    /// The example on [`proto::Client`] runs against an in-process server.
    ///
    /// ```no_run
    /// // no_run: needs a server at nbd.example.net.
    /// use nbdroot::proto::Client;
    ///
    /// let mut client = Client::connect("nbd://nbd.example.net/disk", None)?;
    /// let mut sector = [0u8; 512];
    /// client.read(0, &mut sector)?;
    /// client.disconnect()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(target: &str, export: Option<&str>) -> Result<Self, ConnectError> {
        let target = address::parse_target(target)?;
        let export = export.or(target.export.as_deref()).unwrap_or_default();
        let peer = resolve(&target.endpoint)?;
        let c = connect(
            &peer,
            export,
            &ConnectPolicy::COMMAND,
            &SocketOptions::default(),
            None,
        )?;
        Ok(Self::new(c.stream, c.export))
    }
}

/// An io::Error as a short lowercase phrase ("connection refused", "timed out").
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "connection timed out".to_string(),
        _ => {
            let text = e.to_string();
            // std appends " (os error N)": keep the words only.
            let words = text.split(" (os error").next().unwrap_or(&text);
            words.to_ascii_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn refused_is_retried_then_reported_with_attempts() {
        // A port that was just free: nothing listens there.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let policy = ConnectPolicy {
            attempt_timeout: Duration::from_secs(1),
            retries: 2,
        };
        let err = connect(
            &Peer::Tcp(addr),
            "",
            &policy,
            &SocketOptions::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!("cannot reach {addr}: connection refused (after ")),
            "{err}"
        );
        assert!(err.ends_with(", 3 attempts)"), "{err}");
    }

    #[test]
    fn a_silent_server_is_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let policy = ConnectPolicy {
            attempt_timeout: Duration::from_millis(300),
            retries: 0,
        };
        let start = Instant::now();
        let err = connect(
            &Peer::Tcp(addr),
            "",
            &policy,
            &SocketOptions::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            err.contains("timed out while reading the server greeting"),
            "{err}"
        );
        drop(listener);
    }

    #[test]
    fn socket_options_are_applied() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = Peer::Tcp(listener.local_addr().unwrap());
        tune(&s, &peer, &SocketOptions::default()).unwrap();
        assert!(nix::sys::socket::getsockopt(&s, sockopt::TcpNoDelay).unwrap());
        assert!(nix::sys::socket::getsockopt(&s, sockopt::KeepAlive).unwrap());
        assert_eq!(
            nix::sys::socket::getsockopt(&s, sockopt::TcpKeepIdle).unwrap(),
            10
        );
        assert_eq!(
            nix::sys::socket::getsockopt(&s, sockopt::TcpKeepInterval).unwrap(),
            5
        );
        assert_eq!(
            nix::sys::socket::getsockopt(&s, sockopt::TcpKeepCount).unwrap(),
            3
        );
        assert_eq!(
            nix::sys::socket::getsockopt(&s, sockopt::TcpUserTimeout).unwrap(),
            30_000
        );
        let off = SocketOptions {
            keepalive: None,
            user_timeout: None,
        };
        let s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        tune(&s, &peer, &off).unwrap();
        assert!(!nix::sys::socket::getsockopt(&s, sockopt::KeepAlive).unwrap());
    }
}
