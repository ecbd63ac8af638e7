//! The test kernel: Debian's cloud kernel, fetched with apt and unpacked without installing.
//!
//! The cloud flavour is small, boots fast under TCG and has nbd, virtio_net and virtio_pci as
//! modules, which is exactly what an initramfs has to load: a realistic test of nbdroot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{Context, Error, Result};
use crate::lock::FileLock;

/// The metapackage whose dependency names the current cloud kernel.
const META: &str = "linux-image-cloud-amd64";

/// An unpacked kernel: the image to boot and the module tree to build initramfs images from.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The bootable kernel image.
    pub vmlinuz: PathBuf,
    /// The directory holding `<version>/` (a `.../lib/modules`), with `modules.dep` built.
    pub moddir: PathBuf,
}

impl Kernel {
    /// Reads a directory laid out like an unpacked kernel package: `boot/vmlinuz-<ver>` and
    /// `lib/modules/<ver>` (or `usr/lib/modules/<ver>`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let step = || format!("find the kernel in {}", dir.display());
        let boot = dir.join("boot");
        let vmlinuz = files_named(&boot, "vmlinuz-", "")?.pop().ok_or_else(|| {
            Error::unexpected(step(), format!("no vmlinuz-* in {}", boot.display()))
        })?;
        let name = vmlinuz.file_name().unwrap_or_default().to_string_lossy();
        let version = name.trim_start_matches("vmlinuz-").to_string();
        let moddir = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|m| dir.join(m))
            .find(|m| m.join(&version).is_dir())
            .ok_or_else(|| Error::unexpected(step(), format!("no lib/modules/{version}")))?;
        Ok(Kernel {
            version,
            vmlinuz,
            moddir,
        })
    }
}

/// Returns Debian's current cloud kernel, downloading and unpacking it into the cache once.
///
/// `NBDROOT_KERNEL_DIR` names an already unpacked kernel and skips apt entirely.
pub fn debian_cloud_kernel() -> Result<Kernel> {
    if let Some(dir) = std::env::var_os("NBDROOT_KERNEL_DIR") {
        return Kernel::from_dir(Path::new(&dir));
    }
    let package = kernel_package()?;
    let version = package.trim_start_matches("linux-image-").to_string();
    let root = crate::cache_dir()?.join("kernel");
    let dir = root.join(&version);
    if !dir.join(".done").exists() {
        fs::create_dir_all(&root).step(|| format!("create {}", root.display()))?;
        // Test binaries start in parallel: one unpacks, the others wait here and then find
        // the marker.
        let _lock = FileLock::exclusive(&root.join(".lock"))?;
        if !dir.join(".done").exists() {
            unpack(&package, &version, &root)?;
        }
    }
    Kernel::from_dir(&dir)
}

/// Asks apt which versioned package the metapackage depends on, updating the lists once if
/// apt knows nothing (a fresh container has empty lists).
fn kernel_package() -> Result<String> {
    let step = format!("find the package {META} depends on");
    for attempt in 0..2 {
        let out = Command::new("apt-cache").args(["depends", META]).output();
        let out = out.step(|| format!("{step}: run apt-cache"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let dep = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|d| d.starts_with("linux-image-"));
        if let Some(dep) = dep {
            return Ok(dep.to_string());
        }
        if attempt == 0 {
            command::run(&step, Command::new("apt-get").args(["update", "-qq"]))?;
        }
    }
    Err(Error::unexpected(step, "apt-cache lists no linux-image-*"))
}

/// Downloads, unpacks and indexes the kernel under `root/<version>`, atomically.
fn unpack(package: &str, version: &str, root: &Path) -> Result<()> {
    let debs = root.join("debs");
    fs::create_dir_all(&debs).step(|| format!("create {}", debs.display()))?;
    let find = || files_named(&debs, &format!("{package}_"), ".deb");
    if find()?.is_empty() {
        // As root, apt warns that _apt cannot write here and downloads anyway: harmless.
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q", package]).current_dir(&debs);
        command::run(&format!("download {package}"), &mut cmd)?;
    }
    let deb = find()?.pop().ok_or_else(|| {
        Error::unexpected(
            format!("download {package}"),
            format!("no .deb in {}", debs.display()),
        )
    })?;
    // Unpack beside the final directory and rename, so the final directory either does not
    // exist or is complete, whatever happens to this process.
    let tmp = root.join(format!("{version}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).step(|| format!("remove stale {}", tmp.display()))?;
    }
    let mut dpkg = Command::new("dpkg-deb");
    dpkg.arg("-x").arg(&deb).arg(&tmp);
    if let Err(e) = command::run(&format!("unpack {}", deb.display()), &mut dpkg) {
        // Most likely a download cut short: drop it so the next run fetches it again.
        let _ = fs::remove_file(&deb);
        return Err(e);
    }
    let mut depmod = Command::new("depmod");
    depmod.arg("-b").arg(&tmp).arg(version);
    command::run(&format!("index modules of {version}"), &mut depmod)?;
    fs::write(tmp.join(".done"), b"").step(|| format!("mark {} complete", tmp.display()))?;
    let dir = root.join(version);
    if dir.exists() {
        fs::remove_dir_all(&dir).step(|| format!("remove incomplete {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir).step(|| format!("rename {} to {}", tmp.display(), dir.display()))
}

/// The files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .step(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The package file of [`debian_cloud_kernel`] (downloaded with it), for installing the same
/// kernel inside a Debian root; an error under `NBDROOT_KERNEL_DIR`, which has no package.
pub fn debian_cloud_kernel_deb() -> Result<PathBuf> {
    let kernel = debian_cloud_kernel()?;
    let debs = crate::cache_dir()?.join("kernel").join("debs");
    let prefix = format!("linux-image-{}_", kernel.version);
    files_named(&debs, &prefix, ".deb")?.pop().ok_or_else(|| {
        Error::unexpected(
            format!("find the package of kernel {}", kernel.version),
            format!(
                "no {prefix}*.deb in {} (NBDROOT_KERNEL_DIR names a kernel without its package)",
                debs.display()
            ),
        )
    })
}
