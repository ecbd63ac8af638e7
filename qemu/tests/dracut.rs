//! VM tests of nbdroot's dracut module with the real dracut: Debian 12's packaged dracut 059
//! and dracut-ng 111 (built from ../shared/vendor), each with dracut's own shell init and with
//! systemd in the initrd. The cases are dracut's own NBD test's, and more; each asserts the
//! guest's /proc/mounts line for / and reads back, on the server's image, the file the guest
//! wrote.
//!
//! The dracut-ng variants need `../shared/vendor/dracut-ng-111.tar.gz` (or
//! `NBDROOT_DRACUT_NG_TARBALL`); without it they fail naming the missing archive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nbdroot_qemu::dracut::{build_image, Dracut, ImageSpec, Release};
use nbdroot_qemu::netns::{NetNs, HOST_IP};
use nbdroot_qemu::{
    debian_cloud_kernel, debugfs_cat, e2fsck_clean, free_port, qemu_nbd, run, scenario, Kernel,
    NbdServer, RootFs, VmConfig, VmOutcome,
};

/// A guest-side address forwarded to the host's server, so the default port 10809 works.
const FWD_IP: &str = "10.0.2.100";
/// Every boot: no emergency shell (a failure ends the guest), bounded waits.
const COMMON: &str = "rd.shell=0 rd.retry=60 rd.timeout=120 systemd.show_status=0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Variant {
    release: Release,
    systemd: bool,
}

impl Variant {
    fn name(&self) -> String {
        let r = match self.release {
            Release::Debian059 => "059",
            Release::Ng111 => "ng111",
        };
        format!("{r}-{}", if self.systemd { "systemd" } else { "shell" })
    }
}

fn kernel() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| debian_cloud_kernel().expect("Debian cloud kernel"))
}

/// The variant's initramfs with nbdroot's module, built once per test process.
fn initrd(v: Variant) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Variant, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(v)
        .or_insert_with(|| {
            let dracut = Dracut::get(v.release).expect("dracut");
            let exe = std::env::current_exe().unwrap_or_default();
            let stem = exe.file_stem().unwrap_or_default().to_string_lossy();
            let out = nbdroot_qemu::cache_dir()
                .unwrap()
                .join(format!("dracut-{}-{stem}.img", v.name()));
            let spec = ImageSpec::nbdroot(v.systemd).expect("nbdroot binary");
            build_image(&dracut, kernel(), &spec, &out).expect("dracut image");
            out
        })
        .clone()
}

fn scratch(v: Variant, name: &str) -> PathBuf {
    nbdroot_qemu::scratch("dracut-tests", &format!("{name}-{}", v.name()))
}

/// A probe root (ext4, optionally labelled) for one test.
fn probe_image(dir: &Path, label: Option<&str>, steps: &[&str]) -> PathBuf {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    // systemd switches only into a directory that looks like an OS.
    root.add_file(
        "etc/os-release",
        "ID=nbdroot-probe\nNAME=\"nbdroot probe\"\n",
        0o644,
    )
    .expect("os-release");
    root.with_probe();
    for s in steps {
        root.add_probe_step(s);
    }
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, label).expect("mkfs.ext4");
    img
}

fn vm(v: Variant, append: &str) -> VmConfig {
    let mut cfg = VmConfig::new(&kernel().vmlinuz, initrd(v));
    cfg.append = format!("{append} {COMMON}");
    cfg.memory_mib = 512;
    cfg.deadline = Duration::from_secs(300);
    // systemd halts after dracut's die (or loops in its emergency target); the shell init's
    // exit panics the kernel.
    cfg.stop_on = vec!["Refusing to continue".into(), "Boot has failed".into()];
    cfg
}

fn boot(cfg: &VmConfig) -> VmOutcome {
    let out = run(cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung:\n{out}");
    out
}

/// The root's init ran, with `want` (device, fstype and options) mounted on /.
fn assert_root(out: &VmOutcome, want: &str) {
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init did not finish:\n{out}"
    );
    let root = out.root_mount();
    assert!(
        root.starts_with(want),
        "/ is {root:?}, expected {want:?}:\n{out}"
    );
}

/// The file the guest wrote is on the server's image, and the image is clean.
fn assert_written(img: &Path) {
    let result = debugfs_cat(img, "/probe-result").expect("read /probe-result");
    assert!(
        String::from_utf8_lossy(&result).starts_with("ok uptime="),
        "{}",
        String::from_utf8_lossy(&result)
    );
    e2fsck_clean(img).expect("the image is clean");
}

