//! VM tests of the boot path: Debian's cloud kernel boots an initramfs made by
//! `nbdroot mkinitramfs`, whose /init attaches a root served by qemu-nbd on 127.0.0.1.

use std::path::PathBuf;

use nbdroot_qemu::{
    boot_kit, debugfs_cat, e2fsck_clean, free_port, qemu_nbd, run, RootFs, VmConfig, VmOutcome,
};

/// The static address the guest takes on QEMU's user network (the host is 10.0.2.2).
const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
/// A guest-side address forwarded to the host's server, so that the default port 10809 can be
/// used whatever port the server really has.
const FWD_IP: &str = "10.0.2.100";

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("boot-tests", name)
}

/// A probe root image for test `name`, in a scratch directory that lives as long as the
/// returned guard.
fn probe_image(name: &str, steps: &[&str]) -> (nbdroot_qemu::Scratch, PathBuf) {
    let dir = scratch(name);
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.with_probe();
    for s in steps {
        root.add_probe_step(s);
    }
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    (dir, img)
}

fn boot(append: &str, guestfwd: Option<u16>) -> VmOutcome {
    let s = boot_kit();
    let mut cfg = VmConfig::new(&s.kernel.vmlinuz, &s.initrd);
    cfg.append = append.to_string();
    if let Some(port) = guestfwd {
        cfg.guestfwd.push((FWD_IP.to_string(), 10809, port));
    }
    let out = run(&cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung until the deadline:\n{out}");
    assert!(
        !out.contains("panicked at"),
        "a Rust panic reached the console:\n{out}"
    );
    out
}

/// The guest ended through a panic right after one nbdroot error line containing `want`.
fn assert_failed_with(out: &VmOutcome, want: &str) {
    let errors: Vec<&str> = out
        .log
        .lines()
        .filter(|l| l.contains("nbdroot: "))
        .collect();
    let line = errors
        .iter()
        .find(|l| l.contains(want))
        .unwrap_or_else(|| panic!("no nbdroot line with {want:?}:\n{out}"));
    assert!(
        out.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "the boot did not end in a panic:\n{out}"
    );
    let panic_at = out.log.find("Kernel panic").unwrap();
    assert!(
        out.log.find(line).unwrap() < panic_at,
        "the error comes before the panic:\n{out}"
    );
    assert!(
        !out.contains("NBDROOT-PROBE"),
        "the root's init must not run:\n{out}"
    );
}

#[test]
fn boots_from_nbd_root_and_writes_reach_the_server() {
    let (_dir, img) = probe_image("rw", &[]);
    let server = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let out = boot(&format!("root=nbd:10.0.2.2:{} {IP} rw", server.port), None);

    assert_eq!(
        out.lines_with("NBDROOT-PROBE pid=")
            .first()
            .map(|l| &l[..2]),
        Some("1 "),
        "probe is PID 1:\n{out}"
    );
    let mounts = out.lines_with("NBDROOT-MOUNT ");
    let root: Vec<_> = mounts
        .iter()
        .filter(|m| m.split(' ').nth(1) == Some("/"))
        .collect();
    assert_eq!(
        root.len(),
        1,
        "exactly one / mount, the initramfs is gone:\n{out}"
    );
    assert!(root[0].starts_with("/dev/nbd0 / ext4 rw,"), "{}", root[0]);
    for api in ["/proc", "/sys", "/dev", "/run"] {
        assert!(
            mounts.iter().any(|m| m.split(' ').nth(1) == Some(api)),
            "{api} moved into the root:\n{out}"
        );
    }
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(
        out.contains("nbdroot: mounted /dev/nbd0 (ext4, rw)"),
        "{out}"
    );
    assert!(
        out.status.success(),
        "QEMU exits 0 after the guest powers off:\n{out}"
    );
    drop(server);

    let result = String::from_utf8(
        debugfs_cat(&img, "/probe-result").expect("the guest's file is on the server"),
    )
    .unwrap();
    assert!(result.starts_with("ok uptime="), "{result}");
    assert!(result.contains("/dev/nbd0 / ext4 rw"), "{result}");
    e2fsck_clean(&img).expect("clean filesystem after the guest");
}

#[test]
fn export_name_fstype_rootflags_and_ro_are_honoured() {
    let (_dir, img) = probe_image("named-ro", &[]);
    let server = qemu_nbd(&img, Some("rootfs"), false).expect("qemu-nbd");
    // An export name (port 10809 through the forward), an fstype and options, and kernel `ro`.
    let out = boot(
        &format!("root=nbd:{FWD_IP}:rootfs:ext4:noatime,rw,errors=remount-ro {IP} ro"),
        Some(server.port),
    );
    let root = out
        .lines_with("NBDROOT-MOUNT /dev/nbd0 / ")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_else(|| panic!("no nbd root:\n{out}"));
    assert!(root.starts_with("ext4 ro,noatime"), "{root}");
    assert!(root.contains("errors=remount-ro"), "{root}");
    assert!(
        out.contains("NBDROOT-PROBE-WRITE-FAILED"),
        "a read-only root refuses writes:\n{out}"
    );
    drop(server);
    assert!(
        debugfs_cat(&img, "/probe-result").is_err(),
        "nothing was written"
    );
}

#[test]
fn init_parameter_and_arguments_reach_the_real_init() {
    let dir = scratch("init");
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_file(
        "sbin/other-init",
        "#!/bin/busybox sh\necho \"NBDROOT-OTHER-INIT pid=$$ args=$*\"\n/bin/busybox poweroff -f\n",
        0o755,
    )
    .unwrap();
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 32, None).expect("mkfs.ext4");
    let server = qemu_nbd(&img, None, true).expect("qemu-nbd");
    let out = boot(
        &format!(
            "root=nbd:10.0.2.2:{} {IP} init=/sbin/other-init -- single extra",
            server.port
        ),
        None,
    );
    assert_eq!(
        out.lines_with("NBDROOT-OTHER-INIT "),
        ["pid=1 args=single extra"],
        "{out}"
    );
    assert!(
        out.contains("mounting the root read-only") || out.contains("(ext4, ro)"),
        "{out}"
    );
}

