//! Whether the export a reconnect found may replace the one the kernel was given.
//!
//! RECONFIGURE only swaps sockets: the kernel keeps the size and transmission flags it got at
//! CONNECT and goes on acting on them. A server that comes back with another size is another
//! disk (or a resized one, whose end the filesystem does not know); one that no longer
//! accepts a request the kernel still sends would fail it, or drop the connection and start
//! the reconnect over. Both are refused, loudly, and retried: the server may be fixed before
//! the dead-connection timeout, and then I/O resumes as if nothing happened.
//!
//! Flag changes that do not matter are let through: a capability gained, the server now
//! writable under a read-only device, ROTATIONAL (a hint for the I/O scheduler), and DF,
//! CACHE and FAST_ZERO, which the kernel never sends.

use crate::proto::consts::{
    TFLAG_CAN_MULTI_CONN, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH, TFLAG_SEND_FUA, TFLAG_SEND_TRIM,
    TFLAG_SEND_WRITE_ZEROES,
};

/// Requests the kernel sends when the flags it got at CONNECT allowed them.
const SENT: [(u16, &str); 4] = [
    (TFLAG_SEND_FLUSH, "FLUSH"),
    (TFLAG_SEND_FUA, "FUA"),
    (TFLAG_SEND_TRIM, "TRIM"),
    (TFLAG_SEND_WRITE_ZEROES, "WRITE_ZEROES"),
];

/// What the kernel was given at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub size: u64,
    /// Transmission flags handed to the kernel (READ_ONLY included when the device was made
    /// read-only). `None` when the supervisor was not told them: then only the size and the
    /// connection count are checked.
    pub flags: Option<u16>,
    pub connections: usize,
}

/// What a reconnect negotiated (every connection of it saw the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub size: u64,
    pub flags: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the export is now {now} bytes, not {was}: refusing to reattach it")]
    Size { was: u64, now: u64 },
    #[error("the export is now read-only, but the device was attached writable: refusing to reattach it")]
    ReadOnly,
    #[error(
        "the export no longer supports {0}, which the kernel still sends: refusing to reattach it"
    )]
    Lost(String),
    #[error(
        "the export no longer allows {0} connections (no CAN_MULTI_CONN): refusing to reattach it"
    )]
    MultiConn(usize),
}

/// Accepts `offer` in place of the export the kernel was given, or says why not.
pub fn check(attached: &Attached, offer: &Offer) -> Result<(), Refusal> {
    if offer.size != attached.size {
        return Err(Refusal::Size {
            was: attached.size,
            now: offer.size,
        });
    }
    // The kernel would not have taken several sockets without it; the connections' writes
    // are only coherent with it.
    if attached.connections > 1 && offer.flags & TFLAG_CAN_MULTI_CONN == 0 {
        return Err(Refusal::MultiConn(attached.connections));
    }
    let Some(was) = attached.flags else {
        return Ok(());
    };
    if was & TFLAG_READ_ONLY == 0 && offer.flags & TFLAG_READ_ONLY != 0 {
        return Err(Refusal::ReadOnly);
    }
    let lost: Vec<&str> = SENT
        .iter()
        .filter(|(flag, _)| was & flag != 0 && offer.flags & flag == 0)
        .map(|(_, name)| *name)
        .collect();
    if !lost.is_empty() {
        return Err(Refusal::Lost(lost.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::{
        TFLAG_HAS_FLAGS, TFLAG_ROTATIONAL, TFLAG_SEND_CACHE, TFLAG_SEND_DF, TFLAG_SEND_FAST_ZERO,
    };

    const MIB64: u64 = 64 << 20;
    /// Everything a modern server (qemu-nbd on a raw image) offers.
    const QEMU: u16 = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES
        | TFLAG_SEND_DF
        | TFLAG_CAN_MULTI_CONN
        | TFLAG_SEND_CACHE
        | TFLAG_SEND_FAST_ZERO;

    fn attached(flags: Option<u16>, connections: usize) -> Attached {
        Attached {
            size: MIB64,
            flags,
            connections,
        }
    }

    fn offer(size: u64, flags: u16) -> Offer {
        Offer { size, flags }
    }

    #[test]
    fn the_same_export_is_accepted() {
        assert_eq!(check(&attached(Some(QEMU), 4), &offer(MIB64, QEMU)), Ok(()));
        assert_eq!(check(&attached(None, 1), &offer(MIB64, 0)), Ok(()));
    }

    #[test]
    fn another_size_names_both() {
        let err = check(&attached(Some(QEMU), 1), &offer(MIB64 + (1 << 20), QEMU)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the export is now 68157440 bytes, not 67108864: refusing to reattach it"
        );
        // Without known flags too: the size is always known.
        let err = check(&attached(None, 1), &offer(MIB64 - 512, QEMU)).unwrap_err();
        assert_eq!(
            err,
            Refusal::Size {
                was: MIB64,
                now: MIB64 - 512
            }
        );
    }

    #[test]
    fn read_only_matters_only_under_a_writable_device() {
        let ro = QEMU | TFLAG_READ_ONLY;
        assert_eq!(
            check(&attached(Some(QEMU), 1), &offer(MIB64, ro)),
            Err(Refusal::ReadOnly)
        );
        assert_eq!(
            Refusal::ReadOnly.to_string(),
            "the export is now read-only, but the device was attached writable: refusing to reattach it"
        );
        // Attached read-only: the kernel sends no writes, whatever the server says now.
        assert_eq!(check(&attached(Some(ro), 1), &offer(MIB64, ro)), Ok(()));
        assert_eq!(check(&attached(Some(ro), 1), &offer(MIB64, QEMU)), Ok(()));
    }

    #[test]
    fn requests_the_kernel_still_sends_must_stay_supported() {
        let lost = QEMU & !(TFLAG_SEND_FLUSH | TFLAG_SEND_TRIM);
        let err = check(&attached(Some(QEMU), 1), &offer(MIB64, lost)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the export no longer supports FLUSH, TRIM, which the kernel still sends: refusing to reattach it"
        );
        for (flag, name) in SENT {
            assert_eq!(
                check(&attached(Some(QEMU), 1), &offer(MIB64, QEMU & !flag)),
                Err(Refusal::Lost(name.into()))
            );
            // Never given to the kernel: never sent, so not missed.
            assert_eq!(
                check(
                    &attached(Some(QEMU & !flag), 1),
                    &offer(MIB64, QEMU & !flag)
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn hints_unused_requests_and_gains_pass() {
        let attached = attached(Some(QEMU | TFLAG_ROTATIONAL), 1);
        let fewer = QEMU & !(TFLAG_SEND_DF | TFLAG_SEND_CACHE | TFLAG_SEND_FAST_ZERO);
        assert_eq!(check(&attached, &offer(MIB64, fewer)), Ok(()));
        let plain = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA;
        let minimal = Attached {
            flags: Some(plain),
            ..attached
        };
        assert_eq!(check(&minimal, &offer(MIB64, QEMU)), Ok(()));
    }

    #[test]
    fn several_connections_need_multi_conn_still() {
        let single = QEMU & !TFLAG_CAN_MULTI_CONN;
        let err = check(&attached(None, 4), &offer(MIB64, single)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the export no longer allows 4 connections (no CAN_MULTI_CONN): refusing to reattach it"
        );
        assert_eq!(
            check(&attached(Some(QEMU), 1), &offer(MIB64, single)),
            Ok(())
        );
    }
}
