//! Replica servers: several servers exporting the same image, whose connections share one nbd
//! device. The kernel keeps several sockets per device when the export allows
//! multi-connection, and moves a dead socket's requests to a live one; nothing in the kernel
//! checks that the sockets reach the same data, so this module does, before attaching.
//!
//! Pure decisions here (what counts as the same export, which connection goes to which
//! server, when failover is allowed, each server's state); the sockets are in [`probe`].

pub mod probe;

use std::fmt;

use crate::proto::consts::{TFLAG_CAN_MULTI_CONN, TFLAG_READ_ONLY};

/// Seconds since the epoch, for the "since" of each server's state (0 if the clock is unset).
pub fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many blocks the fingerprint reads: the first, the last, and evenly spread ones.
pub const SAMPLES: u64 = 8;
/// The size of each block read for the fingerprint.
pub const SAMPLE_LEN: u64 = 4096;

/// What identifies an export, as one server serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub flags: u16,
    /// A hash of the sampled blocks ([`sample_offsets`]).
    pub fingerprint: u64,
}

/// How a replica's export differs from the reference one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("size {theirs} bytes, not {ours}")]
    Size { ours: u64, theirs: u64 },
    #[error("transmission flags {theirs:#06x}, not {ours:#06x}")]
    Flags { ours: u16, theirs: u16 },
    #[error("different data in the sampled blocks (fingerprint {theirs:016x}, not {ours:016x})")]
    Blocks { ours: u64, theirs: u64 },
}

/// Whether `other` serves the same export as `reference`: size, then flags, then data.
pub fn compare(reference: &Identity, other: &Identity) -> Result<(), Mismatch> {
    if reference.size != other.size {
        return Err(Mismatch::Size {
            ours: reference.size,
            theirs: other.size,
        });
    }
    if reference.flags != other.flags {
        return Err(Mismatch::Flags {
            ours: reference.flags,
            theirs: other.flags,
        });
    }
    if reference.fingerprint != other.fingerprint {
        return Err(Mismatch::Blocks {
            ours: reference.fingerprint,
            theirs: other.fingerprint,
        });
    }
    Ok(())
}

/// The `(offset, length)` of the blocks to fingerprint an export of `size` bytes: the first,
/// the last, and the rest evenly spread between them, aligned to [`SAMPLE_LEN`]; fewer when
/// the export is small. Empty for an empty export.
pub fn sample_offsets(size: u64) -> Vec<(u64, u32)> {
    if size == 0 {
        return Vec::new();
    }
    let len = size.min(SAMPLE_LEN);
    let last = size - len;
    let mut out: Vec<(u64, u32)> = (0..SAMPLES)
        .map(|i| {
            let at = if i + 1 == SAMPLES {
                last
            } else {
                (last / (SAMPLES - 1) * i) / SAMPLE_LEN * SAMPLE_LEN
            };
            (at, len as u32)
        })
        .collect();
    out.dedup();
    out
}

/// The server of each of `count` connections, spread round-robin over the servers that
/// answered (`live`, indices into the server list). Empty when none answered.
pub fn assign(count: usize, live: &[usize]) -> Vec<usize> {
    if live.is_empty() {
        return Vec::new();
    }
    (0..count).map(|i| live[i % live.len()]).collect()
}

/// How many connections a device with `servers` servers gets: at least one per server, so
/// that each can hold one and a dead one always has a live fallback.
pub fn connection_count(asked: usize, servers: usize) -> usize {
    asked.max(servers).max(1)
}

/// Why replicas cannot be used for an export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("replicas {servers}: the export is writable, and failover between servers that do not share storage would lose or mix writes; declare shared storage (rd.nbdroot.replicas.shared=1, connect --replicas-shared) or attach read-only (ro in nbdopts, connect --readonly)")]
    Writable { servers: String },
    #[error("replica {server}: the export does not allow several connections (no CAN_MULTI_CONN flag), which replicas need")]
    NoMultiConn { server: String },
    #[error("no server answered: {tried}")]
    NoneAnswered { tried: String },
}

/// Whether connections may move between servers: always for a read-only device; for a
/// writable one only when the user declared that the servers share their storage.
pub fn failover_allowed(
    flags: u16,
    read_only: bool,
    shared_storage: bool,
    servers: &[String],
) -> Result<(), ReplicaError> {
    if read_only || flags & TFLAG_READ_ONLY != 0 || shared_storage {
        return Ok(());
    }
    Err(ReplicaError::Writable {
        servers: servers.join(", "),
    })
}

/// Replicas need several sockets per device.
pub fn check_multi_conn(flags: u16, server: &str) -> Result<(), ReplicaError> {
    if flags & TFLAG_CAN_MULTI_CONN == 0 {
        return Err(ReplicaError::NoMultiConn {
            server: server.to_string(),
        });
    }
    Ok(())
}

/// One server's state, as `nbdroot status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Answered last time, with the same export: it takes dead connections.
    Connected,
    /// Did not answer, or served something else: retried every few seconds.
    Reconnecting,
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Connected => "connected",
            ServerState::Reconnecting => "reconnecting",
        })
    }
}

/// Every server's state and since when (seconds since the epoch), in list order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Board {
    pub servers: Vec<(String, ServerState, u64)>,
}

