//! A Debian 12 system that boots its root from NBD through initramfs-tools, set up the way a
//! user would: the debootstrap root with Debian's cloud kernel package (the one the harness
//! boots) and initramfs-tools installed by apt in a chroot, then the NBD root package (nbdroot's
//! .deb, or Debian's nbd-client) installed with dpkg and `update-initramfs -c` run inside it.
//!
//! The result (ext4 image, the kernel and the initramfs from its /boot) is cached under
//! `<cache>/debian-boot/<kind>-<setup>-<packages>`, hashes of every input: the files a test
//! adds, and the kernel package's name with the NBD packages' bytes; a new package build
//! replaces the older one of the same setup. Tests copy the image before booting it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::command;
use crate::debian::{chroot, copy_in};
use crate::error::{Context, Error, Result};
use crate::lock::FileLock;
use crate::vm::VmConfig;

/// Size of the root image: the root with kernel and initramfs-tools takes about 500 MiB.
const IMAGE_MIB: u32 = 1536;
/// Bound on each apt/dpkg/update-initramfs step in the chroot (`timeout`), so a stuck
/// mirror fails the build instead of hanging it.
const CHROOT_TIMEOUT_S: u32 = 900;

/// Which initramfs-tools integration attaches the root.
#[derive(Debug, Clone)]
pub enum NbdPackage {
    /// nbdroot's package (the .deb `scripts/deb` built).
    Nbdroot(PathBuf),
    /// Debian's nbd-client package and its initramfs hook.
    NbdClient,
}

impl NbdPackage {
    fn kind(&self) -> &'static str {
        match self {
            NbdPackage::Nbdroot(_) => "nbdroot",
            NbdPackage::NbdClient => "nbd-client",
        }
    }
}

/// Files put into the root after the packages and before `update-initramfs`.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// `(path inside the root, contents, mode)`.
    pub files: Vec<(String, String, u32)>,
    /// `(link path inside the root, target)`.
    pub links: Vec<(String, String)>,
    /// Shell commands run in the root after the files (`systemctl enable …`).
    pub commands: Vec<String>,
}

impl Extras {
    pub fn file(&mut self, path: &str, text: &str, mode: u32) -> &mut Self {
        self.files.push((path.into(), text.into(), mode));
        self
    }

    pub fn link(&mut self, path: &str, target: &str) -> &mut Self {
        self.links.push((path.into(), target.into()));
        self
    }

    pub fn command(&mut self, script: &str) -> &mut Self {
        self.commands.push(script.into());
        self
    }

    fn apply(&self, root: &Path) -> Result<()> {
        for (rel, text, mode) in &self.files {
            let path = root.join(rel.trim_start_matches('/'));
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).step(|| format!("create {}", dir.display()))?;
            }
            fs::write(&path, text).step(|| format!("write {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                .step(|| format!("chmod {}", path.display()))?;
        }
        for (rel, target) in &self.links {
            let path = root.join(rel.trim_start_matches('/'));
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).step(|| format!("create {}", dir.display()))?;
            }
            let _ = fs::remove_file(&path);
            symlink(target, &path).step(|| format!("link {}", path.display()))?;
        }
        for script in &self.commands {
            in_root(root, &format!("run `{script}` in the root"), script)?;
        }
        Ok(())
    }
}

/// The guest-side address of the server: QEMU forwards it to the host's port, so the image's
/// configuration (nbdtab, cmdline) holds a fixed address and the default port 10809.
pub const SERVER_IP: &str = "10.0.2.100";
/// The guest's static address on QEMU's user network (eth0: `net.ifnames=0`).
pub const GUEST_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off net.ifnames=0";

/// A prepared system: its image (a template, never booted itself), kernel and initramfs.
#[derive(Debug, Clone)]
pub struct DebianBoot {
    pub kernel_version: String,
    pub image: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

impl DebianBoot {
    /// A private copy of the image at `to`, to boot (sparse, like the template).
    pub fn copy_image(&self, to: &Path) -> Result<PathBuf> {
        let _ = fs::remove_file(to);
        command::run(
            "copy the prepared Debian image",
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&self.image)
                .arg(to),
        )?;
        Ok(to.to_path_buf())
    }

