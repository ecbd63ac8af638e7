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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nbdroot_qemu::dracut::{build_image, shutdown_files, Dracut, ImageSpec, Release};
use nbdroot_qemu::netns::{NetNs, HOST_IP};
use nbdroot_qemu::network_root::Manager;
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
    image(v, "dracut", |_| {})
}

/// The variant's image with dracut's network-legacy (dhclient) configuring the interface and
/// calling nbdroot as its netroot handler (`nbdroot_network=dracut`).
fn handler_initrd(v: Variant) -> PathBuf {
    image(v, "handler", |spec| {
        spec.extra_modules.push("network-legacy".into());
        spec.conf.push("nbdroot_network=dracut".into());
    })
}

/// Values made once per test process, one cell per variant and name.
type Cells<T> = OnceLock<Mutex<HashMap<(Variant, String), Arc<OnceLock<T>>>>>;

/// The cell of `(v, name)` in `cells`: each has its own, so a test whose value is made never
/// waits behind another's.
fn cell<T>(cells: &'static Cells<T>, v: Variant, name: &str) -> Arc<OnceLock<T>> {
    let mut map = cells.get_or_init(Default::default).lock().unwrap();
    map.entry((v, name.to_string())).or_default().clone()
}

/// The variant's image of kind `tag` (`adjust` changes nbdroot's spec), built once per test
/// process.
fn image(v: Variant, tag: &str, adjust: impl FnOnce(&mut ImageSpec)) -> PathBuf {
    static BUILT: Cells<PathBuf> = OnceLock::new();
    cell(&BUILT, v, tag)
        .get_or_init(|| {
            let dracut = Dracut::get(v.release).expect("dracut");
            let exe = std::env::current_exe().unwrap_or_default();
            let stem = exe.file_stem().unwrap_or_default().to_string_lossy();
            let out = nbdroot_qemu::cache_dir()
                .unwrap()
                .join(format!("dracut-{}-{tag}-{stem}.img", v.name()));
            let mut spec = ImageSpec::nbdroot(v.systemd).expect("nbdroot binary");
            adjust(&mut spec);
            build_image(&dracut, kernel(), &spec, &out).expect("dracut image");
            out
        })
        .clone()
}

fn scratch(v: Variant, name: &str) -> nbdroot_qemu::Scratch {
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
    vm_with(initrd(v), append)
}

fn vm_with(initrd: PathBuf, append: &str) -> VmConfig {
    let mut cfg = VmConfig::new(&kernel().vmlinuz, initrd);
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

/// What one boot showed, kept for the tests that share it: the console, and the server's
/// image read back after it (the guest's `/probe-result`, and whether fsck found it clean).
#[derive(Debug)]
struct SharedBoot {
    out: VmOutcome,
    probe_result: String,
    fsck: Result<(), String>,
}

/// A boot that several tests share, made once per variant and command line by whichever
/// test comes first. A failure to boot at all fails every test that shares it; each test
/// then asserts its own part, and fails with its own name.
fn shared_boot(v: Variant, name: &str, export: Option<&str>, append: &str) -> Arc<SharedBoot> {
    static BOOTS: Cells<Arc<SharedBoot>> = OnceLock::new();
    cell(&BOOTS, v, name)
        .get_or_init(|| {
            let dir = scratch(v, name);
            let img = probe_image(&dir, None, &[]);
            let out = boot_served(v, &img, export, |_| append.to_string());
            let probe_result = debugfs_cat(&img, "/probe-result")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("cannot read /probe-result: {e}"));
            let fsck = e2fsck_clean(&img).map_err(|e| e.to_string());
            Arc::new(SharedBoot {
                out,
                probe_result,
                fsck,
            })
        })
        .clone()
}

impl SharedBoot {
    /// [`assert_written`] on the image as it was after the boot.
    fn assert_written(&self) {
        assert!(
            self.probe_result.starts_with("ok uptime="),
            "{}",
            self.probe_result
        );
        if let Err(e) = &self.fsck {
            panic!("the image is not clean: {e}");
        }
    }
}

/// The boot dracut's case 1 and the late network driver share: an export name, and
/// `rd.nbdroot.link_timeout=1`.
fn late_nic_boot(v: Variant) -> Arc<SharedBoot> {
    let append = format!("root=nbd:{FWD_IP}:raw rd.nbdroot.link_timeout=1 rw");
    shared_boot(v, "late-nic", Some("raw"), &append)
}