impl Board {
    pub fn new(servers: impl IntoIterator<Item = (String, bool)>, now: u64) -> Self {
        let state = |up| {
            if up {
                ServerState::Connected
            } else {
                ServerState::Reconnecting
            }
        };
        Board {
            servers: servers
                .into_iter()
                .map(|(name, up)| (name, state(up), now))
                .collect(),
        }
    }

    /// Records what an attempt on server `i` found at `now`; true when its state changed.
    pub fn record(&mut self, i: usize, answered: bool, now: u64) -> bool {
        let Some(entry) = self.servers.get_mut(i) else {
            return false;
        };
        let state = if answered {
            ServerState::Connected
        } else {
            ServerState::Reconnecting
        };
        if entry.1 == state {
            return false;
        }
        entry.1 = state;
        entry.2 = now;
        true
    }

    /// The servers to try, those that answered last time first (a dead connection goes to
    /// a live server at once), each group in list order.
    pub fn order(&self) -> Vec<usize> {
        let (mut up, down): (Vec<usize>, Vec<usize>) =
            (0..self.servers.len()).partition(|&i| self.servers[i].1 == ServerState::Connected);
        up.extend(down);
        up
    }

    /// The servers that did not answer last time.
    pub fn down(&self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].1 == ServerState::Reconnecting)
            .collect()
    }

    /// `server.N=<addr> <state> since=<epoch secs>` lines for the status file.
    pub fn render(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, (name, state, since))| format!("server.{i}={name} {state} since={since}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::{TFLAG_HAS_FLAGS, TFLAG_SEND_FLUSH};

    const ID: Identity = Identity {
        size: 64 << 20,
        flags: TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN,
        fingerprint: 0xabcd,
    };

    #[test]
    fn exports_compare_by_size_then_flags_then_data() {
        assert_eq!(compare(&ID, &ID), Ok(()));
        let other = Identity {
            size: 32 << 20,
            flags: 0,
            fingerprint: 1,
        };
        assert_eq!(
            compare(&ID, &other).unwrap_err().to_string(),
            "size 33554432 bytes, not 67108864"
        );
        let other = Identity {
            flags: TFLAG_HAS_FLAGS,
            ..ID
        };
        assert_eq!(
            compare(&ID, &other).unwrap_err().to_string(),
            "transmission flags 0x0001, not 0x0103"
        );
        let other = Identity {
            fingerprint: 0x1234,
            ..ID
        };
        assert_eq!(
            compare(&ID, &other).unwrap_err().to_string(),
            "different data in the sampled blocks (fingerprint 0000000000001234, not 000000000000abcd)"
        );
    }

    #[test]
    fn samples_cover_first_last_and_between() {
        let s = sample_offsets(64 << 20);
        assert_eq!(s.len(), SAMPLES as usize);
        assert_eq!(s[0], (0, 4096));
        assert_eq!(*s.last().unwrap(), ((64 << 20) - 4096, 4096));
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0), "{s:?}");
        assert!(s.iter().all(|(o, _)| o % 4096 == 0));
        // Unaligned size: the last block ends at the end.
        let s = sample_offsets(1_000_000);
        assert_eq!(*s.last().unwrap(), (1_000_000 - 4096, 4096));
        // Smaller than one block: one read of all of it.
        assert_eq!(sample_offsets(100), vec![(0, 100)]);
        assert!(sample_offsets(0).is_empty());
    }

    #[test]
    fn connections_are_spread_round_robin() {
        assert_eq!(assign(4, &[0, 1]), vec![0, 1, 0, 1]);
        assert_eq!(assign(3, &[1, 2]), vec![1, 2, 1]);
        assert_eq!(assign(2, &[1]), vec![1, 1]);
        assert!(assign(2, &[]).is_empty());
        assert_eq!(connection_count(1, 2), 2);
        assert_eq!(connection_count(4, 2), 4);
        assert_eq!(connection_count(1, 1), 1);
    }

    #[test]
    fn writable_failover_needs_declared_shared_storage() {
        let servers = ["10.0.0.1:10809".to_string(), "10.0.0.2:10809".to_string()];
        let rw = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;
        let err = failover_allowed(rw, false, false, &servers).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("replicas 10.0.0.1:10809, 10.0.0.2:10809: the export is writable"));
        assert!(err.to_string().contains("rd.nbdroot.replicas.shared=1"));
        assert_eq!(failover_allowed(rw, false, true, &servers), Ok(()));
        assert_eq!(failover_allowed(rw, true, false, &servers), Ok(()));
        assert_eq!(
            failover_allowed(rw | TFLAG_READ_ONLY, false, false, &servers),
            Ok(())
        );
        assert!(check_multi_conn(rw, "a:1").is_err());
        assert_eq!(check_multi_conn(ID.flags, "a:1"), Ok(()));
    }

    #[test]
    fn the_board_tracks_states_and_orders_live_servers_first() {
        let mut b = Board::new([("a:1".into(), false), ("b:1".into(), true)], 100);
        assert_eq!(b.order(), vec![1, 0]);
        assert_eq!(b.down(), vec![0]);
        assert!(!b.record(1, true, 150));
        assert!(b.record(0, true, 160));
        assert_eq!(b.order(), vec![0, 1]);
        assert!(b.record(1, false, 170));
        assert_eq!(
            b.render(),
            "server.0=a:1 connected since=160\nserver.1=b:1 reconnecting since=170\n"
        );
        assert!(!b.record(5, true, 1));
    }
}
