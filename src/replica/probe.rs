//! The sockets side of replicas: reach every server, fingerprint its export through the
//! negotiated socket, refuse the ones that differ, and open the device's connections spread
//! over the servers that answered.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::thread::sleep;
use std::time::Duration;

use super::{Board, Identity, ReplicaError};
use crate::connect::{self, ConnectError, Connection, Peer};
use crate::proto::{Client, TransmissionError};
use crate::settings::{ConnectPolicy, SocketOptions, FIRST_BACKOFF, MAX_BACKOFF};
use crate::tls::Client as TlsClient;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "{server}: reading {len} bytes at offset {offset} for the export's fingerprint: {source}"
    )]
    Read {
        server: String,
        offset: u64,
        len: u32,
        source: TransmissionError,
    },
    #[error("{server}: cannot bound the fingerprint reads: {source}")]
    Timeout {
        server: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("replica {server} refused: {mismatch}; it serves another export than {reference}")]
    Differs {
        server: String,
        reference: String,
        mismatch: super::Mismatch,
    },
}

/// Reads the sampled blocks through `conn` (each read bounded by `timeout`) and hands the
/// connection back with its export's identity. The hash is std's SipHash with fixed keys:
/// the same in every nbdroot process of one build, which is all a comparison needs.
pub fn fingerprint(
    conn: Connection,
    timeout: Duration,
) -> Result<(Connection, Identity), ProbeError> {
    let Connection {
        stream,
        export,
        peer,
    } = conn;
    let server = peer.to_string();
    let bound = |stream: &connect::Stream, t| {
        stream
            .set_timeouts(t)
            .map_err(|source| ProbeError::Timeout {
                server: server.clone(),
                source,
            })
    };
    bound(&stream, Some(timeout))?;
    let mut client = Client::new(stream, export.clone());
    let mut hash = DefaultHasher::new();
    for (offset, len) in super::sample_offsets(export.size) {
        let mut buf = vec![0u8; len as usize];
        client
            .read(offset, &mut buf)
            .map_err(|source| ProbeError::Read {
                server: server.clone(),
                offset,
                len,
                source,
            })?;
        hash.write(&buf);
    }
    let stream = client.into_stream();
    bound(&stream, None)?;
    let identity = Identity {
        size: export.size,
        flags: export.flags,
        fingerprint: hash.finish(),
    };
    Ok((
        Connection {
            stream,
            export,
            peer,
        },
        identity,
    ))
}

/// One bounded attempt on `peer`: connect, negotiate, fingerprint. With TLS the session is
/// in kernel TLS before the fingerprint reads, which the kernel then encrypts: the socket
/// the device gets has no TLS record left unread in userspace.
pub fn probe(
    peer: &Peer,
    export: &str,
    timeout: Duration,
    opts: &SocketOptions,
    tls: Option<&TlsClient>,
) -> Result<(Connection, Identity), ProbeError> {
    let once = ConnectPolicy {
        attempt_timeout: timeout,
        retries: 0,
    };
    let conn = connect::connect_for_kernel(peer, export, &once, opts, tls)?;
    fingerprint(conn, timeout)
}

/// What [`gather`] found.
#[derive(Debug)]
pub struct Gathered {
    /// The device's connections, in slot order.
    pub conns: Vec<Connection>,
    /// The export as the first server that answered serves it.
    pub identity: Identity,
    /// Every server's state (those that did not answer or differ: reconnecting).
    pub board: Board,
}

/// What to ask of [`gather`].
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The main server first, then the replicas.
    pub servers: &'a [Peer],
    pub export: &'a str,
    /// Connections asked for (at least one per server is made).
    pub connections: usize,
    pub policy: ConnectPolicy,
    pub socket: SocketOptions,
    /// The device is attached read-only whatever the server allows.
    pub read_only: bool,
    /// The user declared that the servers share their storage.
    pub shared_storage: bool,
    /// TLS for every connection to every server (each certificate checked for the client's
    /// one name).
    pub tls: Option<&'a TlsClient>,
}

/// Reaches every server once per round (rounds as the policy's retries allow, until one
/// answers); a server that does not answer is left out with a warning, one that serves
/// another export is refused with an error line naming it. Then checks that failover is
/// allowed and opens the connections, spread round-robin over the servers that answered.
pub fn gather(ask: &Ask, now_epoch: u64) -> Result<Gathered, ProbeError> {
    let names: Vec<String> = ask.servers.iter().map(Peer::to_string).collect();
    let mut found: Vec<Option<(Connection, Identity)>> = Vec::new();
    let mut backoff = FIRST_BACKOFF;
    for round in 0..=ask.policy.retries {
        found = ask
            .servers
            .iter()
            .map(|peer| {
                match probe(
                    peer,
                    ask.export,
                    ask.policy.attempt_timeout,
                    &ask.socket,
                    ask.tls,
                ) {
                    Ok(found) => Some(found),
                    Err(e) if round == ask.policy.retries || round == 0 => {
                        log::warn!("replica {peer} left out for now: {e}");
                        None
                    }
                    Err(_) => None,
                }
            })
            .collect();
        if found.iter().any(Option::is_some) {
            break;
        }
        if round < ask.policy.retries {
            sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    let Some(reference) = found.iter().flatten().map(|(_, id)| *id).next() else {
        return Err(ReplicaError::NoneAnswered {
            tried: names.join(", "),
        }
        .into());
    };
    let reference_name = found
        .iter()
        .zip(&names)
        .find_map(|(f, n)| f.as_ref().map(|_| n.clone()))
        .unwrap_or_default();
    super::failover_allowed(reference.flags, ask.read_only, ask.shared_storage, &names)?;
    let mut firsts: Vec<Option<Connection>> = Vec::new();
    for (i, f) in found.into_iter().enumerate() {
        firsts.push(match f {
            Some((conn, id)) => match super::compare(&reference, &id) {
                Ok(()) => Some(conn),
                Err(mismatch) => {
                    log::error!(
                        "{}",
                        ProbeError::Differs {
                            server: names[i].clone(),
                            reference: reference_name.clone(),
                            mismatch,
                        }
                    );
                    None
                }
            },
            None => None,
        });
    }
    let live: Vec<usize> = (0..firsts.len()).filter(|&i| firsts[i].is_some()).collect();
    let count = super::connection_count(ask.connections, ask.servers.len());
    if count > 1 {
        super::check_multi_conn(reference.flags, &reference_name)?;
    }
    let board = Board::new(
        names
            .iter()
            .cloned()
            .zip(firsts.iter().map(Option::is_some)),
        now_epoch,
    );
    let mut conns = Vec::with_capacity(count);
    for server in super::assign(count, &live) {
        let conn = match firsts[server].take() {
            Some(c) => c,
            None => {
                let c = connect::connect_for_kernel(
                    &ask.servers[server],
                    ask.export,
                    &ask.policy,
                    &ask.socket,
                    ask.tls,
                )?;
                if (c.export.size, c.export.flags) != (reference.size, reference.flags) {
                    return Err(ConnectError::Inconsistent {
                        peer: names[server].clone(),
                        index: conns.len(),
                        size: c.export.size,
                        flags: c.export.flags,
                    }
                    .into());
                }
                c
            }
        };
        conns.push(conn);
    }
    Ok(Gathered {
        conns,
        identity: reference,
        board,
    })
}
