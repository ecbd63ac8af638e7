//! nbdroot's mkinitcpio hooks with the real mkinitcpio v41 (`$NBDROOT_VENDOR/mkinitcpio-41.tar.gz`,
//! default `../shared/vendor`): what the install hook adds to an image, which mount handler
//! the runtime hook selects under busybox ash with mkinitcpio's own `init_functions`, and VM
//! boots of real mkinitcpio busybox images. Without the archive every test fails naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nbdroot_qemu::mkinitcpio::{
    build_image, list_image, read_from_image, unpack_image, Built, ImageSpec, Mkinitcpio,
    NEWER_SYSTEMD,
};
use nbdroot_qemu::netns::{NetNs, HOST_IP};
use nbdroot_qemu::{
    debian_cloud_kernel, debugfs_cat, e2fsck_clean, free_port, qemu_nbd, run, scenario, Kernel,
    NbdServer, RootFs, VmConfig, VmOutcome,
};

/// A guest-side address forwarded to the host's server, so the default port 10809 works.
const FWD_IP: &str = "10.0.2.100";
/// The guest's static address on QEMU's user network.
const STATIC_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

fn mkinitcpio() -> &'static Mkinitcpio {
    static M: OnceLock<Mkinitcpio> = OnceLock::new();
    M.get_or_init(|| Mkinitcpio::get().unwrap_or_else(|e| panic!("mkinitcpio 41: {e}")))
}

fn kernel() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| debian_cloud_kernel().expect("Debian cloud kernel"))
}

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("mkinitcpio-tests", name)
}

/// An image with `hooks`, built once per test process.
fn image(hooks: &[&str]) -> PathBuf {
    built(hooks).path
}

/// The build of an image with `hooks` (a systemd image when they hold `systemd`), once per
/// test process.
fn built(hooks: &[&str]) -> Built {
    static BUILT: OnceLock<Mutex<HashMap<String, Built>>> = OnceLock::new();
    let key = hooks.join("-");
    let mk = mkinitcpio();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(key.clone())
        .or_insert_with(|| {
            let exe = std::env::current_exe().unwrap_or_default();
            let stem = exe.file_stem().unwrap_or_default().to_string_lossy();
            let out = nbdroot_qemu::cache_dir()
                .unwrap()
                .join(format!("mkinitcpio-{key}-{stem}.img"));
            let mut spec = if hooks.contains(&"systemd") {
                ImageSpec::systemd(hooks)
            } else {
                ImageSpec::nbdroot(hooks)
            }
            .expect("nbdroot binary");
            spec.hook_dirs
                .push(nbdroot_qemu::mkinitcpio::test_hooks().expect("test hooks"));
            build_image(mk, kernel(), &spec, &out).expect("mkinitcpio image")
        })
        .clone()
}

fn modules_in(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .filter(|p| p.contains("/kernel/") && p.contains(".ko"))
        .map(|p| {
            let f = p.rsplit('/').next().unwrap_or(p);
            f.split(".ko").next().unwrap_or(f).to_string()
        })
        .collect()
}

fn config_of(image: &Path) -> String {
    String::from_utf8(read_from_image(image, "config").expect("/config")).unwrap()
}

// Install hook.

/// Without autodetect: nbd, every Ethernet and VM NIC driver the kernel has (and no tunnels,
/// bonding or WWAN), the static binary byte for byte at /usr/bin/nbdroot, the runtime script
/// registered as a run_hook after udev's and never as a cleanup hook.
#[test]
fn mkinitcpio_install_hook_adds_module_nics_binary_and_runscript() {
    let img = image(ImageSpec::BUSYBOX_HOOKS);
    let listing = list_image(&img).expect("list image");
    let mods = modules_in(&listing);
    for want in [
        "nbd",
        "virtio_net",
        "ena",
        "gve",
        "vmxnet3",
        "hv_netvsc",
        "xen-netfront",
        "mlx4_en",
    ] {
        assert!(mods.iter().any(|m| m == want), "no {want} in {mods:?}");
    }
    for not in [
        "vxlan",
        "wireguard",
        "bonding",
        "wwan",
        "iosm",
        "veth",
        "tun",
        "dummy",
    ] {
        assert!(!mods.iter().any(|m| m == not), "{not} in {mods:?}");
    }
    let bin = read_from_image(&img, "usr/bin/nbdroot").expect("usr/bin/nbdroot");
    let host = std::fs::read(nbdroot_qemu::nbdroot_binary().unwrap()).unwrap();
    assert!(bin == host, "usr/bin/nbdroot differs from the built binary");
    assert!(listing.iter().any(|p| p == "hooks/nbdroot"), "{listing:?}");
    let config = config_of(&img);
    let hooks = config
        .lines()
        .find_map(|l| l.strip_prefix("HOOKS="))
        .unwrap_or_else(|| panic!("{config}"));
    let hooks = hooks.trim_matches('"');
    assert!(hooks.trim().ends_with("udev nbdroot"), "HOOKS={hooks}");
    let cleanup = config
        .lines()
        .find_map(|l| l.strip_prefix("CLEANUPHOOKS="))
        .unwrap_or_default();
    assert!(!cleanup.contains("nbdroot"), "{config}");
}

