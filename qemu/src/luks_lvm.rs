//! "LVM on LUKS" disk images made and read on the host without device-mapper (the host
//! kernel of the test machines may have none, and must not activate the test's volumes):
//! LVM writes only its metadata (`--driverloaded n`, no activation) on a loop device over the
//! plain image, the filesystem is copied to where the LV's extents are, and cryptsetup's
//! offline re-encryption encrypts the whole image in place in user space, putting the LUKS2
//! header in front. Reading it back decrypts a copy the same way, with a detached header.
//!
//! Every loop device is detached on every path (a guard); LVM keeps no backup or archive
//! of the test's VG in the host's /etc/lvm and sees only the test's own loop device.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{Context, Error, Result};

/// LUKS2 header space at the front of the image: cryptsetup's default (16 MiB); the
/// in-place encryption needs twice that free at the end of the plain image.
const HEADER_MIB: u64 = 16;
const MIB: u64 = 1024 * 1024;
/// The key file's name in the work directory, there only while cryptsetup runs.
const KEY_FILE: &str = "luks.key";
/// Spelled out: the detached header that reads the image back must match it.
const CIPHER: [&str; 6] = [
    "--cipher",
    "aes-xts-plain64",
    "--key-size",
    "512",
    "--sector-size",
    "512",
];
/// Cheap key derivation so the guest's unlock takes no noticeable time under emulation.
const PBKDF: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// The names and secrets of one layered image.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The LUKS2 container's UUID (what /etc/crypttab names).
    pub luks_uuid: String,
    /// The key file's bytes.
    pub key: Vec<u8>,
    pub vg: String,
    pub lv: String,
}

impl Layout {
    /// The LV's path once the guest activated it: `/dev/mapper/<vg>-<lv>`.
    pub fn mapper_path(&self) -> String {
        format!("/dev/mapper/{}-{}", self.vg, self.lv)
    }
}