/// The boot ended in dracut's die with nbdroot's line holding `want`.
fn assert_died_with(out: &VmOutcome, want: &str) {
    assert!(
        out.log
            .lines()
            .any(|l| l.contains("FATAL: nbdroot: ") && l.contains(want)),
        "no dracut FATAL line with nbdroot's {want:?}:\n{out}"
    );
    assert!(out.contains("Refusing to continue"), "{out}");
    assert!(!out.contains("NBDROOT-PROBE"), "{out}");
}

/// One boot of `image` served by qemu-nbd (export `export`) through the forward.
fn boot_served(
    v: Variant,
    img: &Path,
    export: Option<&str>,
    append: impl Fn(u16) -> String,
) -> VmOutcome {
    let srv = qemu_nbd(img, export, false).expect("qemu-nbd");
    let mut cfg = vm(v, &append(srv.port));
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    out
}

// The cases, each a function of the variant.

/// dracut's case 1: `root=nbd:<ip>:<export>`.
fn export_name(v: Variant) {
    let dir = scratch(v, "export");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert_written(&img);
}

/// dracut's cases 2–4: `::<fsopts>`, `:<fstype>`, `:<fstype>:<fsopts>`; and `ro`.
fn fstype_and_options(v: Variant) {
    let dir = scratch(v, "fsopts");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw::noatime,nodiratime rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw,noatime,nodiratime");
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw:ext4 rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw,relatime");
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw:ext4:noatime,errors=remount-ro rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw,noatime");
    assert!(
        out.root_mount().contains("errors=remount-ro"),
        "{}",
        out.root_mount()
    );
    assert_written(&img);
    // ro (the kernel's default): mounted read-only, the guest cannot write.
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw:ext4 ro")
    });
    assert_root(&out, "/dev/nbd0 / ext4 ro,relatime");
    assert!(out.contains("NBDROOT-PROBE-WRITE-FAILED"), "{out}");
}

/// A numeric port, and Debian's `nbdroot=` with a device.
fn port_and_debian_form(v: Variant) {
    let dir = scratch(v, "port");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(v, &img, None, |port| format!("root=nbd:10.0.2.2:{port} rw"));
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    let out = boot_served(v, &img, None, |port| {
        format!("nbdroot=10.0.2.2,{port},nbd1 root=/dev/nbd1 rw")
    });
    assert_root(&out, "/dev/nbd1 / ext4 rw");
    assert_written(&img);
}

/// A disk image: an MBR with one partition at 1 MiB holding `fs_img`.
fn partitioned(fs_img: &Path, out: &Path) {
    let fs_bytes = std::fs::read(fs_img).unwrap();
    let mut disk = vec![0u8; 1 << 20];
    let sectors = (fs_bytes.len() / 512) as u32;
    let e = &mut disk[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(&fs_bytes);
    std::fs::write(out, disk).unwrap();
}

/// dracut's case 7 (`netroot=nbd:…` with `root=LABEL=…`), and a partition root.
fn label_and_partition(v: Variant) {
    let dir = scratch(v, "label");
    let img = probe_image(&dir, Some("dracut"), &[]);
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=LABEL=dracut netroot=nbd:{FWD_IP}:raw rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert_written(&img);
    let disk = dir.join("disk.raw");
    partitioned(&img, &disk);
    let out = boot_served(v, &disk, None, |port| {
        format!("root=/dev/nbd0p1 netroot=nbd:10.0.2.2:{port} rw")
    });
    assert_root(&out, "/dev/nbd0p1 / ext4 rw");
}

/// dracut's cases 5 and 6, and the two it marks broken: `root=/dev/root netroot=dhcp` with the
/// root-path from dnsmasq, plain and with fstype and options.
fn dhcp_root_path(v: Variant) {
    let dir = scratch(v, "dhcp");
    let hints = r#"for f in /run/systemd/network/*.network /run/NetworkManager/conf.d/*.conf; do
  [ -f "$f" ] && while read -r l; do echo "NBDROOT-HINT ${f##*/} $l"; done < "$f"
done"#;
    let img = probe_image(&dir, None, &[hints]);
    for (tail, want) in [
        ("", "/dev/nbd0 / ext4 rw,relatime"),
        (":ext4:noatime", "/dev/nbd0 / ext4 rw,noatime"),
        ("::nodiratime", "/dev/nbd0 / ext4 rw,nodiratime"),
    ] {
        let port = free_port().expect("free port");
        let mut ns = NetNs::new("drrp").expect("network namespace");
        ns.dnsmasq(&[format!(
            "dhcp-option=option:root-path,nbd:{HOST_IP}:{port}{tail}"
        )])
        .expect("dnsmasq");
        let (port_s, img_s) = (port.to_string(), img.display().to_string());
        ns.spawn(
            "start qemu-nbd in the namespace",
            &[
                "qemu-nbd",
                "-f",
                "raw",
                "--persistent",
                "--shared=4",
                "-b",
                HOST_IP,
                "-p",
                &port_s,
                &img_s,
            ],
        )
        .expect("qemu-nbd");
        ns.wait_listening(HOST_IP, port)
            .expect("qemu-nbd listening");
        let mut cfg = vm(v, "root=/dev/root netroot=dhcp rw");
        cfg.netns = Some(ns.name.clone());
        let out = boot(&cfg);
        drop(ns);
        assert_root(&out, want);
        // The root's network managers are told to keep the boot interface as it is.
        let hints = out.lines_with("NBDROOT-HINT ");
        for want in [
            "10-nbdroot-eth0.network KeepConfiguration=yes",
            "10-nbdroot-eth0.network ClientIdentifier=mac",
            "50-nbdroot-eth0.conf keep-configuration=yes",
        ] {
            assert!(hints.contains(&want), "no hint {want:?} in {hints:?}");
        }
    }
    assert_written(&img);
}

/// Bad input: a malformed root=, an unknown export, an unreachable server: dracut's die with
/// nbdroot's line, within the retry bound.
fn bad_input(v: Variant) {
    let dir = scratch(v, "bad");
    let img = probe_image(&dir, None, &[]);
    let out = boot(&vm(v, "root=nbd:10.0.2.2 rw"));
    assert_died_with(&out, "root=nbd:10.0.2.2: ");
    let out = boot_served(v, &img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:wrong rw")
    });
    assert_died_with(&out, "export \"wrong\" not found");
    let port = free_port().expect("free port");
    let out = boot(&vm(
        v,
        &format!("root=nbd:10.0.2.2:{port} rd.nbdroot.retries=2 rd.nbdroot.timeout=2 rw"),
    ));
    assert_died_with(&out, &format!("cannot reach 10.0.2.2:{port}"));
}

