//! The Debian package in a Debian 12 root (the debootstrap root, copied): it installs with
//! dpkg beside nbd-client, diverts nbd-client's initramfs scripts away, ships a unit systemd
//! accepts, reads /etc/nbdtab, and gives nbd-client its scripts back when removed. lintian
//! finds no error in it.

use std::path::Path;
use std::process::Command;

use nbdroot_qemu::debian::{build_deb, chroot, copy_in, initramfs_tools_debs, nbd_client_debs};
use nbdroot_qemu::debian_boot::{prepare, DebianBoot, Extras, NbdPackage, SERVER_IP};
use nbdroot_qemu::debian_probe::{add_probe, add_probe_with, status_blocks, tagged, value, FILES};
use nbdroot_qemu::luks_lvm::{self, Layout};
use nbdroot_qemu::netns::NetNs;
use nbdroot_qemu::sysroot::debian_systemd_root_copy;
use nbdroot_qemu::{
    debugfs_cat, e2fsck_clean, md5_hex, nbd_server, nbd_server_in, nbdroot_binary, run, scratch,
    RootFs,
};

const ITD: &str = "/usr/share/initramfs-tools";

fn sh(root: &Path, step: &str, script: &str) -> String {
    let out = chroot(root, step, script).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn package_diverts_nbd_client_scripts_and_gives_them_back() {
    let dir = scratch("debian", "package");
    let deb = build_deb(&nbdroot_binary().unwrap(), &dir).unwrap();

    // No error from lintian (warnings and notes are shown, not failed on).
    let lint = Command::new("lintian")
        .args(["--fail-on", "error", "-E", "--pedantic"])
        .arg(&deb)
        .output()
        .expect("run lintian (apt-get install lintian)");
    let said = String::from_utf8_lossy(&lint.stdout);
    assert!(lint.status.success(), "lintian:\n{said}");
    assert!(!said.lines().any(|l| l.starts_with("E: ")), "{said}");

    let root = debian_systemd_root_copy(&dir).unwrap();
    let client = copy_in(&root, &nbd_client_debs().unwrap()).unwrap();
    let ours = copy_in(&root, &[deb]).unwrap();
    sh(
        &root,
        "install nbd-client",
        &format!("dpkg -i {}", client.join(" ")),
    );
    let before = sh(
        &root,
        "list",
        &format!("ls {ITD}/hooks {ITD}/scripts/local-top"),
    );
    assert!(
        before.contains("\nnbd\n") && before.contains("nbd-client"),
        "{before}"
    );

    sh(&root, "install nbdroot", &format!("dpkg -i {}", ours[0]));
    let ls = |dir: &str| -> Vec<String> {
        sh(&root, "list", &format!("ls {ITD}/{dir}"))
            .lines()
            .map(String::from)
            .collect()
    };
    let hooks = ls("hooks");
    assert!(hooks.contains(&"nbdroot".into()), "{hooks:?}");
    assert!(
        !hooks.iter().any(|h| h == "nbd" || h == "nbd-client"),
        "nbd-client's hooks must be out of initramfs-tools' way: {hooks:?}"
    );
    assert_eq!(ls("scripts/local-top"), Vec::<String>::new());
    assert_eq!(ls("scripts/init-premount"), vec!["nbdroot".to_string()]);
    assert_eq!(
        sh(&root, "list", "ls /usr/share/nbdroot/nbd-client"),
        "hooks-nbd\nhooks-nbd-client\nlocal-top-nbd\n"
    );
    let diversions = sh(
        &root,
        "list diversions",
        "dpkg-divert --list nbdroot | sort",
    );
    assert_eq!(diversions.lines().count(), 3, "{diversions}");
    assert!(diversions.contains(&format!(
        "diversion of {ITD}/scripts/local-top/nbd to /usr/share/nbdroot/nbd-client/local-top-nbd by nbdroot"
    )));

    // The unit, as systemd reads it for an instance.
    sh(
        &root,
        "systemd-analyze verify",
        "systemd-analyze verify --man=no nbdroot@nbd1.service",
    );
    // The man pages, completions and documentation are where Debian looks.
    sh(
        &root,
        "installed files",
        "test -x /usr/sbin/nbdroot && test -f /usr/share/man/man8/nbdroot-connect.8.gz \
         && test -f /usr/share/bash-completion/completions/nbdroot \
         && test -f /usr/share/doc/nbdroot/copyright && test -f /usr/share/doc/nbdroot/changelog.gz",
    );

    // nbdtab as nbd-client reads it: the entry is found (and the attach fails, no nbd here).
    let o = Command::new("chroot")
        .arg(&root)
        .args([
            "/bin/sh",
            "-c",
            "printf 'nbd1 127.0.0.1 data port=10900,_x\\n' >/etc/nbdtab; /usr/sbin/nbdroot connect nbd1 -v",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/nbdtab: line 1: nbd1 is 127.0.0.1:10900 export \"data\""),
        "{err}"
    );

    sh(&root, "remove nbdroot", "dpkg --purge nbdroot");
    let after = sh(
        &root,
        "list",
        &format!("ls {ITD}/hooks {ITD}/scripts/local-top"),
    );
    assert_eq!(
        after, before,
        "removing nbdroot gives nbd-client its scripts back"
    );
    assert_eq!(
        sh(&root, "list diversions", "dpkg-divert --list nbdroot"),
        ""
    );
    sh(&root, "no leftovers", "test ! -e /usr/share/nbdroot");
}

/// TLS credentials from `NBDROOT_TLS_DIR` land in an initramfs-tools image, built by
/// mkinitramfs with the package's hook and unpacked by unmkinitramfs: the key 0600, the kernel
/// TLS modules with them. A certificate without its key stops mkinitramfs with one line.
#[test]
fn initramfs_tools_hook_puts_tls_credentials_in_the_image() {
    let dir = scratch("debian", "tls-credentials");
    let deb = build_deb(&nbdroot_binary().unwrap(), &dir).unwrap();
    let root = debian_systemd_root_copy(&dir).unwrap();
    let tools = copy_in(&root, &initramfs_tools_debs(&dir).unwrap()).unwrap();
    sh(
        &root,
        "install initramfs-tools",
        &format!("dpkg -i --force-depends {}", tools.join(" ")),
    );
    let ours = copy_in(&root, &[deb]).unwrap();
    sh(&root, "install nbdroot", &format!("dpkg -i {}", ours[0]));
    // The kernel the images are for: its modules and its config, which mkinitramfs reads.
    let kernel = nbdroot_qemu::debian_cloud_kernel().expect("Debian cloud kernel");
    let modules = root.join("lib/modules");
    std::fs::create_dir_all(&modules).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(kernel.moddir.join(&kernel.version))
        .arg(&modules)
        .status()
        .unwrap();
    assert!(copied.success());
    let config = format!("config-{}", kernel.version);
    let boot = kernel.vmlinuz.parent().unwrap();
    std::fs::copy(boot.join(&config), root.join("boot").join(&config)).unwrap();
    let creds = nbdroot_qemu::tls::hook_credentials(&root.join("tmp")).expect("credentials");
    let inside = "/tmp/host-tls";
    assert_eq!(creds, root.join("tmp/host-tls"));
    let kver = &kernel.version;
    sh(
        &root,
        "mkinitramfs with TLS credentials",
        &format!(
            "NBDROOT_TLS_DIR={inside} mkinitramfs -o /tmp/tls.img {kver} && \
             unmkinitramfs /tmp/tls.img /tmp/unpacked"
        ),
    );
    let unpacked = root.join("tmp/unpacked");
    // With an early (microcode) archive first, the main one is in main/.
    let main = if unpacked.join("main").exists() {
        unpacked.join("main")
    } else {
        unpacked
    };
    nbdroot_qemu::tls::assert_hook_credentials(&main);

    std::fs::remove_file(creds.join("client-key.pem")).unwrap();
    let o = Command::new("chroot")
        .arg(&root)
        .args([
            "/bin/sh",
            "-c",
            &format!("NBDROOT_TLS_DIR={inside} mkinitramfs -o /tmp/half.img {kver}"),
        ])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(
            "E: nbdroot: /tmp/host-tls has only one of client-cert.pem and client-key.pem"
        ),
        "{err}"
    );
}