/// With autodetect first, only this machine's NIC drivers remain (the host's virtio_net);
/// nbd stays.
#[test]
fn mkinitcpio_install_hook_nics_narrowed_by_autodetect() {
    let host_virtio = Path::new("/sys/bus/virtio/drivers/virtio_net").is_dir();
    let img = image(&[
        "base",
        "udev",
        "autodetect",
        "modconf",
        "block",
        "nbdroot",
        "filesystems",
    ]);
    let mods = modules_in(&list_image(&img).expect("list image"));
    assert!(mods.iter().any(|m| m == "nbd"), "{mods:?}");
    for not in ["ena", "gve", "vmxnet3", "mlx4_en", "hv_netvsc"] {
        assert!(
            !mods.iter().any(|m| m == not),
            "{not} survived autodetect: {mods:?}"
        );
    }
    if host_virtio {
        assert!(mods.iter().any(|m| m == "virtio_net"), "{mods:?}");
    }
}

/// `mkinitcpio -H nbdroot` documents the HOOKS placement and the parameters.
#[test]
fn mkinitcpio_install_hook_help() {
    let mk = mkinitcpio();
    let out = Command::new("bash")
        .arg(mk.tree.join("mkinitcpio"))
        .env("MKINITCPIO_LIBRARY", &mk.tree)
        .env(
            "MKINITCPIO_INSTALL",
            format!(
                "{}:{}",
                nbdroot_qemu::repo_root()
                    .join("mkinitcpio/install")
                    .display(),
                mk.tree.join("install").display()
            ),
        )
        .args(["-H", "nbdroot"])
        .output()
        .expect("mkinitcpio -H");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "HOOKS=(base udev",
        "root=nbd:",
        "netroot=nbd:",
        "nbdroot=",
        "ip=",
        "rd.nbdroot.retries",
        "encrypt",
        "rd.nbdroot.tls.verify=none",
        "NBDROOT_TLS_DIR",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}

// Runtime hook, under busybox ash with mkinitcpio's init_functions.

/// Runs hooks/nbdroot's run_hook for `cmdline` as /init would (parse_cmdline, then the
/// hook), with nbdroot and modprobe stubbed, then calls the mount handler. Returns the
/// script's output: `handler=…`, the stub's calls (`CALL …`), and what the handler printed.
fn run_hook(cmdline: &str, stub_exit: u8) -> String {
    let mk = mkinitcpio();
    let dir = scratch(&format!("runtime-{}", nbdroot_qemu_unique()));
    // Everything the script runs or reads is copied here and named relative to it: the
    // private tmpfs on /tmp hides whatever lies under /tmp, a clone of the repo included,
    // but the script's working directory stays reachable.
    std::fs::copy(&mk.busybox, dir.join("busybox")).expect("copy busybox");
    std::fs::copy(mk.init_functions(), dir.join("init_functions")).expect("copy init_functions");
    let hook = nbdroot_qemu::repo_root().join("mkinitcpio/hooks/nbdroot");
    std::fs::copy(&hook, dir.join("hook")).expect("copy the hook");
    let stub = dir.join("nbdroot-stub");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"CALL $*\"\nif [ {stub_exit} != 0 ]; then mkdir -p /run/nbdroot; \
             echo \"nbdroot: export \\\"wrong\\\" not found\" > /run/nbdroot/error; fi\nexit {stub_exit}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("cmdline"), format!("{cmdline}\n")).unwrap();
    let script = r#"mount_handler=default_mount_handler
. ./init_functions
parse_cmdline < ./cmdline
modprobe() { echo "MODPROBE $*"; }
launch_interactive_shell() { echo "EMERGENCY-SHELL"; }
default_mount_handler() { echo "DEFAULT-MOUNT root=$root"; }
nbdroot_exe=./nbdroot-stub
. ./hook
run_hook
echo "handler=$mount_handler"
"$mount_handler" /new_root
echo "handler-returned=$?"
"#;
    std::fs::write(dir.join("test.sh"), script).unwrap();
    // A private /tmp (getarg's cache) and /run (nbdroot's error line).
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg("mount -t tmpfs none /tmp && mount -t tmpfs none /run && exec ./busybox ash ./test.sh")
        .current_dir(&dir)
        .output()
        .expect("unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmdline}:\n{text}");
    text
}