/// The server restarts after switch_root while the guest writes: no I/O error, and the
/// supervisor reconnected.
fn server_restart(v: Variant) {
    let dir = scratch(v, "restart");
    let img = probe_image(&dir, None, &[&scenario::writer_script()]);
    let mut server: NbdServer = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm(v, &format!("root=nbd:10.0.2.2:{} rw", server.port));
    let log = dir.join("console.log");
    cfg.log_path = Some(log.clone());
    let restarted = std::thread::scope(|s| {
        let server = &mut server;
        // The guest may first queue for a VM slot and boot slowly on a loaded machine: wait
        // for its writes as long as its deadline, then restart the server under them.
        let ctl = s.spawn(|| {
            scenario::wait_for(&log, "NBDT-WRITING", Duration::from_secs(600))
                && scenario::restart_server(&log, server, Duration::from_secs(3))
        });
        let out = boot(&cfg);
        (ctl.join().expect("control thread"), out)
    });
    let (restarted, out) = restarted;
    assert!(
        restarted,
        "the restart happened while the guest wrote:\n{out}"
    );
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert!(
        !out.contains("NBDT io-error"),
        "I/O errors in the guest:\n{out}"
    );
    assert!(out.contains("NBDT errors=0"), "{out}");
    drop(server);
    assert_written(&img);
}

macro_rules! variants {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[test]
            fn dracut059_shell() {
                super::$case(Variant { release: Release::Debian059, systemd: false });
            }
            #[test]
            fn dracut059_systemd() {
                super::$case(Variant { release: Release::Debian059, systemd: true });
            }
            #[test]
            fn ng111_shell() {
                super::$case(Variant { release: Release::Ng111, systemd: false });
            }
            #[test]
            fn ng111_systemd() {
                super::$case(Variant { release: Release::Ng111, systemd: true });
            }
        }
    )*};
}

variants!(
    export_name,
    fstype_and_options,
    port_and_debian_form,
    label_and_partition,
    dhcp_root_path,
    bad_input,
    server_restart,
);

/// Prints the `@nbdroot` supervisor, systemd's state and its failed units, then powers off.
const REAL_PROBE: &str = r#"#!/bin/sh
found=none
for p in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
  case "$c" in @nbdroot*) found="alive pid=${p#/proc/}";; esac
done
echo "NBDT-DRACUT supervisor=$found" > /dev/console
echo "NBDT-DRACUT state=$(systemctl is-active multi-user.target)" > /dev/console
echo "NBDT-DRACUT failed=$(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')" > /dev/console
echo "NBDT-DRACUT root=$(grep ' / ' /proc/mounts)" > /dev/console
systemctl --no-block poweroff
"#;

