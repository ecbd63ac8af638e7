//! The dracut module's `check()` and `install()` with the real dracut (Debian 12's 059 and
//! dracut-ng 111), on the host, no VM:
//!
//! - hostonly: dracut includes nbdroot by itself when the root sits on an nbd device, and not
//!   otherwise. dracut decides from the root's block device (`find_root_block_device`, then
//!   `block_is_nbd` on its major:minor); here it reads it from the fstab (`--fstab`), which
//!   names a block node of the wanted major in a private /dev of a mount namespace: the host
//!   has no nbd driver, and its own root is not on NBD;
//! - a plain `dracut -a nbdroot`, with no dracut.conf.d snippet, builds an image holding the
//!   module, its hooks and the binary;
//! - both `nbd` and `nbdroot` requested: without the snippet dracut ends with exit status 1
//!   and nbdroot's line; with it, dracut refuses the omitted `nbd` itself.

use std::path::Path;

use nbdroot_qemu::dracut::{image_file, image_modules, invoke, Dracut, Invocation, Release};
use nbdroot_qemu::{debian_cloud_kernel, Kernel};

fn kernel() -> Kernel {
    debian_cloud_kernel().expect("Debian cloud kernel")
}

fn scratch(release: Release, name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("dracut-check", &format!("{name}-{release:?}"))
}

fn binary_conf() -> String {
    let bin = nbdroot_qemu::nbdroot_binary().expect("nbdroot binary");
    format!("nbdroot_binary=\"{}\"", bin.display())
}

/// The modules hostonly dracut may pick from: nbdroot and what it and base depend on. Every
/// other module is omitted, so the build stays small and independent of the host.
const CANDIDATES: &[&str] = &[
    "base",
    "udev-rules",
    "fs-lib",
    "rootfs-block",
    "kernel-network-modules",
    "initqueue",
    "nbdroot",
];

fn omitted(dracut: &Dracut) -> String {
    let mut omit = Vec::new();
    for e in std::fs::read_dir(dracut.basedir.join("modules.d")).expect("modules.d") {
        let name = e.expect("modules.d entry").file_name();
        let name = name.to_string_lossy();
        let Some(module) = name.get(2..) else {
            continue;
        };
        if !CANDIDATES.contains(&module) {
            omit.push(module.to_string());
        }
    }
    omit.join(" ")
}

/// Runs dracut `--hostonly --fstab` (every module checked, as a plain `dracut --hostonly`
/// does) in a mount namespace whose fstab puts / on `dev` (block `major:minor`); returns the
/// image's modules.
fn hostonly_modules(release: Release, name: &str, dev: &str, majmin: &str) -> Vec<String> {
    let dracut = Dracut::get(release).expect("dracut");
    let dir = scratch(release, name);
    let fstab = dir.join("fstab");
    std::fs::write(&fstab, format!("/dev/{dev} / ext4 defaults 0 1\n")).expect("fstab");
    let (major, minor) = majmin.split_once(':').expect("major:minor");
    // A private /dev with the usual nodes and the root's, and /dev/block/M:m as udev makes it.
    let setup = format!(
        "set -e; mount -t tmpfs -o mode=755 nbdroot-dev /dev; cd /dev; \
         mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7; \
         mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0; \
         ln -s /proc/self/fd fd; ln -s fd/0 stdin; ln -s fd/1 stdout; ln -s fd/2 stderr; \
         mkdir shm pts block; mknod -m 660 {dev} b {major} {minor}; ln -s ../{dev} block/{majmin}; \
         mount --bind {} /etc/fstab; cd /; exec \"$@\"",
        fstab.display()
    );
    let inv = Invocation {
        conf: vec![
            binary_conf(),
            format!("omit_dracutmodules+=\" {} \"", omitted(&dracut)),
        ],
        conf_snippet: true,
        args: vec![
            "--hostonly".into(),
            "--fstab".into(),
            "--no-hostonly-cmdline".into(),
        ],
        wrapper: [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &setup,
            "sh",
        ]
        .map(String::from)
        .to_vec(),
    };
    let img = dir.join("initrd.img");
    let out = invoke(&dracut, &kernel(), &inv, &img).expect("run dracut");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "dracut failed ({}):\n{log}",
        out.status
    );
    let modules = image_modules(&img).expect("the image's module list");
    assert!(
        modules.iter().any(|m| m == "base"),
        "no base module in {modules:?}:\n{log}"
    );
    modules
}

