//! nbdroot's mkinitcpio hooks with the real mkinitcpio v41 (`$NBDROOT_VENDOR/mkinitcpio-41.tar.gz`,
//! default `../shared/vendor`): what the install hook adds to an image, which mount handler
//! the runtime hook selects under busybox ash with mkinitcpio's own `init_functions`, and VM
//! boots of real mkinitcpio busybox images. Without the archive every test fails naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nbdroot_qemu::mkinitcpio::{build_image, list_image, read_from_image, ImageSpec, Mkinitcpio};
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

fn scratch(name: &str) -> PathBuf {
    nbdroot_qemu::scratch("mkinitcpio-tests", name)
}

/// An image with `hooks`, built once per test process.
fn image(hooks: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
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
            let spec = ImageSpec::nbdroot(hooks).expect("nbdroot binary");
            build_image(mk, kernel(), &spec, &out).expect("mkinitcpio image");
            out
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
    for want in ["nbd", "virtio_net", "ena", "gve", "vmxnet3", "hv_netvsc", "xen-netfront", "mlx4_en"] {
        assert!(mods.iter().any(|m| m == want), "no {want} in {mods:?}");
    }
    for not in ["vxlan", "wireguard", "bonding", "wwan", "iosm", "veth", "tun", "dummy"] {
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
    let img = image(&["base", "udev", "autodetect", "modconf", "block", "nbdroot", "filesystems"]);
    let mods = modules_in(&list_image(&img).expect("list image"));
    assert!(mods.iter().any(|m| m == "nbd"), "{mods:?}");
    for not in ["ena", "gve", "vmxnet3", "mlx4_en", "hv_netvsc"] {
        assert!(!mods.iter().any(|m| m == not), "{not} survived autodetect: {mods:?}");
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
                nbdroot_qemu::repo_root().join("mkinitcpio/install").display(),
                mk.tree.join("install").display()
            ),
        )
        .args(["-H", "nbdroot"])
        .output()
        .expect("mkinitcpio -H");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for want in ["HOOKS=(base udev", "root=nbd:", "netroot=nbd:", "nbdroot=", "ip=", "rd.nbdroot.retries", "encrypt"] {
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
    let script = format!(
        r#"mount_handler=default_mount_handler
. '{init_functions}'
parse_cmdline < '{dir}/cmdline'
modprobe() {{ echo "MODPROBE $*"; }}
launch_interactive_shell() {{ echo "EMERGENCY-SHELL"; }}
default_mount_handler() {{ echo "DEFAULT-MOUNT root=$root"; }}
nbdroot_exe='{stub}'
. '{hook}'
run_hook
echo "handler=$mount_handler"
"$mount_handler" /new_root
echo "handler-returned=$?"
"#,
        init_functions = mk.init_functions().display(),
        dir = dir.display(),
        stub = stub.display(),
        hook = nbdroot_qemu::repo_root().join("mkinitcpio/hooks/nbdroot").display(),
    );
    std::fs::write(dir.join("test.sh"), &script).unwrap();
    // A private /tmp (getarg's cache) and /run (nbdroot's error line).
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none /tmp && mount -t tmpfs none /run && exec '{}' ash '{}'",
            mk.busybox.display(),
            dir.join("test.sh").display()
        ))
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
        assert!(out.contains("handler=nbdroot_mount_handler"), "{line}:\n{out}");
        assert!(out.contains("MODPROBE -q nbd"), "{line}:\n{out}");
        // Attach, then mount on /new_root, only when /init calls the handler.
        let calls: Vec<&str> = out.lines().filter(|l| l.starts_with("CALL ")).collect();
        assert_eq!(calls, ["CALL attach --mkinitcpio", "CALL mount /new_root"], "{line}:\n{out}");
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
        assert!(out.contains("handler=default_mount_handler"), "{line}:\n{out}");
        let calls: Vec<&str> = out.lines().filter(|l| l.starts_with("CALL ")).collect();
        assert_eq!(calls, ["CALL attach --mkinitcpio"], "{line}:\n{out}");
        // Attached before /init mounts.
        assert!(out.find("CALL attach").unwrap() < out.find("handler=").unwrap(), "{out}");
        assert!(out.contains("DEFAULT-MOUNT root="), "{line}:\n{out}");
    }
    for line in ["root=/dev/sda2 rw", "root=UUID=0a1b ro", "netroot=iscsi:10.0.0.1::::iqn root=/dev/sda1", ""] {
        let out = run_hook(line, 0);
        assert!(out.contains("handler=default_mount_handler"), "{line}:\n{out}");
        assert!(!out.contains("CALL "), "{line}:\n{out}");
        assert!(!out.contains("MODPROBE"), "{line}:\n{out}");
    }
}

/// A failing nbdroot: mkinitcpio's `err` with nbdroot's line, then the emergency shell; the
/// mount is not tried.
#[test]
fn mkinitcpio_runtime_hook_failure_reports_nbdroots_line() {
    let out = run_hook("root=nbd:10.0.0.1:wrong rw", 1);
    assert!(out.contains("ERROR: nbdroot: export \"wrong\" not found"), "{out}");
    assert!(out.contains("EMERGENCY-SHELL"), "{out}");
    assert!(!out.contains("CALL mount"), "{out}");
    let out = run_hook("netroot=nbd:10.0.0.1:wrong root=LABEL=x", 1);
    assert!(out.contains("ERROR: nbdroot: export \"wrong\" not found"), "{out}");
    assert!(out.find("EMERGENCY-SHELL").unwrap() < out.find("handler=").unwrap(), "{out}");
}