/// The guest's nbdtab: the second export, as nbd-client's nbdtab(5) writes it (default port).
const NBDTAB: &str = "# device host export options\nnbd1 10.0.2.100 data\n";
/// The second export's filesystem, mounted once the network is up.
const FSTAB: &str = "/dev/nbd1 /mnt/data ext4 _netdev 0 2\n";

/// One boot of the flagship: the system comes up fully, `nbdroot status` shows the root and
/// nbd1 connected, nbd1 is mounted from fstab, the writes survive a server restart when
/// `restart` (the data is on the server's images), and the guest powers off cleanly.
/// How the guest reaches the server.
enum Net {
    /// QEMU's user network, static ip=, 10.0.2.100:10809 forwarded to the host's nbd-server.
    Forward,
    /// A private network namespace: dnsmasq hands out the address and this root-path,
    /// nbd-server listens on 10.0.2.100:10809 there (the nbdtab's address).
    Dhcp(&'static str),
}

fn flagship_boot(
    boot: &DebianBoot,
    dir: &Path,
    form: &str,
    root_arg: &str,
    net: Net,
    restart: bool,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let img = boot
        .copy_image(&dir.join(format!("root-{form}.ext4")))
        .unwrap();
    let mut data = RootFs::new(dir.join(format!("data-{form}"))).unwrap();
    data.add_file("from-host", "the host made this\n", 0o644)
        .unwrap();
    let data_img = data
        .build_ext4(&dir.join(format!("data-{form}.ext4")), 64, None)
        .unwrap()
        .path;
    let exports = [("root", img.as_path()), ("data", data_img.as_path())];
    let (server, mut cfg, ns) = match net {
        Net::Forward => {
            let server = nbd_server(&exports).expect("nbd-server");
            let cfg = boot.vm(root_arg, server.port);
            (server, cfg, None)
        }
        Net::Dhcp(root_path) => {
            let mut ns = NetNs::new("debian").expect("network namespace");
            ns.exec(
                "give the namespace the nbdtab's server address",
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{SERVER_IP}/32"),
                    "dev",
                    "tap0",
                ],
            )
            .unwrap();
            ns.dnsmasq(&[format!("dhcp-option=option:root-path,{root_path}")])
                .expect("dnsmasq");
            let server = nbd_server_in(&ns.name, SERVER_IP, &exports).expect("nbd-server");
            let cfg = boot.vm_in(&ns.name, root_arg);
            (server, cfg, Some(ns))
        }
    };
    let mut server = server;
    let log = dir.join(format!("console-{form}.log"));
    cfg.log_path = Some(log.clone());