fn hostonly_includes_on_an_nbd_root(release: Release) {
    let modules = hostonly_modules(release, "hostonly-nbd", "nbd0", "43:0");
    assert!(
        modules.iter().any(|m| m == "nbdroot"),
        "hostonly with / on /dev/nbd0: nbdroot is not in {modules:?}"
    );
}

fn hostonly_leaves_out_on_another_root(release: Release) {
    let modules = hostonly_modules(release, "hostonly-sda", "sda", "8:0");
    assert!(
        !modules.iter().any(|m| m == "nbdroot"),
        "hostonly with / on /dev/sda: nbdroot is in {modules:?}"
    );
}

/// `dracut -m base -a nbdroot`, no snippet: the module, its hooks and the binary are in.
fn plain_add(release: Release) {
    let dracut = Dracut::get(release).expect("dracut");
    let dir = scratch(release, "plain-add");
    let inv = Invocation {
        conf: vec![binary_conf()],
        conf_snippet: false,
        args: ["--no-hostonly", "-m", "base", "-a", "nbdroot"]
            .map(String::from)
            .to_vec(),
        wrapper: Vec::new(),
    };
    let img = dir.join("initrd.img");
    let out = invoke(&dracut, &kernel(), &inv, &img).expect("run dracut");
    assert!(
        out.status.success(),
        "dracut -a nbdroot failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let modules = image_modules(&img).expect("module list");
    assert!(modules.iter().any(|m| m == "nbdroot"), "{modules:?}");
    assert!(!modules.iter().any(|m| m == "nbd"), "{modules:?}");
    let hook = image_file(&img, "usr/lib/dracut/hooks/cmdline/90-nbdroot-cmdline.sh")
        .or_else(|_| image_file(&img, "var/lib/dracut/hooks/cmdline/90-nbdroot-cmdline.sh"))
        .expect("the command-line hook in the image");
    assert!(hook.contains("nbdroot dracut-cmdline"), "{hook}");
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg("zcat \"$1\" | cpio -t --quiet")
        .arg("sh")
        .arg(&img)
        .output()
        .expect("list the image");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l == "usr/sbin/nbdroot"),
        "no usr/sbin/nbdroot in the image"
    );
}

/// `-m "base nbd nbdroot"`: refused without the snippet (exit 1, nbdroot's line, no image);
/// with it, refused by dracut (nbd is omitted, so the explicit request cannot be met).
fn both_requested(release: Release) {
    let dracut = Dracut::get(release).expect("dracut");
    let dir = scratch(release, "both");
    let mut inv = Invocation {
        conf: vec![binary_conf()],
        conf_snippet: false,
        args: ["--no-hostonly", "-m", "base nbd nbdroot"]
            .map(String::from)
            .to_vec(),
        wrapper: Vec::new(),
    };
    let img = dir.join("initrd.img");
    let out = invoke(&dracut, &kernel(), &inv, &img).expect("run dracut");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nbdroot replaces dracut's nbd module, which is also included: leave it out with omit_dracutmodules+=\" nbd \""),
        "{stderr}"
    );
    assert!(!Path::new(&img).exists(), "an image was written");
    // With the snippet nbd is omitted: dracut itself refuses the explicit request.
    inv.conf_snippet = true;
    let out = invoke(&dracut, &kernel(), &inv, &img).expect("run dracut");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("'nbd' cannot be"),
        "no refusal naming nbd:\n{stderr}"
    );
    assert!(!Path::new(&img).exists(), "an image was written");
}

macro_rules! releases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[test]
            fn dracut059() {
                super::$case(Release::Debian059);
            }
            #[test]
            fn ng111() {
                super::$case(Release::Ng111);
            }
        }
    )*};
}

releases!(
    hostonly_includes_on_an_nbd_root,
    hostonly_leaves_out_on_another_root,
    plain_add,
    both_requested,
);
