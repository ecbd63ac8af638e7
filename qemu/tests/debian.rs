//! The Debian package in a Debian 12 root (the debootstrap root, copied): it installs with
//! dpkg beside nbd-client, diverts nbd-client's initramfs scripts away, ships a unit systemd
//! accepts, reads /etc/nbdtab, and gives nbd-client its scripts back when removed. lintian
//! finds no error in it.

use std::path::Path;
use std::process::Command;

use nbdroot_qemu::debian::{
    build_deb, chroot, copy_in, initramfs_tools_debs, nbd_client_debs, root_copy,
};
use nbdroot_qemu::{nbdroot_binary, scratch};

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

    let root = root_copy(&dir).unwrap();
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
    let root = root_copy(&dir).unwrap();
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
