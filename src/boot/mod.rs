//! The PID 1 flow: early mounts → modules → command line → network → NBD → mount →
//! switch_root. Any failure prints one line naming the step and the value, then ends PID 1,
//! which the kernel turns into a panic.

pub mod mountopts;
pub mod mounts;
pub mod switch_root;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::cmdline::{self, BootPlan, CmdlineError};
use crate::connect::{self, ConnectError};
use crate::kernel::{self, Attach, KernelError};
use crate::modules::{self, DepError, LoadError, ModulesDep};
use crate::net::{self, NetError};
use crate::proto::consts::TFLAG_READ_ONLY;

/// Where the real root is mounted before the switch.
pub const NEW_ROOT: &str = "/newroot";
/// How long the device node may take to appear after attach.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("kernel modules: {0}")]
    ModuleDep(#[from] DepError),
    #[error(transparent)]
    ModuleLoad(#[from] LoadError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("attaching {addr} to the kernel: {source}")]
    Attach { addr: String, source: KernelError },
    #[error("{device} did not appear within {secs} s after attaching it")]
    NoDevice { device: String, secs: u64 },
    #[error("cannot mount {what} on {target} as {fstype}: {}", .source.desc())]
    Mount {
        what: String,
        target: String,
        fstype: String,
        source: Errno,
    },
    #[error(
        "no filesystem on {device} that the kernel can mount (tried {tried}; last error: {last})"
    )]
    NoFilesystem {
        device: String,
        tried: String,
        last: String,
    },
    #[error("no init to run in the new root (tried {tried})")]
    NoInit { tried: String },
    #[error("switch_root failed while {step}: {}", .source.desc())]
    SwitchRoot { step: &'static str, source: Errno },
    #[error("cannot execute {init} in the new root: {}", .source.desc())]
    Exec { init: String, source: Errno },
}

/// Runs the whole boot as PID 1. Never returns.
pub fn run(init_args: Vec<CString>) -> ! {
    let err = match boot(&init_args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    log::error!("{err}");
    // Ending PID 1 makes the kernel panic right after the line above: with panic=N the
    // machine reboots, otherwise it stops there with the reason on the console.
    std::process::exit(1);
}

enum Never {}

fn boot(init_args: &[CString]) -> Result<Never, BootError> {
    let start = Instant::now();
    mounts::early()?;
    crate::logger::reopen_console();

    let line = read(
        "reading the kernel command line",
        Path::new("/proc/cmdline"),
    )?;
    let plan = cmdline::parse(&line)?;
    log::debug!("boot plan: {plan:?}");

    load_modules()?;
    log::debug!("modules loaded at {} ms", start.elapsed().as_millis());
    net::bring_up(&plan.network)?;
    log::debug!("network up at {} ms", start.elapsed().as_millis());

    let attached = attach(&plan)?;
    log::debug!(
        "{} attached at {} ms",
        attached.device,
        start.elapsed().as_millis()
    );
    let device = &attached.device;
    let read_only = plan.mount.read_only || attached.read_only;
    let new_root = Path::new(NEW_ROOT);
    let fstype = mounts::mount_root(
        device,
        new_root,
        plan.mount.fstype.as_deref(),
        &plan.mount.options,
        read_only,
    )?;
    let init = switch_root::find_init(new_root, plan.init.as_deref())?;
    log::info!(
        "mounted {device} ({fstype}, {}) in {} ms; starting {init}",
        if read_only { "ro" } else { "rw" },
        start.elapsed().as_millis()
    );
    Err(switch_root::switch_root(new_root, &init, init_args))
}

fn read(step: &'static str, path: &Path) -> Result<String, BootError> {
    fs::read_to_string(path).map_err(|source| BootError::Io {
        step,
        path: path.display().to_string(),
        source,
    })
}

/// Loads the modules the initramfs lists, dependencies first.
fn load_modules() -> Result<(), BootError> {
    let list_path = Path::new("/").join(modules::INITRAMFS_MODULE_LIST);
    let Ok(list) = fs::read_to_string(&list_path) else {
        log::debug!("no {}: loading no modules", list_path.display());
        return Ok(());
    };
    let names: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = PathBuf::from("/lib/modules").join(&release);
    let dep = ModulesDep::parse(&read(
        "reading the module dependencies",
        &dir.join("modules.dep"),
    )?)?;
    let builtin = fs::read_to_string(dir.join("modules.builtin"))
        .map(|t| modules::parse_builtin(&t))
        .unwrap_or_default();
    // One after the other: loading them in parallel threads was measured slower (a single
    // CPU, and the kernel serialises much of module loading anyway).
    for path in dep.load_order(&names, &builtin)? {
        let t = Instant::now();
        modules::load_module(&dir.join(&path))?;
        log::debug!("loaded {path} in {} ms", t.elapsed().as_millis());
    }
    Ok(())
}

/// The root device, once attached.
struct Attached {
    device: String,
    /// The server or `readonly` made the device read-only.
    read_only: bool,
}

/// Connects, negotiates and hands the socket to the kernel.
fn attach(plan: &BootPlan) -> Result<Attached, BootError> {
    let spec = &plan.nbd;
    let addr = connect::resolve(spec)?;
    let conn = connect::connect(addr, &spec.export, &plan.connect)?;
    let export = conn.export.clone();
    let mut server_flags = u64::from(export.flags);
    if spec.opts.read_only {
        server_flags |= u64::from(TFLAG_READ_ONLY);
    }
    let block_size = spec
        .opts
        .block_size
        .unwrap_or_else(|| export.kernel_block_size());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&conn.stream);
    let index = kernel::connect(&Attach {
        index: None,
        sockets: &[fd],
        size: export.size,
        block_size: u64::from(block_size),
        server_flags,
        timeout: spec.opts.timeout,
        dead_conn_timeout: None,
        client_flags: 0,
    })
    .map_err(|source| BootError::Attach {
        addr: addr.to_string(),
        source,
    })?;
    // The kernel holds its own reference to the socket now.
    drop(conn);
    let device = kernel::device_path(index);
    let name = if spec.export.is_empty() {
        "the default export".to_string()
    } else {
        format!("export \"{}\"", spec.export)
    };
    log::info!(
        "{addr} {name}: {} bytes, block size {block_size}, on {device}",
        export.size
    );
    let read_only = export.read_only() || spec.opts.read_only;
    if read_only && !plan.mount.read_only {
        log::warn!("{device} is read-only: mounting the root read-only");
    }
    wait_for_device(&device)?;
    Ok(Attached { device, read_only })
}

fn wait_for_device(device: &str) -> Result<(), BootError> {
    let start = Instant::now();
    while !Path::new(device).exists() {
        if start.elapsed() >= DEVICE_WAIT {
            return Err(BootError::NoDevice {
                device: device.to_string(),
                secs: DEVICE_WAIT.as_secs(),
            });
        }
        sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The arguments the kernel passed to /init, for the real init.
pub fn init_args_from_env() -> Vec<CString> {
    std::env::args_os()
        .skip(1)
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect()
}