    /// A VM booting this system's kernel and initramfs with `root` (the root and
    /// network arguments), its server on the host's `port`; 1 GiB, 900 s.
    pub fn vm(&self, root: &str, port: u16) -> VmConfig {
        let mut cfg = VmConfig::new(&self.vmlinuz, &self.initrd);
        cfg.append = format!("{root} rw {GUEST_IP} systemd.show_status=0");
        cfg.memory_mib = 1024;
        // A full Debian boot under TCG on a shared machine; the guest powers off itself.
        cfg.deadline = Duration::from_secs(900);
        cfg.guestfwd.push((SERVER_IP.into(), 10809, port));
        cfg
    }

    /// A VM booting this system on the namespace `netns`'s tap device, with DHCP (dnsmasq
    /// there) instead of the static address.
    pub fn vm_in(&self, netns: &str, root: &str) -> VmConfig {
        let mut cfg = self.vm(root, 0);
        cfg.append = format!("{root} rw net.ifnames=0 systemd.show_status=0");
        cfg.guestfwd.clear();
        cfg.netns = Some(netns.to_string());
        cfg
    }

    /// The initramfs size in bytes.
    pub fn initrd_bytes(&self) -> Result<u64> {
        Ok(fs::metadata(&self.initrd)
            .step(|| format!("stat {}", self.initrd.display()))?
            .len())
    }
}

