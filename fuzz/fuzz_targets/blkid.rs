//! Filesystem superblocks and partition tables: the first bytes of whatever the NBD server
//! exports, read by `blkid::probe` (TYPE, LABEL, UUID) and `blkid::partuuid`.
//!
//! The signatures sit at fixed offsets from 0 to 68 KiB, most in the first 16 KiB and btrfs's
//! at 64 KiB. To keep inputs small, one is the device's head with the gap between them left
//! out: its first 16 KiB are the device's first 16 KiB, the rest goes from 60 KiB on, and
//! the bytes in between are zero.
//!
//! Beyond "no panic": a found filesystem has a known type, and its label and UUID are spelled
//! as blkid spells them; a PARTUUID has GPT's or MBR's form, with the partition number.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nbdroot::blkid::{self, HEAD_BYTES};

/// The first part of an input, at the start of the device.
const LOW: usize = 16 << 10;
/// Where the rest of an input goes.
const HIGH: usize = 60 << 10;

fuzz_target!(|data: &[u8]| {
    let head = unfold(data);
    if let Some(info) = blkid::probe(&head) {
        let known = ["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap"];
        assert!(known.contains(&info.fstype), "{info:?}");
        if let Some(label) = &info.label {
            assert!(!label.is_empty() && !label.contains('\0'), "{info:?}");
            assert_eq!(label.trim_end(), label, "{info:?}");
        }
        match (info.fstype, &info.uuid) {
            (_, None) => {}
            ("vfat", Some(u)) => assert!(is_fat_serial(u), "{info:?}"),
            (_, Some(u)) => assert!(is_uuid(u), "{info:?}"),
        }
        // A FAT volume serial is always there, even 0000-0000.
        assert!(info.fstype != "vfat" || info.uuid.is_some(), "{info:?}");
    }
    assert_eq!(blkid::partuuid(&head, 0), None);
    for n in 1..=5u32 {
        let Some(p) = blkid::partuuid(&head, n) else {
            continue;
        };
        let mbr = format!("-{n:02x}");
        assert!(
            is_uuid(&p) || (p.len() == 11 && p.ends_with(&mbr) && is_hex(&p[..8])),
            "partition {n}: {p}"
        );
    }
});

/// The device head an input stands for.
fn unfold(data: &[u8]) -> Vec<u8> {
    let (low, high) = data.split_at(data.len().min(LOW));
    if high.is_empty() {
        return low.to_vec();
    }
    let mut head = vec![0; HIGH + high.len()];
    head[..LOW].copy_from_slice(low);
    head[HIGH..].copy_from_slice(high);
    head.truncate(HEAD_BYTES as usize);
    head
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase, not all zeroes.
fn is_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| is_hex(g))
        && u.bytes().any(|b| b != b'0' && b != b'-')
}

/// `XXXX-XXXX`, uppercase, as blkid prints a FAT volume serial.
fn is_fat_serial(u: &str) -> bool {
    u.len() == 9
        && u.as_bytes()[4] == b'-'
        && u.bytes()
            .enumerate()
            .all(|(i, b)| i == 4 || b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}
