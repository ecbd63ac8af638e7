//! VM test with systemd as the root's init (a minimal Debian made with debootstrap): the
//! `@nbdroot` supervisor survives systemd's killing spree at shutdown, as its root storage
//! daemon convention promises.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use nbdroot_qemu::sysroot::debian_systemd_root_copy;
use nbdroot_qemu::{boot_kit, ext4_from_dir, qemu_nbd, run, scratch, VmConfig};

/// Prints the `@nbdroot` processes it finds on the console, prefixed with `$1`.
const FIND: &str = r#"#!/bin/sh
found=none
for p in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
  case "$c" in @nbdroot*) found="alive pid=${p#/proc/}";; esac
done
echo "$1 supervisor=$found" > /dev/console
"#;

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn supervisor_survives_systemd_until_the_end_of_shutdown() {
    let dir = scratch("systemd-tests", "shutdown");
    let root = debian_systemd_root_copy(&dir).expect("a copy of the Debian root (debootstrap)");
    write(&root, "usr/local/bin/nbdroot-find", FIND, 0o755);
    write(
        &root,
        "usr/local/bin/nbdroot-probe",
        "#!/bin/sh\n/usr/local/bin/nbdroot-find NBDT-RUNNING\nsystemctl --no-block poweroff\n",
        0o755,
    );
    write(
        &root,
        "etc/systemd/system/nbdroot-probe.service",
        "[Unit]\nDescription=nbdroot probe\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/nbdroot-probe\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    let wants = root.join("etc/systemd/system/multi-user.target.wants/nbdroot-probe.service");
    fs::create_dir_all(wants.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&wants);
    symlink("../nbdroot-probe.service", &wants).unwrap();
    // Run after systemd-shutdown's killing spree, with the root read-only.
    write(
        &root,
        "usr/lib/systemd/system-shutdown/nbdroot-check",
        "#!/bin/sh\n/usr/local/bin/nbdroot-find NBDT-SHUTDOWN\n",
        0o755,
    );

    let img = dir.join("root.ext4");
    ext4_from_dir(&root, &img, 1024, None).expect("mkfs.ext4");
    let _ = fs::remove_dir_all(&root);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.memory_mib = 512;
    cfg.deadline = Duration::from_secs(400);
    cfg.append = format!(
        "root=nbd:10.0.2.2:{} ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw systemd.show_status=0",
        srv.port
    );
    let out = run(&cfg).expect("run QEMU");
    assert!(
        !out.timed_out,
        "systemd did not finish within 400 s:\n{out}"
    );
    let running = out.lines_with("NBDT-RUNNING supervisor=");
    assert!(
        running.first().is_some_and(|l| l.starts_with("alive")),
        "the supervisor runs under systemd: {running:?}\n{out}"
    );
    let shutdown = out.lines_with("NBDT-SHUTDOWN supervisor=");
    assert!(
        shutdown.first().is_some_and(|l| l.starts_with("alive")),
        "the supervisor survived systemd's final killing spree: {shutdown:?}\n{out}"
    );
}