    // The host's side: once the guest writes, kill nbd-server (with its per-client
    // processes) and start it again on the same port 3 s later.
    let finished = Arc::new(AtomicBool::new(false));
    let host = {
        let finished = finished.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !finished.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(1800) {
                let seen =
                    std::fs::read_to_string(&log).is_ok_and(|l| l.contains("NBDT-DEB WRITING"));
                if seen && restart {
                    std::thread::sleep(Duration::from_millis(800));
                    server.kill();
                    std::thread::sleep(Duration::from_secs(3));
                    let restarted = server.restart();
                    return (server, Some(restarted.map_err(|e| e.to_string())));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (server, None)
        })
    };
    let out = run(&cfg).expect("run QEMU");
    finished.store(true, Ordering::Relaxed);
    let (server, restarted) = host.join().unwrap();
    drop(server);
    drop(ns);
    eprintln!("{form}: the guest ran {:.0} s", out.elapsed.as_secs_f64());
    assert!(!out.timed_out, "{form}: the guest hung:\n{out}");
    let v = |k: &str| value(&out, k).unwrap_or_else(|e| panic!("{form}: {e}"));

    assert_eq!(v("state"), "running", "{form}: systemd's state:\n{out}");
    assert_eq!(v("failed"), "", "{form}: failed units:\n{out}");
    assert!(
        v("root").starts_with("/dev/nbd0 / ext4 rw"),
        "{form}:\n{out}"
    );
    let status = status_blocks(&out, "status");
    for dev in ["nbd0", "nbd1"] {
        let block = status.iter().find(|(d, _)| d == dev);
        assert!(
            block.is_some_and(|(_, l)| l.iter().any(|l| l == "state=connected")),
            "{form}: nbdroot status shows no connected {dev}: {status:?}\n{out}"
        );
    }
    assert_eq!(v("nbd1_unit"), "active", "{form}:\n{out}");
    assert!(
        v("data").starts_with("/dev/nbd1 /mnt/data ext4 rw"),
        "{form}: /mnt/data from fstab:\n{out}"
    );
    if restart {
        assert!(
            matches!(restarted, Some(Ok(()))),
            "{form}: the server restart did not happen: {restarted:?}\n{out}"
        );
        // Both supervisors lived through it: each replaced its connection.
        let after = status_blocks(&out, "after");
        for dev in ["nbd0", "nbd1"] {
            let reconnects = after
                .iter()
                .find(|(d, _)| d == dev)
                .and_then(|(_, l)| l.iter().find_map(|l| l.strip_prefix("reconnects=")))
                .and_then(|n| n.parse::<u64>().ok());
            assert!(
                reconnects.is_some_and(|n| n >= 1),
                "{form}: {dev} after the restart: {after:?}\n{out}"
            );
        }
    }
    assert_eq!(v("errors"), "0", "{form}: failed writes:\n{out}");
    assert_eq!(
        v("kernel_io_errors"),
        "0",
        "{form}: kernel I/O errors:\n{out}"
    );
    assert!(
        !out.contains("I/O error"),
        "{form}: I/O error on the console:\n{out}"
    );
    assert!(
        out.contains("reboot: Power down") && !out.stopped,
        "{form}: systemctl poweroff did not finish:\n{out}"
    );

