//! Which filesystem a block device holds, and its LABEL and UUID, read from the device's first
//! bytes: enough to resolve `root=LABEL=…`, `UUID=…` and `PARTUUID=…` without udev or libblkid.
//! Labels and UUIDs are spelled as `blkid` prints them.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How much of a device [`probe`] looks at: the btrfs superblock ends at 68 KiB.
pub const HEAD_BYTES: u64 = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// As blkid's TYPE: `ext2`, `ext3`, `ext4`, `xfs`, `btrfs`, `vfat`, `swap`.
    pub fstype: &'static str,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlkidError {
    #[error("root={spec}: expected LABEL=<label>, UUID=<uuid> or PARTUUID=<uuid>")]
    Spec { spec: String },
    #[error("looking for {spec}: cannot read {path}: {source}")]
    Read {
        spec: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// Identifies the filesystem whose first bytes are `buf` (pass [`HEAD_BYTES`] of them).
/// Short or garbage input gives `None`.
pub fn probe(buf: &[u8]) -> Option<FsInfo> {
    // Swap first: mkswap keeps the first KiB, so an old boot sector may still be there.
    swap(buf)
        .or_else(|| xfs(buf))
        .or_else(|| ext(buf))
        .or_else(|| btrfs(buf))
        .or_else(|| vfat(buf))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A NUL-padded label; trailing blanks dropped, as blkid does; empty is none.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`; all zeroes is no UUID.
fn uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&c| c == 0) {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, c) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{c:02x}"));
    }
    Some(s)
}

fn info(fstype: &'static str, b: &[u8], label_at: (usize, usize), uuid_at: usize) -> FsInfo {
    FsInfo {
        fstype,
        label: b.get(label_at.0..label_at.0 + label_at.1).and_then(label),
        uuid: b.get(uuid_at..uuid_at + 16).and_then(uuid),
    }
}

fn xfs(b: &[u8]) -> Option<FsInfo> {
    // Big-endian superblock at 0: magic, …, sb_uuid at 32, sb_fname[12] at 108.
    (b.get(..4)? == b"XFSB" && b.len() >= 120).then(|| info("xfs", b, (108, 12), 32))
}

fn ext(b: &[u8]) -> Option<FsInfo> {
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    // What ext2/ext3 drivers know: filetype, recover, meta_bg / sparse_super, large_file,
    // btree_dir. Anything more (extents, 64bit, flex_bg, metadata_csum, …) needs ext4.
    const INCOMPAT_EXT3: u32 = 0x2 | 0x4 | 0x10;
    const RO_COMPAT_EXT3: u32 = 0x1 | 0x2 | 0x4;
    let sb = b.get(1024..1024 + 0x88)?;
    if le16(sb, 0x38)? != 0xEF53 {
        return None;
    }
    let (compat, incompat, ro) = (le32(sb, 0x5C)?, le32(sb, 0x60)?, le32(sb, 0x64)?);
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return None; // an external journal, not a filesystem
    }
    let fstype = if incompat & !INCOMPAT_EXT3 != 0 || ro & !RO_COMPAT_EXT3 != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    // s_uuid at 0x68, s_volume_name[16] at 0x78.
    Some(info(fstype, sb, (0x78, 16), 0x68))
}

fn btrfs(b: &[u8]) -> Option<FsInfo> {
    // Superblock at 64 KiB: fsid at 0x20, magic at 0x40, label[256] at 0x12b.
    let sb = b.get(0x10000..0x10000 + 0x12b + 256)?;
    (&sb[0x40..0x48] == b"_BHRfS_M").then(|| info("btrfs", sb, (0x12b, 256), 0x20))
}

fn swap(b: &[u8]) -> Option<FsInfo> {
    // The signature ends the first page, whatever the page size of the machine that made it;
    // version 1 headers hold the UUID at 1036 and the label at 1052.
    [4096, 8192, 16384, 65536]
        .iter()
        .find_map(|&page| match b.get(page - 10..page)? {
            b"SWAPSPACE2" => Some(info("swap", b, (1052, 16), 1036)),
            b"SWAP-SPACE" => Some(FsInfo {
                fstype: "swap",
                label: None,
                uuid: None,
            }),
            _ => None,
        })
}

fn vfat(b: &[u8]) -> Option<FsInfo> {
    let bs = b.get(..512)?;
    let sane = bs[510..] == [0x55, 0xAA]
        && matches!(le16(bs, 11)?, 512 | 1024 | 2048 | 4096)
        && bs[13].is_power_of_two()
        && le16(bs, 14)? > 0
        && matches!(bs[16], 1 | 2);
    // FAT32 has no 16-bit FAT size and its extended BPB at 0x40 instead of 0x24.
    let ebpb = if le16(bs, 22)? == 0 { 0x40 } else { 0x24 };
    if !sane || &bs[ebpb + 0x12..ebpb + 0x15] != b"FAT" || bs[ebpb + 2] != 0x29 {
        return None;
    }
    // The boot sector's label; mkfs.vfat and fatlabel write the same one in the root directory,
    // which blkid prefers but which can lie beyond the bytes probed.
    let name = label(&bs[ebpb + 7..ebpb + 18]).filter(|l| l != "NO NAME");
    let serial = le32(bs, ebpb + 3)?;
    Some(FsInfo {
        fstype: "vfat",
        label: name,
        uuid: Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
    })
}

/// The PARTUUID of partition `number` (from 1) in the partition table at the start of a disk,
/// as blkid prints it: a GPT entry's unique GUID, or for MBR `<disk signature>-<NN>` (primary
/// partitions only).
pub fn partuuid(disk: &[u8], number: u32) -> Option<String> {
    let n = number.checked_sub(1)? as usize;
    for sector in [512usize, 4096] {
        let Some(hdr) = disk
            .get(sector..sector + 92)
            .filter(|h| &h[..8] == b"EFI PART")
        else {
            continue;
        };
        let (count, size) = (le32(hdr, 80)? as usize, le32(hdr, 84)? as usize);
        if n >= count || size < 128 {
            return None;
        }
        let at = usize::try_from(le64(hdr, 72)?)
            .ok()?
            .checked_mul(sector)?
            .checked_add(n.checked_mul(size)?)?;
        // The header's fields are the server's: a huge table LBA must not overflow.
        let entry = disk.get(at..at.checked_add(32)?)?;
        if entry[..16].iter().all(|&c| c == 0) {
            return None; // unused entry
        }
        // A GUID's first three fields are little-endian on disk.
        let mut g = entry[16..32].to_vec();
        g[..4].reverse();
        g[4..6].reverse();
        g[6..8].reverse();
        return uuid(&g);
    }
    let mbr = disk.get(..512)?;
    let used = n < 4 && mbr[510..] == [0x55, 0xAA] && mbr[446 + 16 * n + 4] != 0;
    used.then(|| format!("{:08x}-{:02x}", le32(mbr, 440).unwrap_or(0), number))
}

/// The device among `candidates` that `spec` (`LABEL=x`, `UUID=x`, `PARTUUID=x`) names.
/// UUIDs compare case-insensitively, labels exactly. A device that cannot be read is an error
/// only when no other one matches.
pub fn resolve(spec: &str, candidates: &[PathBuf]) -> Result<Option<PathBuf>, BlkidError> {
    resolve_in(spec, candidates, Path::new("/sys/class/block"))
}

fn resolve_in(
    spec: &str,
    candidates: &[PathBuf],
    sys_block: &Path,
) -> Result<Option<PathBuf>, BlkidError> {
    let (key, want) = match spec.split_once('=') {
        Some((k @ ("LABEL" | "UUID" | "PARTUUID"), v)) if !v.trim_matches('"').is_empty() => {
            (k, v.trim_matches('"'))
        }
        _ => return Err(BlkidError::Spec { spec: spec.into() }),
    };
    let head = |path: &Path| -> Result<Vec<u8>, BlkidError> {
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|f| f.take(HEAD_BYTES).read_to_end(&mut buf))
            .map_err(|source| BlkidError::Read {
                spec: spec.into(),
                path: path.into(),
                source,
            })?;
        Ok(buf)
    };
    let same_uuid = |u: Option<String>| u.is_some_and(|u| u.eq_ignore_ascii_case(want));
    let mut failed = None;
    for dev in candidates {
        let found = match key {
            "LABEL" => head(dev).map(|b| probe(&b).and_then(|i| i.label).as_deref() == Some(want)),
            "UUID" => head(dev).map(|b| same_uuid(probe(&b).and_then(|i| i.uuid))),
            _ => match partition_of(dev, sys_block) {
                Some((disk, n)) => head(&disk).map(|b| same_uuid(partuuid(&b, n))),
                None => Ok(false),
            },
        };
        match found {
            Ok(true) => return Ok(Some(dev.clone())),
            Ok(false) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(None), Err)
}

/// The whole disk and partition number of a partition device, from sysfs: its entry links
/// into the disk's directory and holds a `partition` file.
fn partition_of(dev: &Path, sys_block: &Path) -> Option<(PathBuf, u32)> {
    let sys = sys_block.join(dev.file_name()?);
    let number = fs::read_to_string(sys.join("partition")).ok()?;
    let disk = fs::canonicalize(&sys)
        .ok()?
        .parent()?
        .file_name()?
        .to_owned();
    Some((dev.with_file_name(disk), number.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nbdroot-blkid-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs a tool the test needs; a missing one fails with the Debian package to install.
    fn tool(cmd: &str, args: &[&str], package: &str) -> String {
        let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {cmd} ({e}): install the Debian package {package}")
        });
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A sparse image of `mib` MiB made by `mkfs` with `args`.
    fn image(dir: &Path, name: &str, mib: u64, mkfs: &str, args: &[&str], pkg: &str) -> PathBuf {
        let img = dir.join(name);
        File::create(&img).unwrap().set_len(mib << 20).unwrap();
        let mut all = args.to_vec();
        all.push(img.to_str().unwrap());
        tool(mkfs, &all, pkg);
        img
    }

    fn head(img: &Path) -> Vec<u8> {
        let mut buf = Vec::new();
        File::open(img)
            .unwrap()
            .take(HEAD_BYTES)
            .read_to_end(&mut buf)
            .unwrap();
        buf
    }

    /// `blkid -o export`'s TYPE, LABEL and UUID for `img`.
    fn blkid(img: &Path) -> (String, Option<String>, Option<String>) {
        let out = tool(
            "blkid",
            &["-p", "-o", "export", img.to_str().unwrap()],
            "util-linux",
        );
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.replace("\\ ", " "))
        };
        (get("TYPE").unwrap(), get("LABEL"), get("UUID"))
    }

    #[test]
    fn agrees_with_blkid_on_images_made_by_the_real_tools() {
        let dir = scratch("images");
        let e2 = "e2fsprogs";
        let images = [
            image(&dir, "ext2", 8, "mkfs.ext2", &["-q", "-L", "bootfs"], e2),
            image(&dir, "ext3", 8, "mkfs.ext3", &["-q", "-L", "old root"], e2),
            image(&dir, "ext4", 8, "mkfs.ext4", &["-q", "-L", "nbdroot"], e2),
            image(&dir, "ext4-nolabel", 8, "mkfs.ext4", &["-q"], e2),
            image(
                &dir,
                "ext4-nojournal",
                8,
                "mkfs.ext4",
                &["-q", "-O", "^has_journal"],
                e2,
            ),
            // xfsprogs refuses filesystems below 300 MiB; the file is sparse.
            image(
                &dir,
                "xfs",
                300,
                "mkfs.xfs",
                &["-q", "-L", "xroot"],
                "xfsprogs",
            ),
            image(
                &dir,
                "btrfs",
                128,
                "mkfs.btrfs",
                &["-q", "-L", "broot"],
                "btrfs-progs",
            ),
            image(&dir, "fat16", 34, "mkfs.vfat", &["-n", "EFI"], "dosfstools"),
            image(
                &dir,
                "fat32",
                64,
                "mkfs.vfat",
                &["-F", "32", "-n", "ESP32"],
                "dosfstools",
            ),
            image(&dir, "fat-nolabel", 16, "mkfs.vfat", &[], "dosfstools"),
            image(
                &dir,
                "swap",
                8,
                "mkswap",
                &["-q", "-L", "swap0"],
                "util-linux",
            ),
        ];
        let mut types = Vec::new();
        for img in &images {
            let got =
                probe(&head(img)).unwrap_or_else(|| panic!("{}: no filesystem", img.display()));
            let (fstype, label, uuid) = blkid(img);
            assert_eq!(
                (got.fstype, &got.label, &got.uuid),
                (fstype.as_str(), &label, &uuid),
                "{}",
                img.display()
            );
            assert!(got.uuid.is_some(), "{}", img.display());
            types.push(got.fstype);
        }
        assert_eq!(
            types,
            [
                "ext2", "ext3", "ext4", "ext4", "ext4", "xfs", "btrfs", "vfat", "vfat", "vfat",
                "swap"
            ]
        );

        // resolve() over the images as candidates.
        let find = |spec: &str| resolve(spec, &images).unwrap();
        assert_eq!(find("LABEL=xroot"), Some(images[5].clone()));
        assert_eq!(find("LABEL=\"old root\""), Some(images[1].clone()));
        assert_eq!(find("LABEL=XROOT"), None, "labels compare exactly");
        let uuid = probe(&head(&images[6])).unwrap().uuid.unwrap();
        assert_eq!(
            find(&format!("UUID={}", uuid.to_uppercase())),
            Some(images[6].clone())
        );
        let fat = probe(&head(&images[8])).unwrap().uuid.unwrap();
        assert_eq!(
            find(&format!("UUID={}", fat.to_lowercase())),
            Some(images[8].clone())
        );
        assert_eq!(find("UUID=00000000-0000-0000-0000-000000000000"), None);
        // An unreadable device fails only when nothing else matches, and says which.
        let with_missing = [dir.join("missing"), images[2].clone()];
        assert_eq!(
            resolve("LABEL=nbdroot", &with_missing).unwrap(),
            Some(images[2].clone())
        );
        let err = resolve("LABEL=none", &with_missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "looking for LABEL=none: cannot read {}/missing: ",
                dir.display()
            )),
            "{err}"
        );
        for bad in ["/dev/nbd0", "LABEL=", "SERIAL=x", "label=x"] {
            let err = resolve(bad, &images).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("root={bad}: expected LABEL=")),
                "{err}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partuuids_agree_with_partx_and_resolve_through_sysfs() {
        let dir = scratch("parts");
        let mut uuids = Vec::new();
        for label in ["gpt", "dos"] {
            let img = dir.join(label);
            File::create(&img).unwrap().set_len(8 << 20).unwrap();
            let table = format!("label: {label}\n,2M\n,2M\n");
            let mut child = Command::new("sfdisk")
                .args(["-q", img.to_str().unwrap()])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run sfdisk ({e}): install the Debian package fdisk")
                });
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), table.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success(), "sfdisk {label}");
            let want = tool(
                "partx",
                &["-g", "-o", "NR,UUID", img.to_str().unwrap()],
                "util-linux",
            );
            let disk = head(&img);
            for line in want.lines() {
                let (nr, uuid) = line.trim().split_once(' ').unwrap();
                let got = partuuid(&disk, nr.parse().unwrap());
                assert_eq!(got.as_deref(), Some(uuid.trim()), "{label} partition {nr}");
                uuids.push(uuid.trim().to_string());
            }
            assert_eq!(partuuid(&disk, 3), None, "{label}: no third partition");
            assert_eq!(partuuid(&disk, 0), None);
        }
        assert_eq!(uuids.len(), 4);
        assert!(
            uuids[2].ends_with("-01") && uuids[3].ends_with("-02"),
            "{uuids:?}"
        );

        // A fake /sys/class/block: nbd0p2 links into nbd0's directory, as in sysfs.
        let sys = dir.join("sys");
        fs::create_dir_all(sys.join("devices/nbd0/nbd0p2")).unwrap();
        fs::write(sys.join("devices/nbd0/nbd0p2/partition"), "2\n").unwrap();
        fs::create_dir_all(sys.join("class")).unwrap();
        std::os::unix::fs::symlink("../devices/nbd0/nbd0p2", sys.join("class/nbd0p2")).unwrap();
        let dev = dir.join("dev");
        fs::create_dir_all(&dev).unwrap();
        fs::copy(dir.join("gpt"), dev.join("nbd0")).unwrap();
        let cands = [dev.join("nbd0"), dev.join("nbd0p2")];
        let spec = format!("PARTUUID={}", uuids[1].to_uppercase());
        assert_eq!(
            resolve_in(&spec, &cands, &sys.join("class")).unwrap(),
            Some(dev.join("nbd0p2"))
        );
        let spec = format!("PARTUUID={}", uuids[0]);
        assert_eq!(resolve_in(&spec, &cands, &sys.join("class")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A GPT header whose table sits at the very end of the address space (fuzzing found it:
    /// the entry's end overflowed).
    #[test]
    fn gpt_table_at_the_end_of_the_address_space_is_no_partition() {
        let mut disk = vec![0u8; 2048];
        disk[512..520].copy_from_slice(b"EFI PART");
        disk[512 + 72..512 + 80].copy_from_slice(&(u64::MAX / 512).to_le_bytes());
        disk[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        disk[512 + 84..512 + 88].copy_from_slice(&160u32.to_le_bytes());
        for n in 1..=4 {
            assert_eq!(partuuid(&disk, n), None, "partition {n}");
        }
    }

    #[test]
    fn short_and_garbage_input_never_panics() {
        let mut x = 0x9E37_79B9u32;
        for len in [
            0, 1, 511, 512, 1024, 1100, 1160, 4096, 65536, 0x10040, 0x10100, 131072,
        ] {
            for fill in [0x00u8, 0xFF, 0x55] {
                let mut buf = vec![fill; len];
                assert_eq!(probe(&buf), None, "len {len} fill {fill:#x}");
                let _ = partuuid(&buf, 1);
                // Pseudo-random bytes with real magics planted, cut at every interesting length.
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                for (at, magic) in [
                    (0, &b"XFSB"[..]),
                    (1024 + 0x38, &[0x53, 0xEF]),
                    (0x10040, b"_BHRfS_M"),
                    (4086, b"SWAPSPACE2"),
                    (510, &[0x55, 0xAA]),
                    (512, b"EFI PART"),
                ] {
                    if let Some(dst) = buf.get_mut(at..at + magic.len()) {
                        dst.copy_from_slice(magic);
                    }
                }
                let _ = probe(&buf);
                for n in 0..6 {
                    let _ = partuuid(&buf, n);
                }
            }
        }
    }
}