#[test]
fn wrong_export_name_ends_the_boot_with_the_reason() {
    let (_dir, img) = probe_image("wrong-export", &[]);
    let server = qemu_nbd(&img, Some("root"), false).expect("qemu-nbd");
    let out = boot(&format!("root=nbd:{FWD_IP}:wrong {IP}"), Some(server.port));
    assert_failed_with(
        &out,
        &format!("nbdroot: export \"wrong\" not found on {FWD_IP}:10809: "),
    );
}

#[test]
fn unreachable_server_is_bounded_by_the_retry_policy() {
    let port = free_port().expect("free port");
    let out = boot(
        &format!("root=nbd:10.0.2.2:{port} {IP} rd.nbdroot.timeout=2 rd.nbdroot.retries=2"),
        None,
    );
    assert_failed_with(
        &out,
        &format!("nbdroot: cannot reach 10.0.2.2:{port}: connection refused (after "),
    );
    assert!(out.contains(", 3 attempts)"), "{out}");
}

#[test]
fn malformed_parameters_end_the_boot_with_the_expected_form() {
    let cases = [
        (
            format!("root=nbd:10.0.2.2 {IP}"),
            "nbdroot: root=nbd:10.0.2.2: the port or export name is missing; expected root=nbd:<server>:<port|export>",
        ),
        (
            "root=nbd:10.0.2.2:10809 ip=10.0.2.300::10.0.2.2:255.255.255.0::eth0:off".to_string(),
            "nbdroot: ip=10.0.2.300::10.0.2.2:255.255.255.0::eth0:off: client \"10.0.2.300\" is not an IP address; expected ip=",
        ),
        (
            format!("{IP} quiet"),
            "nbdroot: no NBD root on the kernel command line: expected root=nbd:<server>",
        ),
    ];
    for (append, want) in cases {
        let out = boot(&append, None);
        assert_failed_with(&out, want);
    }
}
