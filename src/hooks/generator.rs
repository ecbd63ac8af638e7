//! `nbdroot-generator normal early late` (a symlink to nbdroot in systemd's generator
//! directory): `sysroot.mount` for a root on NBD, in the *early* directory so that it wins over
//! the unit systemd-fstab-generator writes for `root=nbd:…` (`What=nbd:…`, which names no
//! device).
//!
//! Run at boot, it knows the command line; run again after `nbdroot attach` reloaded systemd,
//! it also knows the fstype and options a DHCP root-path gave (from the attach's record).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::cmdline::{self, CmdlineError};
use crate::plan::{ModeFrom, NbdOpts, NbdSpec, RootMount, RootSource};

use super::rootenv::{self, RootEnv};

/// The mount unit's text: `what` on /sysroot.
pub fn sysroot_mount(what: &str, mount: &RootMount) -> String {
    let mut options = vec![if mount.read_only { "ro" } else { "rw" }];
    options.extend(mount.options.split(',').filter(|o| !o.is_empty()));
    let mut s = format!(
        "# Written by nbdroot-generator: the root filesystem on NBD.\n\
         [Unit]\nDescription=Root on NBD ({what})\nBefore=initrd-root-fs.target\n\
         # nbdroot attach runs in the initqueue and may reload this unit with a DHCP root-path's\n\
         # fstype and options: mount only after it.\n\
         After=dracut-initqueue.service\n\n\
         [Mount]\nWhat={what}\nWhere=/sysroot\n"
    );
    if let Some(t) = &mount.fstype {
        s.push_str(&format!("Type={t}\n"));
    }
    s.push_str(&format!("Options={}\n", options.join(",")));
    s
}

/// systemd's unit name for a device path (`/dev/nbd0` → `dev-nbd0.device`).
pub fn device_unit(path: &str) -> String {
    let mut out = String::new();
    for (i, b) in path.trim_start_matches('/').bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out + ".device"
}

/// What to mount and how, from the attach's record, else from the command line `line`.
/// `None` when the root is not on NBD.
pub fn decide(line: &str, record: Option<RootEnv>) -> Option<(String, RootMount)> {
    if let Some(env) = record {
        return Some((env.what(), env.mount));
    }
    let plan = match cmdline::parse(line) {
        Ok(p) => p,
        Err(CmdlineError::NoRoot) => return None,
        // Malformed: the command-line hook ends the boot with nbdroot's line. Until then
        // sysroot.mount must wait for the device instead of failing at once on the unit
        // systemd-fstab-generator writes for root=nbd:… (which would end the boot first,
        // without the reason).
        Err(e) => {
            log::warn!("{e}");
            let index = super::DEFAULT_INDEX;
            let mount = RootMount {
                fstype: None,
                options: String::new(),
                read_only: true,
                mode_from: ModeFrom::Default,
            };
            return Some((crate::kernel::device_path(index), mount));
        }
    };
    let spec = match &plan.source {
        RootSource::Nbd(spec) => spec.clone(),
        // Until the lease is there, only the kernel's rootfstype=/rootflags= are known.
        RootSource::Dhcp | RootSource::Debian(_) => NbdSpec {
            host: crate::address::Host::Name(String::new()),
            port: 0,
            export: String::new(),
            fstype: None,
            rootflags: None,
            opts: NbdOpts::default(),
        },
    };
    let what = rootenv::what(super::device_index(&plan), &plan.root);
    Some((what, plan.mount.resolve(&spec)))
}

/// The attach unit of mkinitcpio's systemd images (`mkinitcpio/install/sd-nbdroot`); dracut's
/// images attach from the initqueue and have none.
pub const ATTACH_UNIT: &str = "/usr/lib/systemd/system/nbdroot.service";