fn nbdroot_qemu_unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Which handler each command line selects, and what runs when.
#[test]
fn mkinitcpio_runtime_hook_selects_the_mount_handler() {
    let takeover = [
        "root=nbd:10.0.0.1:rootfs rw",
        "root=nbd:10.0.0.1:10809:ext4:noatime",
        "root=dhcp",
        "netroot=dhcp",
        "nbdroot=10.0.0.1,rootfs root=/dev/nbd0 rw",
        "nbdroot=10.0.0.1,rootfs",
        "nbdroot=10.0.0.1,rootfs,nbd1 root=LABEL=arch",
        "netroot=nbd:10.0.0.1:disk root=/dev/nbd0p2",
        "netroot=nbd:10.0.0.1:disk root=/dev/root",
    ];
    for line in takeover {
        let out = run_hook(line, 0);
        assert!(
            out.contains("handler=nbdroot_mount_handler"),
            "{line}:\n{out}"
        );
        assert!(out.contains("MODPROBE -q nbd"), "{line}:\n{out}");
        // Attach, then mount on /new_root, only when /init calls the handler.
        let calls: Vec<&str> = out.lines().filter(|l| l.starts_with("CALL ")).collect();
        assert_eq!(
            calls,
            ["CALL attach --mkinitcpio", "CALL mount /new_root"],
            "{line}:\n{out}"
        );
        let attach_at = out.find("CALL attach").unwrap();
        assert!(out.find("handler=").unwrap() < attach_at, "{line}:\n{out}");
    }
    let attach_now = [
        "netroot=nbd:10.0.0.1:disk root=LABEL=arch rw",
        "netroot=nbd:10.0.0.1:disk root=UUID=0a1b",
        "netroot=nbd:10.0.0.1:disk cryptdevice=/dev/nbd0p2:root root=/dev/mapper/root",
        "netroot=dhcp root=/dev/vg0/root",
    ];
    for line in attach_now {
        let out = run_hook(line, 0);
        assert!(
            out.contains("handler=default_mount_handler"),
            "{line}:\n{out}"
        );
        let calls: Vec<&str> = out.lines().filter(|l| l.starts_with("CALL ")).collect();
        assert_eq!(calls, ["CALL attach --mkinitcpio"], "{line}:\n{out}");
        // Attached before /init mounts.
        assert!(
            out.find("CALL attach").unwrap() < out.find("handler=").unwrap(),
            "{out}"
        );
        assert!(out.contains("DEFAULT-MOUNT root="), "{line}:\n{out}");
    }
    for line in [
        "root=/dev/sda2 rw",
        "root=UUID=0a1b ro",
        "netroot=iscsi:10.0.0.1::::iqn root=/dev/sda1",
        "",
    ] {
        let out = run_hook(line, 0);
        assert!(
            out.contains("handler=default_mount_handler"),
            "{line}:\n{out}"
        );
        assert!(!out.contains("CALL "), "{line}:\n{out}");
        assert!(!out.contains("MODPROBE"), "{line}:\n{out}");
    }
}