    // What the guest wrote is on the server's images, and both are clean.
    let sums = tagged(&out, "SUM ");
    assert_eq!(sums.len(), 2 * FILES, "{form}: sums:\n{out}");
    for line in sums {
        let (sum, file) = line.trim().split_once(' ').unwrap();
        let (image, path) = match file.strip_prefix("/mnt/data") {
            Some(rest) => (&data_img, rest.to_string()),
            None => (&img, file.to_string()),
        };
        let bytes = debugfs_cat(image, &path).unwrap();
        assert_eq!(
            md5_hex(&bytes).expect("md5"),
            sum,
            "{form}: {file} on the server"
        );
    }
    let wrote = debugfs_cat(&data_img, "/guest-wrote").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&wrote),
        format!("written by boot {}\n", v("boot_id")),
        "{form}"
    );
    e2fsck_clean(&img).expect("the root image is clean after the power-off");
    e2fsck_clean(&data_img).expect("the data image is clean after the power-off");
}

/// The flagship: Debian 12 with Debian's cloud kernel, initramfs-tools and the nbdroot
/// package installed by dpkg, its initramfs made by `update-initramfs`, served by nbd-server;
/// booted with `root=nbd:` (with a server restart while it writes), with Debian's
/// `nbdroot=` form, and with `nbdroot=dhcp` from dnsmasq's root-path.
#[test]
fn debian_boots_from_nbd_with_the_package() {
    let dir = scratch("debian", "flagship");
    let deb = build_deb(&nbdroot_binary().unwrap(), &dir).unwrap();
    let mut extras = Extras::default();
    add_probe(&mut extras, true);
    extras
        .file("etc/nbdtab", NBDTAB, 0o644)
        .file("etc/fstab", FSTAB, 0o644)
        .command("mkdir -p /mnt/data && systemctl enable nbdroot@nbd1.service");
    let boot = prepare(&NbdPackage::Nbdroot(deb), &extras).expect("prepare the Debian system");
    flagship_boot(
        &boot,
        &dir,
        "root-nbd",
        "root=nbd:10.0.2.100:root",
        Net::Forward,
        true,
    );
    flagship_boot(
        &boot,
        &dir,
        "nbdroot",
        "nbdroot=10.0.2.100,root,nbd0 root=/dev/nbd0",
        Net::Forward,
        false,
    );
    // Debian's DHCP form: everything from the root-path, in nbd-client's grammar.
    flagship_boot(
        &boot,
        &dir,
        "nbdroot-dhcp",
        "nbdroot=dhcp",
        Net::Dhcp("10.0.2.100,root,nbd0"),
        false,
    );
}