/// A real system: Debian 12 (debootstrap) with systemd as init boots through dracut and
/// nbdroot to multi-user.target with no failed unit, and powers off cleanly.
fn real_system(v: Variant) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let root = nbdroot_qemu::sysroot::debian_systemd_root().expect("Debian root (debootstrap)");
    let write = |rel: &str, text: &str, mode: u32| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("usr/local/bin/nbdroot-dracut-probe", REAL_PROBE, 0o755);
    write(
        "etc/systemd/system/nbdroot-dracut-probe.service",
        "[Unit]\nDescription=nbdroot dracut probe\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/nbdroot-dracut-probe\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    let wants =
        root.join("etc/systemd/system/multi-user.target.wants/nbdroot-dracut-probe.service");
    std::fs::create_dir_all(wants.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&wants);
    symlink("../nbdroot-dracut-probe.service", &wants).unwrap();

    let dir = scratch(v, "real");
    let img = dir.join("root.ext4");
    nbdroot_qemu::ext4_from_dir(&root, &img, 1024, None).expect("mkfs.ext4");
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm(v, &format!("root=nbd:10.0.2.2:{} rw", srv.port));
    cfg.deadline = Duration::from_secs(600);
    let out = boot(&cfg);
    drop(srv);
    let value = |k: &str| {
        out.lines_with(&format!("NBDT-DRACUT {k}="))
            .first()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("no {k}:\n{out}"))
    };
    assert!(value("supervisor").starts_with("alive"), "{out}");
    assert!(value("root").starts_with("/dev/nbd0 / ext4 rw"), "{out}");
    // No failed unit, except binfmt_misc's automount after a shell initrd: the test root has
    // no modules for the test kernel (no kernel package in the debootstrap root), and only
    // systemd's initrd loads autofs4 before the switch.
    let failed = value("failed");
    let failed: Vec<&str> = failed
        .split_whitespace()
        .filter(|u| v.systemd || *u != "proc-sys-fs-binfmt_misc.automount")
        .collect();
    assert!(failed.is_empty(), "failed units {failed:?}:\n{out}");
    assert_eq!(value("state"), "active", "multi-user.target:\n{out}");
    assert!(
        out.contains("reboot: Power down"),
        "no clean power-off:\n{out}"
    );
    e2fsck_clean(&img).expect("the image is clean after the power-off");
}

mod real_system {
    use super::*;
    #[test]
    fn dracut059_systemd() {
        super::real_system(Variant {
            release: Release::Debian059,
            systemd: true,
        });
    }
    #[test]
    fn dracut059_shell() {
        super::real_system(Variant {
            release: Release::Debian059,
            systemd: false,
        });
    }
    #[test]
    fn ng111_systemd() {
        super::real_system(Variant {
            release: Release::Ng111,
            systemd: true,
        });
    }
}

/// TLS credentials from `nbdroot_tls_dir` (dracut.conf) land in the image, unpacked by the
/// release's own lsinitrd: the key 0600, the kernel TLS modules with them.
fn tls_credentials_in_the_image(release: Release) {
    let v = Variant {
        release,
        systemd: false,
    };
    let dir = scratch(v, "tls-credentials");
    let _ = std::fs::remove_dir_all(&dir);
    let creds = nbdroot_qemu::tls::hook_credentials(&dir).expect("credentials");
    let dracut = Dracut::get(release).expect("dracut");
    let mut spec = ImageSpec::nbdroot(false).expect("nbdroot binary");
    spec.conf
        .push(format!("nbdroot_tls_dir=\"{}\"", creds.display()));
    let img = dir.join("tls.img");
    build_image(&dracut, kernel(), &spec, &img).expect("dracut image");
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let lsinitrd = match release {
        Release::Debian059 => dracut.script.with_file_name("lsinitrd"),
        Release::Ng111 => dracut.basedir.join("lsinitrd.sh"),
    };
    let o = std::process::Command::new("bash")
        .arg(&lsinitrd)
        .arg("--unpack")
        .arg(&img)
        .env("dracutbasedir", &dracut.basedir)
        .current_dir(&unpacked)
        .output()
        .expect("run lsinitrd");
    assert!(o.status.success(), "lsinitrd --unpack: {o:?}");
    nbdroot_qemu::tls::assert_hook_credentials(&unpacked);
}

#[test]
fn tls_credentials_in_the_image_dracut059() {
    tls_credentials_in_the_image(Release::Debian059);
}

#[test]
fn tls_credentials_in_the_image_ng111() {
    tls_credentials_in_the_image(Release::Ng111);
}
