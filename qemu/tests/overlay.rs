//! VM tests of `rd.nbdroot.overlay=`: the root attached and mounted read-only under an
//! overlayfs, the writable layer on a tmpfs or on a second, per-machine export served by the
//! qemu-storage-daemon recipe of docs/servers.md.

use std::fs;
use std::path::Path;
use std::process::Command;

use nbdroot_qemu::recipes::{self, Env};
use nbdroot_qemu::{
    boot_kit, debugfs_cat, free_port, nbdkit, qemu_nbd, run, scratch, RootFs, VmConfig, VmOutcome,
};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
/// The guest reaches the host's server here on port 10809, as a machine reaches its server in
/// the documented command lines.
const FWD_IP: &str = "10.0.2.100";

/// What every overlay guest reports: a file written to `/`, whether the nbd root device is
/// read-only, and whether the lower layer takes a write.
const REPORT: &str = r#"bb=/bin/busybox
echo "written through the overlay" > /overlay-file && echo "NBDT wrote=$($bb cat /overlay-file)"
echo "NBDT nbd0-ro=$($bb cat /sys/block/nbd0/ro)"
if echo x 2>/dev/null > /run/nbdroot/overlay/lower/x; then echo "NBDT lower=writable"; else echo "NBDT lower=refused"; fi"#;

fn probe_image(dir: &Path, img: &Path, steps: &[&str]) {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.with_probe();
    for s in steps {
        root.add_probe_step(s);
    }
    root.build_ext4(img, 64, None).expect("mkfs.ext4");
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn boot(append: String, fwd_port: Option<u16>) -> VmOutcome {
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.append = append;
    if let Some(port) = fwd_port {
        cfg.guestfwd.push((FWD_IP.to_string(), 10809, port));
    }
    let out = run(&cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung until the deadline:\n{out}");
    assert!(!out.contains("panicked at"), "a Rust panic:\n{out}");
    out
}

/// The mount line of `target` in the guest's /proc/mounts.
fn mount_of<'a>(out: &'a VmOutcome, target: &str) -> &'a str {
    out.lines_with("NBDROOT-MOUNT ")
        .into_iter()
        .find(|m| m.split(' ').nth(1) == Some(target))
        .unwrap_or_else(|| panic!("nothing mounted on {target}:\n{out}"))
}

/// `/` is the overlay, read-write; the root device is read-only and so is the lower layer;
/// a file written to `/` reads back.
fn assert_overlay_root(out: &VmOutcome) {
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(!out.contains("NBDROOT-PROBE-WRITE-FAILED"), "{out}");
    let root = mount_of(out, "/");
    assert!(root.starts_with("overlay / overlay rw,"), "{root}");
    assert!(
        root.contains("lowerdir=/run/nbdroot/overlay/lower"),
        "{root}"
    );
    let lower = mount_of(out, "/run/nbdroot/overlay/lower");
    assert!(lower.starts_with("/dev/nbd0 "), "{lower}");
    assert!(lower.contains(" ext4 ro,"), "{lower}");
    assert_eq!(
        out.lines_with("NBDT wrote="),
        ["written through the overlay"],
        "{out}"
    );
    assert_eq!(out.lines_with("NBDT nbd0-ro="), ["1"], "{out}");
    assert_eq!(out.lines_with("NBDT lower="), ["refused"], "{out}");
}

#[test]
fn tmpfs_overlay_root_is_writable_and_the_server_copy_is_untouched() {
    let dir = scratch("overlay-tests", "tmpfs");
    let img = dir.join("root.ext4");
    probe_image(&dir, &img, &[REPORT]);
    let before = sha256(&img);
    // A writable server: only nbdroot's read-only attach keeps the image as it was.
    let server = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let out = boot(
        format!(
            "root=nbd:10.0.2.2:{} {IP} rd.nbdroot.overlay=tmpfs:48m",
            server.port
        ),
        None,
    );
    assert_overlay_root(&out);
    let rw = mount_of(&out, "/run/nbdroot/overlay/rw");
    assert!(
        rw.starts_with("tmpfs ") && rw.contains("size=49152k"),
        "the upper layer is a 48 MiB tmpfs: {rw}"
    );
    drop(server);
    assert_eq!(sha256(&img), before, "the server's image is unchanged");
}

