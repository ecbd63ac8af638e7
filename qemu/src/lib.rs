//! Test harness for nbdroot: it fetches a real Debian kernel, builds ext4 root images without
//! mounting anything, runs NBD servers on loopback and boots QEMU guests under a deadline, so
//! every claim the project makes about booting is checked against a real kernel.

pub mod artifact;
pub mod command;
pub mod debian;
pub mod debian_boot;
pub mod debian_probe;
pub mod dracut;
pub mod error;
pub mod floor;
pub mod image;
pub mod kernel;
pub mod lock;
pub mod luks_lvm;
pub mod mkinitcpio;
pub mod netns;
pub mod network_root;
pub mod ns_server;
pub mod proxy;
pub mod recipes;
pub mod reference;
pub mod scenario;
pub mod scratch;
pub mod server;
pub mod stats;
pub mod sysroot;
pub mod tls;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use error::{Error, Result};
pub use floor::floor_initramfs;
pub use image::{debugfs_cat, e2fsck_clean, ext4_from_dir, md5_hex, probe_root, RootFs, RootImage};
pub use kernel::{debian_cloud_kernel, Kernel};
pub use scratch::Scratch;
pub use server::{free_port, nbd_server, nbd_server_in, nbdkit, qemu_nbd, NbdServer};
pub use vm::{run, VmConfig, VmOutcome};

use error::Context;

/// The workspace root (the directory above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate sits inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `<repo>/target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo_root().join("target"), |d| repo_root().join(d))
}

/// `<repo>/target/vm-cache` (under `CARGO_TARGET_DIR` if set), created on first use: the
/// kernel download, images, locks and logs.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = target_dir().join("vm-cache");
    std::fs::create_dir_all(&dir).step(|| format!("create cache dir {}", dir.display()))?;
    Ok(dir)
}

/// `<cache>/logs`: console logs of guests and stderr of servers, kept for diagnosis.
pub fn logs_dir() -> Result<PathBuf> {
    let dir = cache_dir()?.join("logs");
    std::fs::create_dir_all(&dir).step(|| format!("create logs dir {}", dir.display()))?;
    Ok(dir)
}

/// The static musl `nbdroot` binary, built once per process; `NBDROOT_BIN` overrides.
pub fn nbdroot_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NBDROOT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    // The error is kept as text: every caller in this process gets the same failure.
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_nbdroot().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::unexpected("build nbdroot", e))
}

fn build_nbdroot() -> Result<PathBuf> {
    const TARGET: &str = "x86_64-unknown-linux-musl";
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--release", "--target", TARGET, "-p", "nbdroot"])
        .current_dir(repo_root())
        // Cargo's messages stay visible on stderr; its stdout must not pollute test output.
        .stdout(Stdio::from(std::io::stderr()));
    let step = format!("build nbdroot with `{}`", command::describe(&cmd));
    let status = cmd.status().step(|| step.clone())?;
    let bin = target_dir().join(TARGET).join("release").join("nbdroot");
    match (status.success(), bin.is_file()) {
        (true, true) => Ok(bin),
        (false, _) => Err(Error::unexpected(step, format!("exited with {status}"))),
        (true, false) => Err(Error::unexpected(step, format!("no {}", bin.display()))),
    }
}

/// Builds nbdroot's own initramfs for `kernel` at `out` with `nbdroot mkinitramfs`.
pub fn nbdroot_initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    nbdroot_initramfs_with(&nbdroot_binary()?, kernel, out)
}

/// An nbdroot initramfs made by (and around) another build of the binary, for comparisons.
pub fn nbdroot_initramfs_with(binary: &Path, kernel: &Kernel, out: &Path) -> Result<()> {
    let mut cmd = Command::new(binary);
    cmd.arg("mkinitramfs")
        .arg("-o")
        .arg(out)
        .args(["--kver", &kernel.version])
        .arg("--kmoddir")
        .arg(&kernel.moddir);
    let step = format!("build nbdroot initramfs {}", out.display());
    command::run(&step, &mut cmd).map(drop)
}

/// What every VM test boots: Debian's cloud kernel and nbdroot's initramfs for it.
#[derive(Debug)]
pub struct BootKit {
    pub kernel: Kernel,
    pub initrd: PathBuf,
}

/// The [`BootKit`], made once per process (the initramfs is named after the test binary, so
/// test binaries running side by side never write the same file).
pub fn boot_kit() -> &'static BootKit {
    static KIT: OnceLock<BootKit> = OnceLock::new();
    KIT.get_or_init(|| {
        let kernel = debian_cloud_kernel().expect("Debian cloud kernel");
        let exe = std::env::current_exe().unwrap_or_default();
        let name = exe.file_stem().unwrap_or_default().to_string_lossy();
        let initrd = cache_dir()
            .expect("cache dir")
            .join(format!("initrd-{name}.img"));
        nbdroot_initramfs(&kernel, &initrd).expect("nbdroot mkinitramfs");
        BootKit { kernel, initrd }
    })
}

/// An empty scratch directory `<cache>/<group>/<name>` for one test, removed when it passes.
pub fn scratch(group: &str, name: &str) -> Scratch {
    Scratch::new(group, name)
}

/// A number unique within this process, for file names.
pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
