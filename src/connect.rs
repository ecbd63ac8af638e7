//! Reaching an NBD server: TCP connect and handshake, each attempt bounded in time, retried
//! with backoff while the failure may be transient.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cmdline::{ConnectPolicy, Host, NbdSpec};
use crate::proto::{self, Export, HandshakeError};

/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve \"{host}\": {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot reach {addr}: {reason} (after {secs:.1} s, {attempts} attempts)")]
    Unreachable {
        addr: String,
        reason: String,
        secs: f64,
        attempts: u32,
    },
    #[error("export \"{export}\" not found on {addr}: {message}")]
    UnknownExport {
        export: String,
        addr: String,
        message: String,
    },
    #[error("NBD handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        source: HandshakeError,
    },
    #[error("cannot set socket option {option} for {addr}: {source}")]
    SocketOption {
        option: &'static str,
        addr: String,
        source: io::Error,
    },
}

/// A negotiated connection, ready for the transmission phase.
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    pub export: Export,
    pub peer: SocketAddr,
}

/// Resolves the server once; the address is kept for reconnects (no DNS after boot).
pub fn resolve(spec: &NbdSpec) -> Result<SocketAddr, ConnectError> {
    match &spec.host {
        Host::Ip(ip) => Ok(SocketAddr::new(*ip, spec.port)),
        Host::Name(name) => (name.as_str(), spec.port)
            .to_socket_addrs()
            .and_then(|mut a| a.next().ok_or_else(|| io::Error::other("no address found")))
            .map_err(|source| ConnectError::Resolve {
                host: name.clone(),
                source,
            }),
    }
}

/// One bounded attempt: connect within `timeout`, then negotiate within `timeout`.
pub fn attempt(
    addr: SocketAddr,
    export: &str,
    timeout: Duration,
) -> Result<Connection, AttemptError> {
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(AttemptError::Connect)?;
    let opt = |option, r: io::Result<()>| {
        r.map_err(|source| {
            AttemptError::Fatal(ConnectError::SocketOption {
                option,
                addr: addr.to_string(),
                source,
            })
        })
    };
    opt("TCP_NODELAY", stream.set_nodelay(true))?;
    opt("SO_RCVTIMEO", stream.set_read_timeout(Some(timeout)))?;
    opt("SO_SNDTIMEO", stream.set_write_timeout(Some(timeout)))?;
    let mut s = &stream;
    let export = proto::negotiate(&mut s, export).map_err(|e| classify(addr, e))?;
    // The kernel (or a long-lived client) owns the socket from here: no userspace timeouts.
    opt("SO_RCVTIMEO", stream.set_read_timeout(None))?;
    opt("SO_SNDTIMEO", stream.set_write_timeout(None))?;
    Ok(Connection {
        stream,
        export,
        peer: addr,
    })
}

/// Why one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// TCP could not connect: worth retrying.
    Connect(io::Error),
    /// The server went away or stalled mid-handshake: worth retrying.
    Transient(HandshakeError),
    /// The server answered, and the answer will not change.
    Fatal(ConnectError),
}

fn classify(addr: SocketAddr, e: HandshakeError) -> AttemptError {
    match e {
        HandshakeError::Closed { .. }
        | HandshakeError::TimedOut { .. }
        | HandshakeError::Io { .. } => AttemptError::Transient(e),
        HandshakeError::UnknownExport { export, message } => {
            AttemptError::Fatal(ConnectError::UnknownExport {
                export,
                addr: addr.to_string(),
                message,
            })
        }
        e => AttemptError::Fatal(ConnectError::Handshake {
            addr: addr.to_string(),
            source: e,
        }),
    }
}

/// Connects and negotiates, retrying transient failures as the policy allows.
pub fn connect(
    addr: SocketAddr,
    export: &str,
    policy: &ConnectPolicy,
) -> Result<Connection, ConnectError> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reason = match attempt(addr, export, policy.attempt_timeout) {
            Ok(c) => return Ok(c),
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Connect(e)) => describe_io(&e),
            Err(AttemptError::Transient(e)) => e.to_string(),
        };
        if attempts > policy.retries {
            return Err(ConnectError::Unreachable {
                addr: addr.to_string(),
                reason,
                secs: start.elapsed().as_secs_f64(),
                attempts,
            });
        }
        log::warn!("{addr}: {reason}; retrying in {} ms", backoff.as_millis());
        sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
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
            words.to_lowercase()
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
        let err = connect(addr, "", &policy).unwrap_err().to_string();
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
        let err = connect(addr, "", &policy).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            err.contains("timed out while reading the server greeting"),
            "{err}"
        );
        drop(listener);
    }
}