#[test]
fn nbd_upper_layer_keeps_the_writes_across_a_reboot_and_a_server_restart() {
    // docs/servers.md's Tier B, as documented: gold-v1 shared read-only, upper-m1 a qcow2
    // over a blank ext4, both served by one qemu-storage-daemon.
    let srv = scratch("overlay-tests", "nbd-upper");
    let gold = srv.join("gold-v1.ext4");
    probe_image(
        &srv,
        &gold,
        &[
            REPORT,
            r#"if [ -e /persist ]; then echo "NBDT seen=$($bb cat /persist)"; else echo "NBDT seen=nothing"; fi
echo "boot-$($bb cat /proc/sys/kernel/random/boot_id)" > /persist
$bb sync
echo "NBDT persist=$($bb cat /persist)""#,
        ],
    );
    let before = sha256(&gold);
    let env = Env {
        srv: srv.to_path_buf(),
        port: free_port().unwrap(),
    };
    for r in ["machine-roots", "machine-uppers"] {
        recipes::get(r).unwrap().run(&env).unwrap();
    }
    let mut server = recipes::get("per-machine-qsd")
        .unwrap()
        .serve(&env)
        .unwrap();
    let append = format!("root=nbd:{FWD_IP}:gold-v1 rd.nbdroot.overlay=nbd:{FWD_IP}:upper-m1 {IP}");

    let first = boot(append.clone(), Some(env.port));
    assert_overlay_root(&first);
    let upper = mount_of(&first, "/run/nbdroot/overlay/rw");
    assert!(
        upper.starts_with("/dev/nbd1 ") && upper.contains(" ext4 rw,"),
        "{upper}"
    );
    assert_eq!(first.lines_with("NBDT seen="), ["nothing"], "{first}");
    let written = first.lines_with("NBDT persist=");
    assert!(
        written.len() == 1 && written[0].starts_with("boot-"),
        "{first}"
    );
    let written = written[0].to_string();

    // The machine's state is on the server, in its own qcow2 file.
    server.kill();
    let raw = srv.join("upper-m1.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(srv.join("upper-m1.qcow2"))
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img convert: {status}");
    let on_server = debugfs_cat(&raw, "/upper/persist").expect("the file in upper-m1");
    assert_eq!(String::from_utf8_lossy(&on_server).trim(), written);
    fs::remove_file(&raw).unwrap();
    server.restart().unwrap();

    let second = boot(append, Some(env.port));
    assert_overlay_root(&second);
    assert_eq!(
        second.lines_with("NBDT seen="),
        [written.as_str()],
        "{second}"
    );
    drop(server);
    assert_eq!(sha256(&gold), before, "the shared base is unchanged");
}

#[test]
fn blank_upper_export_is_refused_not_formatted() {
    let dir = scratch("overlay-tests", "blank-upper");
    let img = dir.join("root.ext4");
    probe_image(&dir, &img, &[]);
    let root = qemu_nbd(&img, None, true).expect("qemu-nbd");
    let upper = nbdkit(&["memory", "64M"]).expect("nbdkit memory");
    let out = boot(
        format!(
            "root=nbd:10.0.2.2:{} {IP} rd.nbdroot.overlay=nbd:10.0.2.2:{}",
            root.port, upper.port
        ),
        None,
    );
    let line = out
        .log
        .lines()
        .find(|l| l.contains("nbdroot: overlay: /dev/nbd1"))
        .unwrap_or_else(|| panic!("no refusal line:\n{out}"));
    assert!(
        line.contains("holds no filesystem nbdroot recognises: make a filesystem on it first"),
        "{line}"
    );
    assert!(
        out.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{out}"
    );
    assert!(
        !out.contains("NBDROOT-PROBE"),
        "the root's init never ran:\n{out}"
    );
}