/// The LUKS2 container's UUID, as the image's /etc/crypttab names it.
const LUKS_UUID: &str = "6e62642d-726f-4f74-8c75-6b73306c7672";
/// The key file's contents. Only to keep the test unattended: a real deployment types a
/// passphrase at the console or fetches the key over the network (e.g. Clevis/Tang); a key
/// file inside the initramfs protects nothing served from the same place.
const LUKS_KEY: &str = "nbdroot test key: not a secret, only unattended";

/// lvm2 and cryptsetup-initramfs installed by apt, the container in /etc/crypttab with the
/// key file (`initramfs`: the chroot's own root tells the hook nothing), the key file let
/// into the initramfs (KEYFILE_PATTERN, UMASK=0077 so the image is not world-readable).
fn lvm_on_luks_setup() -> String {
    format!(
        "apt-get -q -o Acquire::http::Timeout=30 -o Acquire::Retries=3 update \
         && apt-get -q -o Acquire::http::Timeout=30 -o Acquire::Retries=3 install -y \
            --no-install-recommends lvm2 cryptsetup-initramfs && apt-get clean \
         && mkdir -p -m 0700 /etc/keys && printf %s '{LUKS_KEY}' >/etc/keys/nbdroot.key \
         && chmod 0400 /etc/keys/nbdroot.key \
         && echo 'nbdcrypt UUID={LUKS_UUID} /etc/keys/nbdroot.key luks,initramfs' >/etc/crypttab \
         && echo 'KEYFILE_PATTERN=\"/etc/keys/*.key\"' >>/etc/cryptsetup-initramfs/conf-hook \
         && echo UMASK=0077 >/etc/initramfs-tools/conf.d/nbdt-umask"
    )
}

/// What the guest reports about its root's stack, and a file it writes on the root.
const LVM_PROBE: &str = r#"src=$(findmnt -no SOURCE /)
say "root_source=$src"
lsblk -s -rno NAME,TYPE "$src" | while read -r n t; do say "stack $n $t"; done
say "crypt_deps=$(dmsetup deps -o devname nbdcrypt)"
say "crypt_target=$(dmsetup table nbdcrypt | cut -d' ' -f3,4)"
say "initrd_mode=$(stat -c %a /boot/initrd.img-$(uname -r))"
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "written by boot $boot" > /var/lib/nbdt-lvm-wrote && sync /var/lib/nbdt-lvm-wrote
say "boot_id=$boot"
"#;

