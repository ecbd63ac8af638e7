//! The reference stack nbdroot is measured against: a hand-made initramfs with busybox and
//! Debian's nbd-client (netlink), doing by shell script what nbdroot does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nbdroot::initramfs::cpio::CpioWriter;
use nbdroot::modules::ModulesDep;

use crate::command;
use crate::error::{Context, Error, Result};
use crate::floor::{gzip_to, BUSYBOX};
use crate::kernel::Kernel;

/// Debian packages holding nbd-client and the libraries the host may lack.
const PACKAGES: [&str; 3] = ["nbd-client", "libnl-3-200", "libnl-genl-3-200"];
const MODULES: [&str; 3] = ["nbd", "virtio_net", "virtio_pci"];

/// The reference /init: what a careful hand-written script does, with the same static
/// address and server the nbdroot boots use (`nbdref=<host>:<port>` on the command line, and
/// `nbdrefopts=-persist,-timeout,5` for nbd-client's own options).
const INIT: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
for m in $($bb cat /etc/modules.order); do $bb insmod /lib/modules/$m; done
for arg in $($bb cat /proc/cmdline); do
  case $arg in nbdref=*) srv=${arg#nbdref=} ;; nbdrefopts=*) opts=$(echo ${arg#nbdrefopts=} | $bb tr , ' ') ;; esac
done
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2
/sbin/nbd-client ${srv%:*} ${srv#*:} /dev/nbd0 $opts || echo "NBDREF-FAIL nbd-client"
$bb mkdir -p /newroot
$bb mount -t ext4 -o rw /dev/nbd0 /newroot || echo "NBDREF-FAIL mount"
exec $bb switch_root /newroot /sbin/init
"#;

/// Extracts nbd-client and its libraries from Debian's packages (cached).
fn nbd_client_tree() -> Result<PathBuf> {
    let dir = crate::cache_dir()?.join("reference");
    let tree = dir.join("tree");
    if tree.join(".done").exists() {
        return Ok(tree);
    }
    fs::create_dir_all(&tree).step(|| format!("create {}", tree.display()))?;
    command::run(
        "download nbd-client",
        Command::new("apt-get")
            .arg("download")
            .args(PACKAGES)
            .current_dir(&dir),
    )?;
    for entry in fs::read_dir(&dir).step(|| format!("list {}", dir.display()))? {
        let path = entry.step(|| format!("list {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            command::run(
                "unpack a reference package",
                Command::new("dpkg-deb").arg("-x").arg(&path).arg(&tree),
            )?;
        }
    }
    fs::write(tree.join(".done"), "").step(|| format!("mark {}", tree.display()))?;
    Ok(tree)
}

/// The shared libraries `binary` needs, as (path in the image, path on the host).
fn libraries(binary: &Path, extra_lib_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = command::run(
        "list nbd-client's libraries",
        Command::new("ldd")
            .arg(binary)
            .env("LD_LIBRARY_PATH", extra_lib_dir),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x…)" or "/lib64/ld-linux… (0x…)"
        let host = match line.split_once("=> ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(host) = host else { continue };
        if host == "not" {
            return Err(Error::unexpected(
                "resolve nbd-client's libraries",
                text.clone(),
            ));
        }
        let name = Path::new(host)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let in_image = if host.starts_with("/lib64/") {
            format!("lib64/{name}")
        } else {
            format!("lib/x86_64-linux-gnu/{name}")
        };
        libs.push((
            in_image,
            fs::canonicalize(host).step(|| format!("resolve {host}"))?,
        ));
    }
    Ok(libs)
}

/// Debian's nbd-client and the libraries it needs, as (path in an image, path on the host):
/// everything to copy into a guest for it to run.
pub fn nbd_client_files() -> Result<Vec<(String, PathBuf)>> {
    let tree = nbd_client_tree()?;
    let client = tree.join("sbin/nbd-client");
    let mut files = libraries(&client, &tree.join("lib/x86_64-linux-gnu"))?;
    files.push(("sbin/nbd-client".to_string(), client));
    Ok(files)
}

/// Writes the busybox + nbd-client initramfs for `kernel` to `out`.
pub fn nbd_client_initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    let files = nbd_client_files()?;

    let kdir = kernel.moddir.join(&kernel.version);
    let dep_text =
        fs::read_to_string(kdir.join("modules.dep")).step(|| format!("read {}", kdir.display()))?;
    let dep =
        ModulesDep::parse(&dep_text).map_err(|e| Error::unexpected("parse modules.dep", e))?;
    let order = dep
        .load_order(&MODULES, &Default::default())
        .map_err(|e| Error::unexpected("order the reference modules", e))?;

    let step = || format!("write {}", out.display());
    let mut w = CpioWriter::new(Vec::new());
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "etc",
        "lib",
        "lib64",
        "lib/x86_64-linux-gnu",
        "lib/modules",
    ] {
        w.dir(d, 0o755).step(step)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).step(step)?;
    let read = |p: &Path| fs::read(p).step(|| format!("read {}", p.display()));
    w.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX))?)
        .step(step)?;
    w.file("init", 0o755, INIT.as_bytes()).step(step)?;
    for (in_image, host) in &files {
        w.file(in_image, 0o755, &read(host)?).step(step)?;
    }
    let mut names = String::new();
    for path in &order {
        let name = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        w.file(
            &format!("lib/modules/{name}"),
            0o644,
            &read(&kdir.join(path))?,
        )
        .step(step)?;
        names.push_str(&name);
        names.push('\n');
    }
    w.file("etc/modules.order", 0o644, names.as_bytes())
        .step(step)?;
    gzip_to(&w.finish().step(step)?, out)
}