/// A loop device, detached when dropped.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, offset: u64, size: Option<u64>) -> Result<Self> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset", &offset.to_string()]);
        if let Some(size) = size {
            cmd.args(["--sizelimit", &size.to_string()]);
        }
        cmd.arg(file);
        let out = command::run(
            &format!("attach {} to a loop device", file.display()),
            &mut cmd,
        )?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !dev.starts_with("/dev/loop") {
            return Err(Error::unexpected(
                "attach a loop device",
                format!("losetup printed {dev:?}"),
            ));
        }
        Ok(Loop(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// `lvm <args>` restricted to `dev`, without device-mapper, backups or archives.
fn lvm(step: &str, dev: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("lvm");
    cmd.args(args)
        .args(["--driverloaded", "n", "--devices", dev])
        .args(["--config", "backup { backup = 0 archive = 0 }"])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1");
    let out = command::run(step, &mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the LV's data starts on its PV `dev` and its size, in bytes: `pe_start` plus its
/// first extent; the LV must be one linear segment.
fn lv_offset(dev: &str, layout: &Layout) -> Result<(u64, u64)> {
    let step = "read the LV's place on its PV";
    let lv = format!("{}/{}", layout.vg, layout.lv);
    let units = ["--noheadings", "--units", "b", "--nosuffix"];
    let segs = lvm(
        step,
        dev,
        &[
            &["lvs", "--segments"][..],
            &units,
            &["-o", "seg_pe_ranges,lv_size,vg_extent_size", &lv],
        ]
        .concat(),
    )?;
    let pv = lvm(
        step,
        dev,
        &[&["pvs"][..], &units, &["-o", "pe_start", dev]].concat(),
    )?;
    let bad = || Error::unexpected(step, format!("lvs printed {segs:?}, pvs {pv:?}"));
    let fields: Vec<&str> = segs.split_whitespace().collect();
    let [ranges, size, extent] = fields.as_slice() else {
        return Err(bad());
    };
    let first: u64 = ranges
        .rsplit_once(':')
        .and_then(|(_, r)| r.split_once('-'))
        .and_then(|(a, _)| a.parse().ok())
        .ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    Ok((num(&pv)? + first * num(extent)?, num(size)?))
}

/// Writes to `out` an image holding LUKS2 (key `layout.key`), in it an LVM PV with VG
/// `layout.vg` and one LV `layout.lv`, on the LV the filesystem image `fs_image`. `work` holds
/// the key file while cryptsetup runs.
pub fn build(fs_image: &Path, out: &Path, layout: &Layout, work: &Path) -> Result<()> {
    let fs_bytes = fs::metadata(fs_image)
        .step(|| format!("stat {}", fs_image.display()))?
        .len();
    // The PV: 1 MiB of metadata, the filesystem rounded up to 4 MiB extents, and one spare.
    let pv_mib = 1 + fs_bytes.div_ceil(4 * MIB) * 4 + 4;
    let _ = fs::remove_file(out);
    fs::File::create(out)
        .and_then(|f| f.set_len((pv_mib + 2 * HEADER_MIB) * MIB))
        .step(|| format!("create {}", out.display()))?;
    let result = (|| {
        {
            let dev = Loop::attach(out, 0, None)?;
            let pv_size = format!("{pv_mib}m");
            lvm(
                "create the PV",
                &dev.0,
                &[
                    "pvcreate",
                    "-q",
                    "--setphysicalvolumesize",
                    &pv_size,
                    &dev.0,
                ],
            )?;
            lvm(
                "create the VG",
                &dev.0,
                &["vgcreate", "-q", &layout.vg, &dev.0],
            )?;
            lvm(
                "create the LV (metadata only)",
                &dev.0,
                &[
                    "lvcreate", "-q", "-an", "-Zn", "-n", &layout.lv, "-l", "100%FREE", &layout.vg,
                ],
            )?;
            let (offset, size) = lv_offset(&dev.0, layout)?;
            if size < fs_bytes {
                return Err(Error::unexpected(
                    "create the LV",
                    format!("{size} bytes, the filesystem needs {fs_bytes}"),
                ));
            }
            command::run(
                "copy the filesystem onto the LV's extents",
                Command::new("dd")
                    .arg(format!("if={}", fs_image.display()))
                    .arg(format!("of={}", out.display()))
                    .args(["bs=1M", "conv=notrunc,sparse,fsync", "status=none"])
                    .arg(format!("seek={offset}"))
                    .arg("oflag=seek_bytes"),
            )?;
        }
        let key = key_file(work, layout)?;
        command::run(
            "encrypt the image in place with LUKS2 (cryptsetup reencrypt, offline)",
            Command::new("cryptsetup")
                .args(["reencrypt", "--encrypt", "--type", "luks2", "--batch-mode"])
                .args(["--force-offline-reencrypt", "--reduce-device-size"])
                .arg(format!("{}M", 2 * HEADER_MIB))
                .args(CIPHER)
                .args(PBKDF)
                .args(["--uuid", &layout.luks_uuid, "--key-file"])
                .arg(&key)
                .arg(out),
        )?;
        Ok(())
    })();
    let _ = fs::remove_file(work.join(KEY_FILE));
    if result.is_err() {
        let _ = fs::remove_file(out);
    }
    result
}

fn key_file(work: &Path, layout: &Layout) -> Result<PathBuf> {
    let key = work.join(KEY_FILE);
    fs::write(&key, &layout.key).step(|| format!("write {}", key.display()))?;
    Ok(key)
}

/// The filesystem on the LV of the layered `image`, decrypted into a plain copy at
/// `plain` (with a detached header of the same volume key: cryptsetup decrypts in place only
/// then) and exposed as a loop device for e2fsck and debugfs; detached when dropped.
pub struct OpenedLv {
    dev: Loop,
}

impl OpenedLv {
    pub fn path(&self) -> &Path {
        Path::new(&self.dev.0)
    }
}

/// Opens the LV of `image` built by [`build`]: checks the LUKS2 header's UUID, unlocks it with
/// the key, decrypts the data area into `plain` and finds the LV by its VG's metadata.
pub fn open(image: &Path, plain: &Path, layout: &Layout, work: &Path) -> Result<OpenedLv> {
    let uuid = command::run(
        "read the LUKS2 UUID",
        Command::new("cryptsetup").arg("luksUUID").arg(image),
    )?;
    let uuid = String::from_utf8_lossy(&uuid.stdout).trim().to_string();
    if uuid != layout.luks_uuid {
        return Err(Error::unexpected(
            "read the LUKS2 UUID",
            format!("{uuid:?}, expected {:?}", layout.luks_uuid),
        ));
    }
    let key = key_file(work, layout)?;
    let vk = work.join("volume.key");
    let header = work.join("plain.hdr");
    let _ = fs::remove_file(&header);
    let result = (|| {
        command::run(
            "unlock the LUKS2 header with the key file (cryptsetup luksDump --dump-volume-key)",
            Command::new("cryptsetup")
                .args([
                    "luksDump",
                    "--dump-volume-key",
                    "--batch-mode",
                    "--key-file",
                ])
                .arg(&key)
                .arg("--volume-key-file")
                .arg(&vk)
                .arg(image),
        )?;
        // The data area alone, as the detached header's device.
        command::run(
            "copy the encrypted data area",
            Command::new("dd")
                .arg(format!("if={}", image.display()))
                .arg(format!("of={}", plain.display()))
                .args(["bs=1M", "status=none"])
                .arg(format!("skip={HEADER_MIB}")),
        )?;
        command::run(
            "make a detached header with the same volume key",
            Command::new("cryptsetup")
                .args([
                    "luksFormat",
                    "--type",
                    "luks2",
                    "--batch-mode",
                    "--offset",
                    "0",
                ])
                .args(CIPHER)
                .args(PBKDF)
                .arg("--volume-key-file")
                .arg(&vk)
                .arg("--key-file")
                .arg(&key)
                .arg("--header")
                .arg(&header)
                .arg(plain),
        )?;
        command::run(
            "decrypt the data area (cryptsetup reencrypt --decrypt, offline)",
            Command::new("cryptsetup")
                .args([
                    "reencrypt",
                    "--decrypt",
                    "--batch-mode",
                    "--force-offline-reencrypt",
                ])
                .arg("--key-file")
                .arg(&key)
                .arg("--header")
                .arg(&header)
                .arg(plain),
        )?;
        let (offset, size) = {
            let pv = Loop::attach(plain, 0, None)?;
            lv_offset(&pv.0, layout)?
        };
        Ok(OpenedLv {
            dev: Loop::attach(plain, offset, Some(size))?,
        })
    })();
    let _ = fs::remove_file(&key);
    let _ = fs::remove_file(&vk);
    let _ = fs::remove_file(&header);
    if result.is_err() {
        let _ = fs::remove_file(plain);
    }
    result
}