/// The common layout "LVM on LUKS on the NBD device": the export holds a LUKS2 container,
/// in it an LVM VG, the root ext4 on its LV. Debian's `nbdroot=` attaches nbd0 in
/// init-premount with `root=/dev/mapper/<vg>-root`; cryptroot (key file) and lvm2 assemble
/// the root in local-top; systemd comes up; the host reads the write back after power-off.
#[test]
fn debian_boots_lvm_on_luks_on_nbd() {
    let dir = scratch("debian", "lvm-luks");
    let deb = build_deb(&nbdroot_binary().unwrap(), &dir).unwrap();
    let mut extras = Extras::default();
    add_probe_with(&mut extras, false, LVM_PROBE);
    extras.command(&lvm_on_luks_setup());
    let started = std::time::Instant::now();
    let boot = prepare(&NbdPackage::Nbdroot(deb), &extras).expect("prepare the Debian system");
    eprintln!(
        "prepared (or cached) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // A VG name of this run's own, in the root= the guest gets.
    let layout = Layout {
        luks_uuid: LUKS_UUID.into(),
        key: LUKS_KEY.as_bytes().to_vec(),
        vg: format!("nbdt{}", std::process::id()),
        lv: "root".into(),
    };
    let started = std::time::Instant::now();
    let img = dir.join("layered.img");
    luks_lvm::build(&boot.image, &img, &layout, &dir).expect("layer the root into LVM on LUKS");
    eprintln!("layered in {:.0} s", started.elapsed().as_secs_f64());

    let server = nbd_server(&[("root", img.as_path())]).expect("nbd-server");
    let root_arg = format!(
        "nbdroot={SERVER_IP},root,nbd0 root={}",
        layout.mapper_path()
    );
    let mut cfg = boot.vm(&root_arg, server.port);
    cfg.log_path = Some(dir.join("console.log"));
    let out = run(&cfg).expect("run QEMU");
    drop(server);
    eprintln!("lvm-luks: the guest ran {:.0} s", out.elapsed.as_secs_f64());
    assert!(!out.timed_out, "the guest hung:\n{out}");
    let v = |k: &str| value(&out, k).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(v("state"), "running", "systemd's state:\n{out}");
    assert_eq!(v("failed"), "", "failed units:\n{out}");
    assert_eq!(v("root_source"), layout.mapper_path(), "{out}");
    assert!(
        v("root").starts_with(&format!("{} / ext4 rw", layout.mapper_path())),
        "{out}"
    );
    // The root's stack, top down: the LV, the LUKS mapping, the NBD device.
    let stack = tagged(&out, "stack ");
    assert_eq!(
        stack,
        vec![
            format!("{}-root lvm", layout.vg),
            "nbdcrypt crypt".into(),
            "nbd0 disk".into()
        ],
        "{out}"
    );
    assert!(v("crypt_deps").ends_with("(nbd0)"), "{out}");
    assert_eq!(v("crypt_target"), "crypt aes-xts-plain64", "{out}");
    assert_eq!(
        v("initrd_mode"),
        "600",
        "the initramfs holds the key:\n{out}"
    );
    let status = status_blocks(&out, "status");
    assert!(
        status
            .iter()
            .any(|(d, l)| d == "nbd0" && l.iter().any(|l| l == "state=connected")),
        "nbdroot status: {status:?}\n{out}"
    );
    assert!(
        !out.contains("I/O error"),
        "I/O error on the console:\n{out}"
    );
    assert!(
        out.contains("reboot: Power down") && !out.stopped,
        "systemctl poweroff did not finish:\n{out}"
    );

    // On the host: unlock the image again, find the LV, fsck it, read the write back.
    let lv = luks_lvm::open(&img, &dir.join("plain.img"), &layout, &dir)
        .expect("open the layered image");
    e2fsck_clean(lv.path()).expect("the root LV is clean after the power-off");
    let wrote = debugfs_cat(lv.path(), "/var/lib/nbdt-lvm-wrote").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&wrote),
        format!("written by boot {}\n", v("boot_id"))
    );
}