/// dracut's case 1: `root=nbd:<ip>:<export>` (in the late network driver's boot).
fn export_name(v: Variant) {
    let boot = late_nic_boot(v);
    assert_root(&boot.out, "/dev/nbd0 / ext4 rw");
    boot.assert_written();
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

/// A network driver later than nbdroot's interface wait: `rd.nbdroot.link_timeout=1` ends the
/// early attach (started before udev's coldplug, which takes seconds here) with no interface
/// ready; the settled hook tries again once udev has settled, and the root comes up.
fn late_network_driver(v: Variant) {
    let boot = late_nic_boot(v);
    let out = &boot.out;
    assert!(
        out.contains("nbdroot: no network interface appeared within 1 s")
            || out.contains("nbdroot: udev did not finish with interface"),
        "the early attach did not meet the 1 s bound, so this boot tests nothing:\n{out}"
    );
    assert_root(out, "/dev/nbd0 / ext4 rw");
    boot.assert_written();
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
        // systemd's status lines say whether dev-root.device was found.
        cfg.append.push_str(" systemd.show_status=1");
        cfg.netns = Some(ns.name.clone());
        let out = boot(&cfg);
        drop(ns);
        assert_root(&out, want);
        // dracut's generator makes initrd.target wait for /dev/root's device unit (up to
        // rd.timeout): udev must have made the link, not only nbdroot's fallback link.
        if v.systemd {
            assert!(
                out.log
                    .lines()
                    .any(|l| l.contains("Found device") && l.contains("dev-root.device")),
                "systemd never saw /dev/root (its job waited for rd.timeout):\n{out}"
            );
        }
        // The root's network managers are told to keep the boot interface as it is: the one
        // nbdroot's DHCP client configured, by udev's name for it.
        let ifc = out
            .log
            .lines()
            .find_map(|l| l.split("nbdroot: ").nth(1)?.split_once(": DHCP lease "))
            .map(|(ifc, _)| ifc.to_string())
            .unwrap_or_else(|| panic!("no DHCP lease line from nbdroot:\n{out}"));
        assert_ne!(
            ifc, "eth0",
            "the image did not name the interface as udev does"
        );
        let hints = out.lines_with("NBDROOT-HINT ");
        for want in [
            format!("10-nbdroot-{ifc}.network KeepConfiguration=yes"),
            format!("10-nbdroot-{ifc}.network ClientIdentifier=mac"),
            format!("50-nbdroot-{ifc}.conf keep-configuration=yes"),
        ] {
            assert!(
                hints.contains(&want.as_str()),
                "no hint {want:?} in {hints:?}"
            );
        }
    }
    assert_written(&img);
}