/// A failing nbdroot: mkinitcpio's `err` with nbdroot's line, then the emergency shell; the
/// mount is not tried.
#[test]
fn mkinitcpio_runtime_hook_failure_reports_nbdroots_line() {
    let out = run_hook("root=nbd:10.0.0.1:wrong rw", 1);
    assert!(
        out.contains("ERROR: nbdroot: export \"wrong\" not found"),
        "{out}"
    );
    assert!(out.contains("EMERGENCY-SHELL"), "{out}");
    assert!(!out.contains("CALL mount"), "{out}");
    let out = run_hook("netroot=nbd:10.0.0.1:wrong root=LABEL=x", 1);
    assert!(
        out.contains("ERROR: nbdroot: export \"wrong\" not found"),
        "{out}"
    );
    assert!(
        out.find("EMERGENCY-SHELL").unwrap() < out.find("handler=").unwrap(),
        "{out}"
    );
}

// VM boots of a real mkinitcpio busybox image (base udev modconf block nbdroot filesystems).

/// Prints the @nbdroot supervisor's command line, if one runs in the booted root.
const SUPERVISOR_STEP: &str = r#"for p in /proc/[0-9]*; do c=$($bb tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in @nbdroot*) echo "NBDROOT-SUPERVISOR $c";; esac; done"#;

/// A probe root (ext4, optionally labelled) for one test.
fn probe_image(dir: &Path, label: Option<&str>, steps: &[&str]) -> PathBuf {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.with_probe();
    // systemd's switch-root wants an OS tree.
    root.add_file("etc/os-release", "ID=nbdroot-probe\n", 0o644)
        .expect("os-release");
    root.add_probe_step(SUPERVISOR_STEP);
    for s in steps {
        root.add_probe_step(s);
    }
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, label).expect("mkfs.ext4");
    img
}

fn vm(append: &str) -> VmConfig {
    let mut cfg = VmConfig::new(&kernel().vmlinuz, image(ImageSpec::BUSYBOX_HOOKS));
    cfg.append = append.to_string();
    cfg.memory_mib = 512;
    cfg.deadline = Duration::from_secs(300);
    // mkinitcpio's emergency shell would wait on the console for ever.
    cfg.stop_on = vec!["dropped into an emergency shell".into()];
    cfg
}