/// The system with `package` and `extras`, built once per set of inputs.
pub fn prepare(package: &NbdPackage, extras: &Extras) -> Result<DebianBoot> {
    let kernel_deb = crate::kernel::debian_cloud_kernel_deb()?;
    let kernel = crate::debian_cloud_kernel()?;
    let debs = match package {
        NbdPackage::Nbdroot(deb) => vec![deb.clone()],
        NbdPackage::NbdClient => crate::debian::nbd_client_debs()?,
    };
    // A setup (the files a test adds) keeps one build: a new package replaces the old one.
    let setup = format!("{}-{}-", package.kind(), extras_key(extras)?);
    let key = packages_key(&kernel_deb, &debs)?;
    let top = crate::cache_dir()?.join("debian-boot");
    fs::create_dir_all(&top).step(|| format!("create {}", top.display()))?;
    let _lock = FileLock::exclusive(&top.join(".lock"))?;
    let dir = top.join(format!("{setup}{key}"));
    let boot = DebianBoot {
        kernel_version: kernel.version.clone(),
        image: dir.join("root.ext4"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    if dir.join(".done").exists() {
        return Ok(boot);
    }
    // Older builds of this setup are stale now.
    for e in fs::read_dir(&top).step(|| format!("list {}", top.display()))? {
        let p = e.step(|| format!("list {}", top.display()))?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if p.is_dir() && name.starts_with(&setup) {
            let _ = fs::remove_dir_all(&p);
        }
    }
    fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let tree = dir.join("tree");
    let result = build(
        &kernel_root(&kernel_deb, &kernel.version)?,
        &tree,
        &debs,
        extras,
        &boot,
    );
    // The tree is only a step to the image; a failed build leaves nothing to be mistaken
    // for a finished one.
    let _ = fs::remove_dir_all(&tree);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    fs::write(dir.join(".done"), key).step(|| format!("mark {}", dir.display()))?;
    Ok(boot)
}

fn build(
    base: &Path,
    tree: &Path,
    debs: &[PathBuf],
    extras: &Extras,
    boot: &DebianBoot,
) -> Result<()> {
    let _ = fs::remove_dir_all(tree);
    command::run(
        "copy the Debian root with its kernel",
        Command::new("cp").arg("-a").arg(base).arg(tree),
    )?;
    let inside = copy_in(tree, debs)?;
    in_root(
        tree,
        "install the NBD package",
        &format!("dpkg -i {}", inside.join(" ")),
    )?;
    in_root(
        tree,
        "remove the copied packages",
        &format!("rm -f {}", inside.join(" ")),
    )?;
    extras.apply(tree)?;
    let ver = &boot.kernel_version;
    in_root(
        tree,
        "build the initramfs with update-initramfs",
        &format!("rm -f /boot/initrd.img-{ver} && update-initramfs -c -k {ver}"),
    )?;
    for (from, to) in [
        (format!("boot/vmlinuz-{ver}"), &boot.vmlinuz),
        (format!("boot/initrd.img-{ver}"), &boot.initrd),
    ] {
        fs::copy(tree.join(&from), to).step(|| format!("copy {from} out of the root"))?;
    }
    crate::ext4_from_dir(tree, &boot.image, IMAGE_MIB, None)?;
    Ok(())
}

/// The debootstrap root with the kernel package and initramfs-tools installed (apt, in a
/// chroot, from the root's own Debian mirror), made once per kernel.
pub(crate) fn kernel_root(kernel_deb: &Path, version: &str) -> Result<PathBuf> {
    let dir = crate::cache_dir()?.join("debian-kernel-root").join(version);
    // Both the Debian systems and the network roots build on it.
    crate::sysroot::derived_tree(&dir, crate::sysroot::debian_systemd_root, |tmp| {
        // apt in the chroot resolves the mirror's name with the host's resolver.
        fs::copy("/etc/resolv.conf", tmp.join("etc/resolv.conf"))
            .step(|| "copy /etc/resolv.conf into the root")?;
        let deb = copy_in(tmp, &[kernel_deb.to_path_buf()])?;
        let apt = "apt-get -q -o Acquire::http::Timeout=30 -o Acquire::Retries=3";
        in_root(
            tmp,
            "install the kernel and initramfs-tools with apt",
            &format!(
                "{apt} update && {apt} install -y --no-install-recommends initramfs-tools {} \
                 && {apt} clean && rm -f {}",
                deb[0], deb[0]
            ),
        )
    })
}

/// Runs `script` in the chroot under [`CHROOT_TIMEOUT_S`].
pub(crate) fn in_root(root: &Path, step: &str, script: &str) -> Result<()> {
    let bounded = format!(
        "timeout {CHROOT_TIMEOUT_S} sh -c '{}'",
        script.replace('\'', r"'\''")
    );
    chroot(
        root,
        &format!("{step} (bounded by {CHROOT_TIMEOUT_S} s)"),
        &bounded,
    )
    .map(drop)
}

/// The setup's part of the cache key: the files and commands added.
fn extras_key(extras: &Extras) -> Result<String> {
    let mut chunks = Vec::new();
    for (path, text, mode) in &extras.files {
        chunks.push(format!("\0{path}\0{mode:o}\0{text}").into_bytes());
    }
    for (path, target) in &extras.links {
        chunks.push(format!("\0{path}\0{target}").into_bytes());
    }
    for script in &extras.commands {
        chunks.push(format!("\0{script}").into_bytes());
    }
    short_sha256(&chunks)
}

/// The packages' part of the cache key: the kernel package's name, the NBD packages' bytes.
fn packages_key(kernel_deb: &Path, debs: &[PathBuf]) -> Result<String> {
    let name = kernel_deb.file_name().unwrap_or_default();
    let mut chunks = vec![name.as_encoded_bytes().to_vec()];
    for deb in debs {
        chunks.push(fs::read(deb).step(|| format!("read {}", deb.display()))?);
    }
    short_sha256(&chunks)
}

/// The first 16 hex digits of the sha256 of `chunks`, each length-prefixed.
fn short_sha256(chunks: &[Vec<u8>]) -> Result<String> {
    let step = "hash the Debian image's inputs with sha256sum";
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .step(|| step)?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        for c in chunks {
            stdin
                .write_all(&(c.len() as u64).to_le_bytes())
                .and_then(|()| stdin.write_all(c))
                .step(|| step)?;
        }
    }
    let out = child.wait_with_output().step(|| step)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hash = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hash.len() < 16 {
        return Err(Error::unexpected(
            step,
            format!("exited with {}: {text}", out.status),
        ));
    }
    Ok(hash[..16].to_string())
}