/// dracut's network-legacy configures eth0 by DHCP and calls `nbdroot eth0 nbd:… /sysroot`
/// (`nbdroot_network=dracut`): the root is attached by the handler, not by nbdroot's own DHCP.
fn netroot_handler(v: Variant) {
    let dir = scratch(v, "handler");
    let img = probe_image(&dir, None, &[]);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let netroot = format!("nbd:10.0.2.2:{}:ext4:noatime", srv.port);
    let mut cfg = vm_with(handler_initrd(v), &format!("root={netroot} ip=dhcp rw"));
    // systemd's status lines name a failing unit.
    cfg.append.push_str(" systemd.show_status=1");
    let out = boot(&cfg);
    drop(srv);
    assert_root(&out, "/dev/nbd0 / ext4 rw,noatime");
    // The interface is udev's name for it (ens2).
    let tail = format!(" configured by dracut, {netroot}");
    assert!(
        out.log
            .lines()
            .any(|l| l.contains("nbdroot: netroot handler: ") && l.trim_end().ends_with(&tail)),
        "nbdroot was not called as dracut's netroot handler:\n{out}"
    );
    assert!(
        !out.contains("DHCP lease"),
        "nbdroot ran its own DHCP client:\n{out}"
    );
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
    late_network_driver,
    label_and_partition,
    dhcp_root_path,
    bad_input,
    server_restart,
    netroot_handler,
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
    let dir = scratch(v, "real");
    let root = copy_debian_root(&dir);
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

    let img = dir.join("root.ext4");
    nbdroot_qemu::ext4_from_dir(&root, &img, 1024, None).expect("mkfs.ext4");
    let _ = std::fs::remove_dir_all(&root);
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

/// A copy of the Debian 12 root (debootstrap, systemd as init) in `dir`, for one test to add
/// files to.
fn copy_debian_root(dir: &Path) -> PathBuf {
    nbdroot_qemu::sysroot::debian_systemd_root_copy(dir).expect("a copy of the Debian root")
}

fn put_file(root: &Path, rel: &str, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `systemctl enable` as a link: `unit` wanted by `target`.
fn enable(root: &Path, target: &str, unit: &str) {
    let name = Path::new(unit).file_name().unwrap();
    let wants = root
        .join(format!("etc/systemd/system/{target}.wants"))
        .join(name);
    std::fs::create_dir_all(wants.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&wants);
    std::os::unix::fs::symlink(unit, &wants).unwrap();
}

/// `script` as a oneshot service run once multi-user.target is reached.
fn add_probe(root: &Path, script: &str) {
    put_file(
        root,
        "usr/local/bin/nbdroot-dracut-probe",
        script.as_bytes(),
        0o755,
    );
    put_file(
        root,
        "etc/systemd/system/nbdroot-dracut-probe.service",
        b"[Unit]\nDescription=nbdroot dracut probe\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nTimeoutStartSec=infinity\nExecStart=/usr/local/bin/nbdroot-dracut-probe\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    enable(
        root,
        "multi-user.target",
        "/etc/systemd/system/nbdroot-dracut-probe.service",
    );
}

/// Powers the real system off once it is up, after saying what / is.
const SHUTDOWN_PROBE: &str = r#"#!/bin/sh
echo "NBDT-DRACUT root=$(grep ' / ' /proc/mounts)" > /dev/console
echo "NBDT-DRACUT marker=$(ls /run/initramfs/.need_shutdown 2>&1)" > /dev/console
echo "NBDT-DRACUT restore-unit=$(systemctl is-active dracut-shutdown.service)" > /dev/console
echo "NBDT-DRACUT run=$(grep ' /run ' /proc/mounts)" > /dev/console
systemctl --no-block poweroff
"#;

/// The systemd kinds: at shutdown dracut returns to the initramfs (dracut-shutdown.service
/// unpacks it into /run/initramfs, systemd-shutdown execs its /shutdown): nbdroot's shutdown
/// hook disconnects /dev/nbd0 only after dracut unmounted the old root, and the image is clean.
///
/// The shell kinds: dracut's own init mounts /run `noexec` and moves it into the root, so
/// systemd-shutdown finds /run/initramfs/shutdown not executable and never returns to the
/// initramfs (dracut's behaviour, 059 and ng111 alike): the root's systemd-shutdown leaves the
/// root read-only, the device stays connected (the supervisor holds it) until the power-off,
/// and the image is clean.
fn shutdown_in_initramfs(v: Variant) {
    let dir = scratch(v, "shutdown");
    let root = copy_debian_root(&dir);
    let put = |rel: &str, bytes: &[u8], mode: u32| put_file(&root, rel, bytes, mode);
    let dracut = Dracut::get(v.release).expect("dracut");
    for (src, dst) in shutdown_files(&dracut) {
        let bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        put(
            dst,
            &bytes,
            if dst.ends_with(".service") {
                0o644
            } else {
                0o755
            },
        );
    }
    // The unit is WantedBy=sysinit.target in dracut's packages.
    enable(
        &root,
        "sysinit.target",
        "/usr/lib/systemd/system/dracut-shutdown.service",
    );
    // dracut-initramfs-restore unpacks with cpio, which minbase lacks (Debian's dracut
    // depends on it): the host's, the same Debian 12 build, needing only libc.
    put(
        "usr/bin/cpio",
        &std::fs::read("/usr/bin/cpio").expect("host cpio"),
        0o755,
    );
    // The initramfs the guest boots, with dracut's shutdown module, where Debian keeps it.
    let initrd = image(v, "shutdown", |spec| {
        // Packed, as distributions ship it: dracut-initramfs-restore's skipcpio takes an
        // unpacked image's one archive for an early cpio and skips all of it.
        spec.compress = true;
        spec.extra_modules.push("shutdown".into())
    });
    put(
        &format!("boot/initrd.img-{}", kernel().version),
        &std::fs::read(&initrd).expect("initrd"),
        0o644,
    );
    add_probe(&root, SHUTDOWN_PROBE);

    let img = dir.join("root.ext4");
    nbdroot_qemu::ext4_from_dir(&root, &img, 1024, None).expect("mkfs.ext4");
    let _ = std::fs::remove_dir_all(&root);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm_with(
        initrd,
        &format!(
            "root=nbd:10.0.2.2:{} rw systemd.mask=serial-getty@ttyS0.service",
            srv.port
        ),
    );
    // systemd's status lines show the unpack and the return to the initramfs.
    // dracut-ng says "Unmounted /oldroot." at info level, to the kernel log only (059 warns,
    // on the console too): the console shows that level with loglevel=7.
    cfg.append.push_str(" systemd.show_status=1 loglevel=7");
    // Room in /run for the unpacked initramfs (79 MB with every kernel module).
    cfg.memory_mib = 1024;
    cfg.deadline = Duration::from_secs(600);
    let out = boot(&cfg);
    drop(srv);
    assert!(
        out.contains("NBDT-DRACUT root=/dev/nbd0 / ext4 rw"),
        "the real root did not come up on /dev/nbd0:\n{out}"
    );
    for bad in ["I/O error", "EXT4-fs error", "Buffer I/O"] {
        assert!(!out.contains(bad), "{bad:?} in the guest's log:\n{out}");
    }
    assert!(out.contains("reboot: Power down"), "no power-off:\n{out}");
    e2fsck_clean(&img).expect("the image is clean after the power-off");
    if !v.systemd {
        let run = out.lines_with("NBDT-DRACUT run=").concat();
        assert!(
            run.contains("noexec"),
            "/run is not noexec in the shell kind any more: {run}\n{out}"
        );
        assert!(
            out.contains("systemd-shutdown[1]: All filesystems unmounted."),
            "systemd-shutdown did not finish with the root:\n{out}"
        );
        assert!(
            !out.contains("Returning to initrd"),
            "dracut's shell kind returned to the initramfs: test its shutdown hook there\n{out}"
        );
        return;
    }
    let lines: Vec<&str> = out.log.lines().collect();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let unmounted = at("Unmounted /oldroot").unwrap_or_else(|| {
        panic!("dracut's shutdown did not unmount /oldroot (no return to the initramfs?):\n{out}")
    });
    let disconnected = at("nbdroot: shutdown: /dev/nbd0 unmounted: disconnected")
        .unwrap_or_else(|| panic!("nbdroot's shutdown hook did not disconnect /dev/nbd0:\n{out}"));
    assert!(
        unmounted < disconnected,
        "/dev/nbd0 was disconnected before /oldroot was unmounted:\n{out}"
    );
}

mod shutdown_in_initramfs {
    use super::*;
    #[test]
    fn dracut059_systemd() {
        super::shutdown_in_initramfs(Variant {
            release: Release::Debian059,
            systemd: true,
        });
    }
    #[test]
    fn ng111_systemd() {
        super::shutdown_in_initramfs(Variant {
            release: Release::Ng111,
            systemd: true,
        });
    }
    #[test]
    fn dracut059_shell() {
        super::shutdown_in_initramfs(Variant {
            release: Release::Debian059,
            systemd: false,
        });
    }
    #[test]
    fn ng111_shell() {
        super::shutdown_in_initramfs(Variant {
            release: Release::Ng111,
            systemd: false,
        });
    }
}

/// Past a 2-minute lease: the address and a write every 10 s; then what the manager says of
/// the boot interface: networkd's own state files (networkctl needs D-Bus, which the root
/// lacks), NetworkManager's nmcli; and the manager's log.
const LEASE_PROBE: &str = r#"#!/bin/sh
say() { echo "NBDT-NET $*" > /dev/console; }
# The boot interface: the one nbdroot left its networkd hint for.
ifc=$(ls /run/systemd/network/ | sed -n 's/^10-nbdroot-\(.*\)\.network$/\1/p' | head -n1)
idx=$(cat "/sys/class/net/$ifc/ifindex")
say "interface=$ifc"
say "udevd=$(systemctl is-active systemd-udevd.service)"
say "networkd=$(systemctl is-active systemd-networkd.service)"
say "NetworkManager=$(systemctl is-active NetworkManager.service)"
say "udev-trigger=$(systemctl is-active systemd-udev-trigger.service)"
say "udev-db $(udevadm info -q property "/sys/class/net/$ifc" 2>&1 | grep -E 'USEC_INITIALIZED|ID_RENAMING|ID_NET_LINK_FILE|INTERFACE=' | tr '\n' ' ')"
start=$(cut -d. -f1 /proc/uptime)
i=0
while [ $i -lt @ROUNDS@ ]; do
  i=$((i + 1))
  dd if=/dev/urandom of=/var/tmp/nbdt-io bs=64k count=4 conv=fsync 2>/dev/null || say "io-error round=$i"
  now=$(cut -d. -f1 /proc/uptime)
  addr=
  for a in $(hostname -I); do case $a in *.*.*.*) addr=$a; break ;; esac; done
  say "t=$((now - start)) addr=$addr"
  sleep 10
done
if [ -e /run/systemd/netif/links/$idx ]; then
  say "link $(tr '\n' ' ' < "/run/systemd/netif/links/$idx" 2>&1)"
  say "lease $(tr '\n' ' ' < "/run/systemd/netif/leases/$idx" 2>&1)"
  journalctl -b -u systemd-networkd --no-pager -o cat 2>&1 | tail -n 15 | while read -r l; do say "log $l"; done
fi
if command -v nmcli > /dev/null; then
  # NetworkManager assumed nbdroot's profile (named by the device state nbdroot left) and runs
  # DHCP there itself, past the lease: same address, same client identifier.
  say "nm $(nmcli -t -f GENERAL.STATE,GENERAL.CONNECTION,IP4.ADDRESS device show "$ifc" 2>&1 | tr '\n' ' ')"
  say "nm-dhcp $(nmcli -t -f DHCP4 device show "$ifc" 2>&1 | tr '\n' ' ')"
  journalctl -b -u NetworkManager --no-pager -o cat 2>&1 | grep -i -E "$ifc|dhcp|assume" | tail -n 25 | while read -r l; do say "log $l"; done
fi
say "kernel-io-errors=$(dmesg | grep -c -E 'I/O error|EXT4-fs error|block nbd')"
say "done"
systemctl --no-block poweroff
"#;

/// After switch_root the root's network manager (a Debian root with the kernel package, so
/// udev, and the manager installed by apt) takes the boot interface over with nbdroot's hints,
/// and the root's writes go on without an I/O error:
/// - systemd-networkd manages it with nbdroot's `.network` (`KeepConfiguration=yes`): past a
///   2-minute lease from dnsmasq the address is the same and networkd holds the renewed lease;
/// - NetworkManager assumes nbdroot's profile (the device state names it) and renews the lease
///   with its own DHCP, nbdroot's MAC client identifier: the same address past the 2 minutes.
///
/// Either way dnsmasq has one lease for the guest, not two, acknowledged more than once.
fn manager_keeps_the_lease(v: Variant, manager: Manager) {
    let dir = scratch(v, &format!("lease-{manager:?}"));
    let root = nbdroot_qemu::network_root::copy(manager, &dir).expect("the Debian root");
    // The manager renews the lease itself (at half of it): the probe, which starts after
    // nbdroot's lease, runs past the 2 minutes (a write every 10 s).
    let rounds = 14;
    add_probe(&root, &LEASE_PROBE.replace("@ROUNDS@", &rounds.to_string()));
    let img = dir.join("root.ext4");
    nbdroot_qemu::ext4_from_dir(&root, &img, 1536, None).expect("mkfs.ext4");
    let _ = std::fs::remove_dir_all(&root);

    let port = free_port().expect("free port");
    let mut ns = NetNs::new("drls").expect("network namespace");
    ns.dnsmasq_leasing(&[], "2m").expect("dnsmasq");
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
    // No login prompt on the console the probe writes to.
    let mut cfg = vm(
        v,
        &format!("root=nbd:{HOST_IP}:{port} ip=dhcp rw systemd.mask=serial-getty@ttyS0.service"),
    );
    cfg.netns = Some(ns.name.clone());
    cfg.memory_mib = 1024;
    cfg.deadline = Duration::from_secs(900);
    let out = boot(&cfg);
    let leases = std::fs::read_to_string(ns.leases()).unwrap_or_default();
    let dnsmasq = ns.dnsmasq_log();
    drop(ns);

    assert!(
        out.contains("NBDT-NET done"),
        "the probe did not finish:\n{out}"
    );
    // The address nbdroot's DHCP client got in the initramfs.
    let initial = out
        .log
        .lines()
        .find_map(|l| l.split("DHCP lease ").nth(1))
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no DHCP lease line from nbdroot:\n{out}"))
        .to_string();
    let unit = match manager {
        Manager::Networkd => "networkd=active",
        Manager::NetworkManager => "NetworkManager=active",
    };
    assert!(
        out.contains(&format!("NBDT-NET {unit}")),
        "the root's manager is not running:\n{out}"
    );
    let samples = out.lines_with("NBDT-NET t=");
    assert_eq!(samples.len(), rounds, "{samples:?}\n{out}");
    let mut last_t = 0;
    for r in &samples {
        let (t, addr) = r.split_once(" addr=").unwrap_or((r, ""));
        let t: u64 = t.trim().trim_start_matches("t=").parse().unwrap_or(0);
        assert_eq!(
            addr.trim(),
            initial,
            "the address at t={t} s: {samples:?}\n{out}"
        );
        last_t = t;
    }
    assert!(
        last_t >= 130,
        "the probe ended {last_t} s in, not past the 120-s lease"
    );
    assert!(!out.contains("NBDT-NET io-error"), "writes failed:\n{out}");
    assert!(
        out.contains("NBDT-NET kernel-io-errors=0"),
        "I/O errors in the guest's kernel log:\n{out}"
    );
    let ifc = out
        .lines_with("NBDT-NET interface=")
        .first()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    assert!(!ifc.is_empty(), "no nbdroot hint for networkd:\n{out}");
    match manager {
        Manager::Networkd => {
            let link = out.lines_with("NBDT-NET link ").concat();
            assert!(
                link.contains("ADMIN_STATE=configured")
                    && link.contains(&format!(
                        "NETWORK_FILE=/run/systemd/network/10-nbdroot-{ifc}.network"
                    )),
                "networkd does not manage {ifc} with nbdroot's hint: {link}\n{out}"
            );
            let lease = out.lines_with("NBDT-NET lease ").concat();
            assert!(
                lease.contains(&format!("ADDRESS={initial} ")),
                "networkd holds no lease of {initial}: {lease}\n{out}"
            );
        }
        Manager::NetworkManager => {
            // NetworkManager took the interface over with nbdroot's profile, not as
            // "external" (which runs no DHCP).
            let nm = out.lines_with("NBDT-NET nm ").concat();
            assert!(
                nm.contains("GENERAL.STATE:100 (connected) ")
                    && nm.contains(&format!("GENERAL.CONNECTION:nbdroot-{ifc} "))
                    && nm.contains(&format!("IP4.ADDRESS[1]:{initial}/")),
                "NetworkManager does not hold {initial} on {ifc} with nbdroot's profile: {nm}\n{out}"
            );
            // Its lease, for nbdroot's client identifier: type 1 and the MAC (QEMU's default).
            let dhcp = out.lines_with("NBDT-NET nm-dhcp ").concat();
            assert!(
                dhcp.contains(&format!("ip_address = {initial}"))
                    && dhcp.contains("dhcp_client_identifier = 01:52:54:00:12:34:56"),
                "NetworkManager holds no lease of {initial} for the MAC: {dhcp}\n{out}"
            );
        }
    }
    // One lease: the root's client renewed nbdroot's (same client identifier).
    let lines: Vec<&str> = leases.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "dnsmasq's leases:\n{leases}\n{dnsmasq}");
    assert!(lines[0].contains(&initial), "{leases}");
    let acks = dnsmasq.lines().filter(|l| l.contains("DHCPACK")).count();
    assert!(acks >= 2, "no renewal by the root's client:\n{dnsmasq}");
    e2fsck_clean(&img).expect("the image is clean after the power-off");
}

mod manager_keeps_the_lease {
    use super::*;
    #[test]
    fn dracut059_systemd_networkd() {
        super::manager_keeps_the_lease(
            Variant {
                release: Release::Debian059,
                systemd: true,
            },
            Manager::Networkd,
        );
    }
    #[test]
    fn ng111_shell_network_manager() {
        super::manager_keeps_the_lease(
            Variant {
                release: Release::Ng111,
                systemd: false,
            },
            Manager::NetworkManager,
        );
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