fn boot(cfg: &VmConfig) -> VmOutcome {
    let out = run(cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung:\n{out}");
    out
}

/// mkinitcpio's init switched to the root, whose init ran with `want` mounted on / and the
/// supervisor alive.
fn assert_root(out: &VmOutcome, want: &str) {
    assert!(out.contains(":: running hook [nbdroot]"), "{out}");
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init did not finish:\n{out}"
    );
    let root = out.root_mount();
    assert!(
        root.starts_with(want),
        "/ is {root:?}, expected {want:?}:\n{out}"
    );
    assert!(
        out.contains("NBDROOT-SUPERVISOR @nbdroot"),
        "no supervisor after switch_root:\n{out}"
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

/// One boot of `img` served by qemu-nbd (export `export`) through the forward.
fn boot_served(img: &Path, export: Option<&str>, append: impl Fn(u16) -> String) -> VmOutcome {
    let srv = qemu_nbd(img, export, false).expect("qemu-nbd");
    let mut cfg = vm(&append(srv.port));
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    out
}

/// `root=nbd:<ip>:<export>` with a static `ip=`; the nbdroot handler mounts it.
#[test]
fn mkinitcpio_boot_static_ip() {
    let dir = scratch("static");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(&img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw {STATIC_IP} rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert!(
        out.contains(":: mounting the NBD root on /new_root"),
        "{out}"
    );
    assert_written(&img);
}

/// No `ip=`: nbdroot's DHCP client (QEMU's DHCP server); and `root=dhcp` with the whole
/// `nbd:` string, fstype and options from dnsmasq's root-path.
#[test]
fn mkinitcpio_boot_dhcp() {
    let dir = scratch("dhcp");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(&img, None, |port| format!("root=nbd:10.0.2.2:{port} rw"));
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert!(out.contains("NBDROOT-CMDLINE"), "{out}");

    let port = free_port().expect("free port");
    let mut ns = NetNs::new("mkrp").expect("network namespace");
    ns.dnsmasq(&[format!(
        "dhcp-option=option:root-path,nbd:{HOST_IP}:{port}:ext4:noatime"
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
    let mut cfg = vm("root=dhcp rw");
    cfg.netns = Some(ns.name.clone());
    let out = boot(&cfg);
    drop(ns);
    assert_root(&out, "/dev/nbd0 / ext4 rw,noatime");
    assert_written(&img);
}

/// With a network hook before nbdroot's (a stand-in for Arch's `net`): nbdroot adopts the
/// configured interface instead of configuring it again.
#[test]
fn mkinitcpio_boot_after_net_hook() {
    let dir = scratch("net-hook");
    let img = probe_image(&dir, None, &[]);
    let srv = qemu_nbd(&img, Some("raw"), false).expect("qemu-nbd");
    let mut cfg = vm(&format!("root=nbd:{FWD_IP}:raw {STATIC_IP} rw"));
    cfg.initrd = image(&[
        "base",
        "udev",
        "modconf",
        "block",
        "net",
        "nbdroot",
        "filesystems",
    ]);
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert!(out.contains("net: eth0 10.0.2.15/255.255.255.0"), "{out}");
    assert!(
        out.contains("eth0 is configured already: using it"),
        "{out}"
    );
    assert!(!out.contains("nbdroot: eth0: 10.0.2.15/24"), "{out}");
    assert_written(&img);
}

/// Debian's `nbdroot=<server>,<port>,nbd1` with `root=/dev/nbd1`.
#[test]
fn mkinitcpio_boot_debian_nbdroot() {
    let dir = scratch("debian");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(&img, None, |port| {
        format!("nbdroot=10.0.2.2,{port},nbd1 root=/dev/nbd1 {STATIC_IP} rw")
    });
    assert_root(&out, "/dev/nbd1 / ext4 rw");
    assert_written(&img);
}

/// `netroot=nbd:…` with `root=LABEL=…`: attached in run_hook, mounted by mkinitcpio's own
/// default handler through udev's by-label link.
#[test]
fn mkinitcpio_boot_netroot_label() {
    let dir = scratch("label");
    let img = probe_image(&dir, Some("archroot"), &[]);
    let out = boot_served(&img, Some("raw"), |_| {
        format!("netroot=nbd:{FWD_IP}:raw root=LABEL=archroot {STATIC_IP} rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw");
    assert!(
        out.contains(":: mounting 'LABEL=archroot' on real root"),
        "{out}"
    );
    assert_written(&img);
}

/// fstype and rootflags from the `nbd:` string, else from `rootfstype=`/`rootflags=` as
/// mkinitcpio's init reads them; `ro` mounts read-only.
#[test]
fn mkinitcpio_boot_fstype_and_rootflags() {
    let dir = scratch("fsopts");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(&img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw:ext4:noatime,errors=remount-ro {STATIC_IP} rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw,noatime");
    assert!(
        out.root_mount().contains("errors=remount-ro"),
        "{}",
        out.root_mount()
    );
    assert_written(&img);
    let out = boot_served(&img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw rootfstype=ext4 rootflags=nodiratime {STATIC_IP} rw")
    });
    assert_root(&out, "/dev/nbd0 / ext4 rw,nodiratime");
    let out = boot_served(&img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:raw:ext4 {STATIC_IP} ro")
    });
    assert_root(&out, "/dev/nbd0 / ext4 ro,relatime");
    assert!(out.contains("NBDROOT-PROBE-WRITE-FAILED"), "{out}");
}

/// A wrong export: mkinitcpio's ERROR line carrying nbdroot's, then its emergency shell.
#[test]
fn mkinitcpio_boot_wrong_export() {
    let dir = scratch("wrong");
    let img = probe_image(&dir, None, &[]);
    let out = boot_served(&img, Some("raw"), |_| {
        format!("root=nbd:{FWD_IP}:wrong {STATIC_IP} rd.nbdroot.retries=0 rw")
    });
    assert!(
        out.log
            .lines()
            .any(|l| l.contains("ERROR: nbdroot: export \"wrong\" not found")),
        "no ERROR line with nbdroot's:\n{out}"
    );
    assert!(out.contains("dropped into an emergency shell"), "{out}");
    assert!(!out.contains("NBDROOT-PROBE"), "{out}");
}

/// The server restarts after switch_root while the guest writes: no I/O error, the
/// supervisor reconnected.
#[test]
fn mkinitcpio_boot_server_restart() {
    let dir = scratch("restart");
    let img = probe_image(&dir, None, &[&scenario::writer_script()]);
    let mut server: NbdServer = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm(&format!("root=nbd:10.0.2.2:{} {STATIC_IP} rw", server.port));
    let log = dir.join("console.log");
    cfg.log_path = Some(log.clone());
    let (restarted, out) = std::thread::scope(|s| {
        let server = &mut server;
        let ctl = s.spawn(|| scenario::restart_server(&log, server, Duration::from_secs(3)));
        let out = boot(&cfg);
        (ctl.join().expect("control thread"), out)
    });
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

// systemd images: install/sd-nbdroot after `systemd`.

const SD_HOOKS: &[&str] = &[
    "base",
    "systemd",
    "modconf",
    "block",
    "sd-nbdroot",
    "filesystems",
];

/// The real mkinitcpio builds a systemd image with sd-nbdroot on Debian 12, missing only
/// what systemd 252 does not have: nbd and the NICs, the binary, the generator link, the
/// unit, nbd in modules-load.d, systemctl.
#[test]
fn mkinitcpio_sd_install_hook_build() {
    let b = built(SD_HOOKS);
    for m in &b.missed {
        assert!(NEWER_SYSTEMD.contains(&m.as_str()), "{m}");
    }
    let listing = list_image(&b.path).expect("list image");
    for want in [
        "usr/bin/nbdroot",
        "usr/lib/systemd/system-generators/nbdroot-generator",
        "usr/lib/systemd/system/nbdroot.service",
        "etc/modules-load.d/nbdroot.conf",
        "usr/bin/systemctl",
        "usr/lib/systemd/systemd",
    ] {
        assert!(listing.iter().any(|p| p == want), "no {want}");
    }
    let mods = modules_in(&listing);
    for want in ["nbd", "virtio_net", "ena"] {
        assert!(mods.iter().any(|m| m == want), "no {want} in {mods:?}");
    }
    let conf = read_from_image(&b.path, "etc/modules-load.d/nbdroot.conf").unwrap();
    assert_eq!(conf, b"nbd\n");
    let unit = read_from_image(&b.path, "usr/lib/systemd/system/nbdroot.service").unwrap();
    assert!(
        String::from_utf8_lossy(&unit).contains("ExecStart=/usr/bin/nbdroot attach --mkinitcpio")
    );
    // Without the systemd hook before it, the build says so.
    let out = nbdroot_qemu::cache_dir()
        .unwrap()
        .join("mkinitcpio-sd-alone.img");
    let spec = ImageSpec::nbdroot(&["base", "sd-nbdroot"]).unwrap();
    let err = build_image(mkinitcpio(), kernel(), &spec, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sd-nbdroot needs the 'systemd' hook before it"),
        "{err}"
    );
}

fn sd_vm(append: &str) -> VmConfig {
    let mut cfg = vm(&format!(
        "{append} systemd.show_status=1 systemd.log_target=console"
    ));
    cfg.initrd = image(SD_HOOKS);
    // The emergency target with a locked root account.
    cfg.stop_on = vec!["emergency".into()];
    cfg
}

/// The real mkinitcpio's systemd image boots `root=nbd:` with a static `ip=`: the generator
/// pulls in nbdroot.service and writes sysroot.mount, the supervisor survives the switch.
#[test]
fn mkinitcpio_sd_boot_static_ip() {
    let dir = scratch("sd-static");
    let img = probe_image(&dir, None, &[]);
    let srv = qemu_nbd(&img, Some("raw"), false).expect("qemu-nbd");
    let mut cfg = sd_vm(&format!(
        "root=nbd:{FWD_IP}:raw:ext4:noatime {STATIC_IP} rw"
    ));
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init did not finish:\n{out}"
    );
    let root = out.root_mount();
    assert!(
        root.starts_with("/dev/nbd0 / ext4 rw,noatime"),
        "{root}\n{out}"
    );
    assert!(out.contains("NBDROOT-SUPERVISOR @nbdroot"), "{out}");
    assert_written(&img);
}

/// `systemd-analyze verify` on `units` (with `root` for their executables): no complaint.
fn verify(root: Option<&Path>, units: &[PathBuf]) {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]);
    if let Some(r) = root {
        cmd.arg(format!("--root={}", r.display()));
    }
    let out = cmd.args(units).output().expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "{units:?}:\n{text}"
    );
}

/// The image's generator, run (chrooted into the unpacked image) for several command lines:
/// what it writes, and `systemd-analyze verify` on sysroot.mount and nbdroot.service.
#[test]
fn mkinitcpio_sd_generated_units_verify() {
    let b = built(SD_HOOKS);
    let dir = scratch("sd-verify");
    let tree = dir.join("tree");
    unpack_image(&b.path, &tree).expect("unpack");
    // The unit as it is in the image, its ExecStart found under --root.
    verify(
        Some(&tree),
        &[PathBuf::from("/usr/lib/systemd/system/nbdroot.service")],
    );
    let cases: &[(&str, Option<&str>, bool)] = &[
        (
            "root=nbd:10.0.0.1:raw:ext4:noatime rw",
            Some("What=/dev/nbd0\nWhere=/sysroot\nType=ext4\nOptions=rw,noatime\n"),
            true,
        ),
        (
            "netroot=nbd:10.0.0.1:raw root=LABEL=arch",
            Some("What=/dev/disk/by-label/arch\n"),
            true,
        ),
        (
            "nbdroot=10.0.0.1,raw,nbd1 root=/dev/nbd1p2 rw",
            Some("What=/dev/nbd1p2\n"),
            true,
        ),
        (
            "netroot=nbd:10.0.0.1:raw cryptdevice=/dev/nbd0p2:root root=/dev/mapper/root",
            None,
            true,
        ),
        ("root=/dev/sda1 rw", None, false),
    ];
    for (i, (line, mount, wanted)) in cases.iter().enumerate() {
        std::fs::write(tree.join("proc/cmdline"), format!("{line}\n")).unwrap();
        let gen = format!("/run/gen{i}");
        let st = Command::new("chroot")
            .arg(&tree)
            .arg("/usr/lib/systemd/system-generators/nbdroot-generator")
            .args([
                format!("{gen}/normal"),
                format!("{gen}/early"),
                format!("{gen}/late"),
            ])
            .status()
            .expect("chroot");
        assert!(st.success(), "{line}");
        let early = tree.join(gen.trim_start_matches('/')).join("early");
        let link = early.join("initrd-root-device.target.wants/nbdroot.service");
        assert_eq!(
            std::fs::read_link(&link).ok(),
            wanted.then(|| PathBuf::from("/usr/lib/systemd/system/nbdroot.service")),
            "{line}"
        );
        let unit = early.join("sysroot.mount");
        match mount {
            Some(want) => {
                let text = std::fs::read_to_string(&unit).unwrap_or_default();
                assert!(text.contains(want), "{line}:\n{text}");
                verify(None, &[unit]);
            }
            None => assert!(!unit.exists(), "{line}"),
        }
    }
}

/// `netroot=nbd:` with `root=LABEL=` in the systemd image.
#[test]
fn mkinitcpio_sd_boot_netroot_label() {
    let dir = scratch("sd-label");
    let img = probe_image(&dir, Some("archroot"), &[]);
    let srv = qemu_nbd(&img, Some("raw"), false).expect("qemu-nbd");
    let mut cfg = sd_vm(&format!(
        "netroot=nbd:{FWD_IP}:raw root=LABEL=archroot {STATIC_IP} rw"
    ));
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(out.root_mount().starts_with("/dev/nbd0 / ext4 rw"), "{out}");
    assert!(out.contains("NBDROOT-SUPERVISOR @nbdroot"), "{out}");
    assert_written(&img);
}

/// A wrong export in the systemd image: nbdroot's line, the unit failed, emergency mode.
#[test]
fn mkinitcpio_sd_boot_wrong_export() {
    let dir = scratch("sd-wrong");
    let img = probe_image(&dir, None, &[]);
    let srv = qemu_nbd(&img, Some("raw"), false).expect("qemu-nbd");
    let mut cfg = sd_vm(&format!("root=nbd:{FWD_IP}:wrong {STATIC_IP} rw"));
    cfg.guestfwd.push((FWD_IP.into(), 10809, srv.port));
    let out = boot(&cfg);
    drop(srv);
    assert!(out.contains("nbdroot: export \"wrong\" not found"), "{out}");
    assert!(
        out.contains("Failed to start") && out.contains("nbdroot.service"),
        "{out}"
    );
    assert!(out.contains("emergency"), "{out}");
    assert!(!out.contains("NBDROOT-PROBE"), "{out}");
}

/// The server restarts after systemd's switch_root: no I/O error.
#[test]
fn mkinitcpio_sd_boot_server_restart() {
    let dir = scratch("sd-restart");
    let img = probe_image(&dir, None, &[&scenario::writer_script()]);
    let mut server: NbdServer = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = sd_vm(&format!("root=nbd:10.0.2.2:{} {STATIC_IP} rw", server.port));
    let log = dir.join("console.log");
    cfg.log_path = Some(log.clone());
    let (restarted, out) = std::thread::scope(|s| {
        let server = &mut server;
        let ctl = s.spawn(|| scenario::restart_server(&log, server, Duration::from_secs(3)));
        let out = boot(&cfg);
        (ctl.join().expect("control thread"), out)
    });
    assert!(
        restarted,
        "the restart happened while the guest wrote:\n{out}"
    );
    assert!(out.root_mount().starts_with("/dev/nbd0 / ext4 rw"), "{out}");
    assert!(
        !out.contains("NBDT io-error"),
        "I/O errors in the guest:\n{out}"
    );
    assert!(out.contains("NBDT errors=0"), "{out}");
    drop(server);
    assert_written(&img);
}

/// The benchmark's reference: the AUR hook's shape (net hook, nbd-client, root=/dev/nbd0)
/// in the same mkinitcpio boots the same root.
#[test]
fn mkinitcpio_boot_nbd_client_reference() {
    let dir = scratch("reference");
    let img = probe_image(&dir, None, &[]);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm(&format!(
        "root=/dev/nbd0 rootfstype=ext4 nbd_host=10.0.2.2 nbd_port={} {STATIC_IP} rw",
        srv.port
    ));
    cfg.initrd = image(&[
        "base",
        "udev",
        "modconf",
        "block",
        "net",
        "nbdclient",
        "filesystems",
    ]);
    let out = boot(&cfg);
    drop(srv);
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(out.root_mount().starts_with("/dev/nbd0 / ext4 rw"), "{out}");
    assert!(!out.contains(":: running hook [nbdroot]"), "{out}");
    assert_written(&img);
}

/// TLS credentials from `NBDROOT_TLS_DIR` (set in mkinitcpio.conf) land in both kinds of
/// image, unpacked by mkinitcpio's own lsinitcpio: the key 0600, the kernel TLS modules with
/// them. A certificate without its key stops the build with one line.
#[test]
fn mkinitcpio_install_hooks_put_tls_credentials_in_the_image() {
    let dir = scratch("tls-credentials");
    let _ = std::fs::remove_dir_all(&dir);
    let creds = nbdroot_qemu::tls::hook_credentials(&dir).expect("credentials");
    let mk = mkinitcpio();
    for hooks in [
        ImageSpec::BUSYBOX_HOOKS,
        &[
            "base",
            "systemd",
            "modconf",
            "block",
            "sd-nbdroot",
            "filesystems",
        ][..],
    ] {
        let mut spec = if hooks.contains(&"systemd") {
            ImageSpec::systemd(hooks)
        } else {
            ImageSpec::nbdroot(hooks)
        }
        .expect("nbdroot binary");
        spec.conf
            .push(format!("NBDROOT_TLS_DIR={}", creds.display()));
        let name = hooks.join("-");
        let out = dir.join(format!("{name}.img"));
        build_image(mk, kernel(), &spec, &out).expect("mkinitcpio image");
        let unpacked = dir.join(&name);
        std::fs::create_dir_all(&unpacked).unwrap();
        let o = std::process::Command::new("bash")
            .arg(mk.tree.join("lsinitcpio"))
            .arg("-x")
            .arg(&out)
            .current_dir(&unpacked)
            .output()
            .expect("run lsinitcpio");
        assert!(o.status.success(), "lsinitcpio -x: {o:?}");
        nbdroot_qemu::tls::assert_hook_credentials(&unpacked);
    }

    std::fs::remove_file(creds.join("client-key.pem")).unwrap();
    let mut spec = ImageSpec::nbdroot(ImageSpec::BUSYBOX_HOOKS).expect("nbdroot binary");
    spec.conf
        .push(format!("NBDROOT_TLS_DIR={}", creds.display()));
    let err = build_image(mk, kernel(), &spec, &dir.join("half.img"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has only one of client-cert.pem and client-key.pem"),
        "{err}"
    );
}