/// Writes the units into `early`.
pub fn generate(early: &Path) -> io::Result<()> {
    let line = super::read_cmdline()?;
    if Path::new(ATTACH_UNIT).is_file()
        && want_attach(&line, early)?
        && cmdline::parse(&line).is_err()
    {
        // root= is another unit's (LUKS, LVM): systemd-fstab-generator mounts it.
        return Ok(());
    }
    let record = RootEnv::read(Path::new(rootenv::PATH)).unwrap_or_else(|e| {
        log::warn!("{e}");
        None
    });
    let Some((what, mount)) = decide(&line, record) else {
        return Ok(());
    };
    fs::create_dir_all(early)?;
    fs::write(early.join("sysroot.mount"), sysroot_mount(&what, &mount))?;
    let requires = early.join("initrd-root-fs.target.requires");
    fs::create_dir_all(&requires)?;
    let link = requires.join("sysroot.mount");
    let _ = fs::remove_file(&link);
    symlink("../sysroot.mount", &link)?;
    let dropin = early.join("initrd-root-device.target.d");
    fs::create_dir_all(&dropin)?;
    let dev = device_unit(&what);
    fs::write(
        dropin.join("50-nbdroot.conf"),
        format!("# Written by nbdroot-generator.\n[Unit]\nRequires={dev}\nAfter={dev}\n"),
    )
}

/// Pulls in [`ATTACH_UNIT`] from `initrd-root-device.target` when `line` names an NBD root,
/// also one whose `root=` another unit mounts (LUKS, LVM: see `attach --mkinitcpio`).
/// Whether it did.
fn want_attach(line: &str, early: &Path) -> io::Result<bool> {
    if super::attach::parse(line, super::attach::Flavour::Mkinitcpio).is_err() {
        return Ok(false);
    }
    let wants = early.join("initrd-root-device.target.wants");
    fs::create_dir_all(&wants)?;
    let link = wants.join("nbdroot.service");
    let _ = fs::remove_file(&link);
    symlink(ATTACH_UNIT, &link)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attach_unit_is_wanted_for_every_nbd_root() {
        let dir = std::env::temp_dir().join(format!("nbdroot-gen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let link = dir.join("initrd-root-device.target.wants/nbdroot.service");
        assert!(!want_attach("root=/dev/sda1 rw", &dir).unwrap());
        assert!(!link.exists() && fs::symlink_metadata(&link).is_err());
        assert!(want_attach("netroot=nbd:10.0.0.1:d root=/dev/mapper/root", &dir).unwrap());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(ATTACH_UNIT));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn units_from_the_command_line() {
        let (what, mount) = decide("root=nbd:10.0.0.1:exp:ext4:errors=panic rw", None).unwrap();
        assert_eq!(what, "/dev/nbd0");
        let unit = sysroot_mount(&what, &mount);
        assert!(
            unit.contains("What=/dev/nbd0\nWhere=/sysroot\nType=ext4\nOptions=rw,errors=panic\n"),
            "{unit}"
        );
        let (what, mount) = decide("root=/dev/nbd1p2 nbdroot=10.0.0.1,exp,nbd1", None).unwrap();
        assert_eq!(what, "/dev/nbd1p2");
        assert!(sysroot_mount(&what, &mount).contains("Options=ro\n"));
        let (what, _) = decide("root=LABEL=r netroot=nbd:10.0.0.1:exp", None).unwrap();
        assert_eq!(device_unit(&what), "dev-disk-by\\x2dlabel-r.device");
        let (_, mount) = decide("root=dhcp rootfstype=xfs", None).unwrap();
        assert_eq!(mount.fstype.as_deref(), Some("xfs"));
        assert_eq!(decide("root=/dev/sda1", None), None);
        let (what, mount) = decide("root=nbd:", None).unwrap();
        assert_eq!((what.as_str(), mount.read_only), ("/dev/nbd0", true));
    }

    #[test]
    fn device_units_are_escaped_as_systemd_does() {
        assert_eq!(device_unit("/dev/nbd0"), "dev-nbd0.device");
        assert_eq!(device_unit("/dev/nbd0p1"), "dev-nbd0p1.device");
        assert_eq!(
            device_unit("/dev/disk/by-label/a\\x20b"),
            "dev-disk-by\\x2dlabel-a\\x5cx20b.device"
        );
    }
}
