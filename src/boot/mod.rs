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
use std::time::Instant;

use nix::errno::Errno;

use crate::attach::{self, AttachError, AttachOptions, Attached};
use crate::cmdline::{self, BootPlan, CmdlineError};
use crate::connect::{self, ConnectError};
use crate::modules::{self, DepError, LoadError, ModulesDep};
use crate::net::{self, NetError};
use crate::uri::Endpoint;

/// Where the real root is mounted before the switch.
pub const NEW_ROOT: &str = "/newroot";

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
    #[error(transparent)]
    Attach(#[from] AttachError),
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

/// Connects, negotiates and hands the socket to the kernel.
fn attach(plan: &BootPlan) -> Result<Attached, BootError> {
    let spec = &plan.nbd;
    let peer = connect::resolve(&Endpoint::Tcp {
        host: spec.host.clone(),
        port: spec.port,
    })?;
    let opts = AttachOptions {
        export: spec.export.clone(),
        block_size: spec.opts.block_size,
        timeout: spec.opts.timeout,
        read_only: spec.opts.read_only,
        policy: plan.connect,
        ..AttachOptions::default()
    };
    let attached = attach::attach_netlink(&peer, &opts)?;
    if attached.read_only && !plan.mount.read_only {
        log::warn!(
            "{} is read-only: mounting the root read-only",
            attached.device
        );
    }
    Ok(attached)
}

/// The arguments the kernel passed to /init, for the real init.
pub fn init_args_from_env() -> Vec<CString> {
    std::env::args_os()
        .skip(1)
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect()
}
