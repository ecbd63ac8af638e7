//! The PID 1 flow: early mounts → modules → command line → network → NBD → mount →
//! switch_root. Any failure prints one line naming the step and the value, then ends PID 1,
//! which the kernel turns into a panic.

pub mod source;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::cmdline::{self, CmdlineError};
use crate::connect::{self, ConnectError};
use crate::kernel::attach::{self, AttachError, AttachOptions, Attached};
use crate::modules::{self, DepError, LoadError, ModulesDep};
use crate::mount::overlay::{Layers, OverlayError};
use crate::mount::{self, rootdev, MountError};
use crate::net::{self, NetError};
use crate::plan::render::render;
use crate::plan::{BootPlan, NbdSpec, OnFail, Overlay, Replicas, RootDevice, RootMount};
use crate::settings::{FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE};
use crate::supervise;
use crate::switch_root::{self, SwitchRootError};

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
    #[error("kernel modules: {0}")]
    Coldplug(#[from] modules::coldplug::ColdplugError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("TLS with {server}: {source}")]
    Tls {
        server: String,
        source: crate::tls::TlsError,
    },
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    RootDevice(#[from] rootdev::RootDevError),
    #[error("swap: {0}")]
    Swap(#[from] crate::swap::SwapError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error(transparent)]
    SwitchRoot(#[from] SwitchRootError),
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
    mount::api_filesystems()?;
    crate::logger::reopen_console();

    let line = read(
        "reading the kernel command line",
        Path::new("/proc/cmdline"),
    )?;
    let plan = cmdline::parse(&line)?;
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    load_modules()?;
    log::debug!("modules loaded at {} ms", start.elapsed().as_millis());

    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        let err = match attempt(&plan, start) {
            Ok(init) => {
                return Err(switch_root::switch_root(Path::new(NEW_ROOT), &init, init_args).into())
            }
            Err(e) => e,
        };
        match plan.onfail {
            OnFail::Panic => return Err(err),
            OnFail::Retry => {
                log::error!(
                    "{err}; trying again in {} s (rd.nbdroot.onfail=retry)",
                    pause.as_secs()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            OnFail::Shell => {
                log::error!("{err}");
                return Err(shell());
            }
        }
    }
}

/// `rd.nbdroot.onfail=shell`: a shell for debugging, when the initramfs has one.
fn shell() -> BootError {
    let sh = c"/bin/sh";
    log::error!("starting /bin/sh (rd.nbdroot.onfail=shell); the boot ends when it exits");
    let err = nix::unistd::execv(sh, &[sh]).unwrap_err();
    SwitchRootError::Exec {
        init: "/bin/sh".into(),
        source: err,
    }
    .into()
}

/// One try at everything that can fail for reasons outside the command line: network,
/// server, device, filesystem. Undoes the attach when a later step fails, so a retry starts
/// clean. Returns the init to run in the mounted root.
fn attempt(plan: &BootPlan, start: Instant) -> Result<String, BootError> {
    let net = net::bring_up(&plan.network, &plan.tuning, net::Readiness::Present)?;
    log::debug!("network up at {} ms", start.elapsed().as_millis());
    let (resolved, spec) = source::resolve(plan, &net)?;
    let plan = &resolved;
    // The whole plan, now that a DHCP root-path (if any) is in it: what `nbdroot plan` shows.
    for line in render(plan).lines().filter(|l| !l.is_empty()) {
        log::debug!("plan: {line}");
    }
    let mount = plan.mount.resolve(&spec);
    let mut spec = spec;
    // Under an overlay nothing writes to the root: attached read-only, the kernel refuses
    // any write to the server's copy.
    spec.opts.read_only |= plan.overlay.is_some();
    let attached = attach(plan, &spec, plan.device)?;
    log::debug!(
        "{} attached at {} ms",
        attached.device,
        start.elapsed().as_millis()
    );
    if let Some(swap) = &plan.swap {
        if let Err(e) = swap_on(plan, swap) {
            let _ = crate::kernel::disconnect(attached.index);
            return Err(e);
        }
    }
    let mut upper = None;
    let mounted = (|| {
        let new_root = Path::new(NEW_ROOT);
        let read_only = match &plan.overlay {
            None => {
                mount_root_on(
                    &plan.root,
                    &attached.device,
                    attached.read_only,
                    &mount,
                    plan.tuning.link_timeout,
                    new_root,
                )?
                .1
            }
            Some(overlay) => {
                overlay_root(
                    plan,
                    overlay,
                    &attached.device,
                    &mount,
                    new_root,
                    &mut upper,
                )?;
                false
            }
        };
        let init = match switch_root::find_init(new_root, plan.init.as_deref()) {
            Ok(init) => init,
            Err(e) => {
                let _ = nix::mount::umount(new_root);
                return Err(e.into());
            }
        };
        log::info!(
            "starting {init} ({} ms after /init began, {})",
            start.elapsed().as_millis(),
            if read_only { "ro" } else { "rw" },
        );
        Ok(init)
    })();
    if mounted.is_err() {
        if plan.overlay.is_some() {
            Layers::default().unmount();
        }
        for (index, device) in upper.into_iter().chain([(attached.index, attached.device)]) {
            if let Err(e) = crate::kernel::disconnect(index) {
                log::warn!("cannot detach {device} after the failure: {e}");
            }
        }
    }
    mounted
}

/// `rd.nbdroot.overlay=`: the root's filesystem read-only under /run/nbdroot/overlay, the
/// upper layer (a tmpfs, or a second export's filesystem) beside it, and the overlay on
/// `target`. `upper` receives the second export's device, for the caller to detach on failure.
fn overlay_root(
    plan: &BootPlan,
    overlay: &Overlay,
    device: &str,
    mount: &RootMount,
    target: &Path,
    upper: &mut Option<(u32, String)>,
) -> Result<(), BootError> {
    load_on_demand("overlay")?;
    let layers = Layers::default();
    layers.create()?;
    let lower = RootMount {
        read_only: true,
        ..mount.clone()
    };
    mount_root_on(
        &plan.root,
        device,
        true,
        &lower,
        plan.tuning.link_timeout,
        &layers.lower,
    )?;
    match overlay {
        Overlay::Tmpfs { size } => layers.mount_tmpfs(size.as_deref())?,
        Overlay::Nbd(spec) => {
            // The upper layer is an export of its own: the root's replicas are not its copies.
            let attached = attach_export(plan, spec, None, &Replicas::default())?;
            *upper = Some((attached.index, attached.device.clone()));
            layers.check_upper_device(&attached.device, &spec.export, spec.fstype.as_deref())?;
            let fstype = mount::mount_root(
                &attached.device,
                &layers.rw,
                spec.fstype.as_deref(),
                spec.rootflags.as_deref().unwrap_or(""),
                false,
            )?;
            log::info!(
                "mounted {} ({fstype}, rw) on {} for the overlay's upper layer",
                attached.device,
                layers.rw.display()
            );
        }
    }
    layers.mount_overlay(target)?;
    log::info!(
        "mounted overlay on {} (lower {} read-only, upper {})",
        target.display(),
        layers.lower.display(),
        layers.rw.display()
    );
    Ok(())
}

/// Finds the root filesystem on the attached `device` (`root=` may name a partition, a label
/// or a UUID on it) and mounts it on `target`. Returns the device mounted and whether it is
/// read-only. Shared by /init and the dracut mount step.
pub fn mount_root_on(
    root: &RootDevice,
    device: &str,
    device_read_only: bool,
    mount: &RootMount,
    link_timeout: Duration,
    target: &Path,
) -> Result<(String, bool), BootError> {
    let root_dev = rootdev::find(root, device, link_timeout)?;
    let read_only = mount.read_only || device_read_only;
    if device_read_only && !mount.read_only {
        log::warn!("{device} is read-only: mounting the root read-only");
    }
    let fstype = mount::mount_root(
        &root_dev,
        target,
        mount.fstype.as_deref(),
        &mount.options,
        read_only,
    )?;
    log::info!(
        "mounted {root_dev} ({fstype}, {}) on {}",
        if read_only { "ro" } else { "rw" },
        target.display()
    );
    Ok((root_dev, read_only))
}

fn read(step: &'static str, path: &Path) -> Result<String, BootError> {
    fs::read_to_string(path).map_err(|source| BootError::Io {
        step,
        path: path.display().to_string(),
        source,
    })
}

/// The initramfs's modules directory for the running kernel.
fn module_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    PathBuf::from("/lib/modules").join(release)
}

/// Loads `names` and their dependencies from the initramfs, dependencies first.
fn load_with_deps(dir: &Path, names: &[&str]) -> Result<(), BootError> {
    let dep = ModulesDep::parse(&read(
        "reading the module dependencies",
        &dir.join("modules.dep"),
    )?)?;
    let builtin = fs::read_to_string(dir.join("modules.builtin"))
        .map(|t| modules::parse_builtin(&t))
        .unwrap_or_default();
    // One after the other: loading them in parallel threads was measured slower (a single
    // CPU, and the kernel serialises much of module loading anyway).
    for path in dep.load_order(names, &builtin)? {
        let t = Instant::now();
        modules::load_module(&dir.join(&path))?;
        log::debug!("loaded {path} in {} ms", t.elapsed().as_millis());
    }
    Ok(())
}

/// Loads a module the image carries but does not load at every boot (overlay), unless the
/// kernel already has the filesystem.
fn load_on_demand(name: &str) -> Result<(), BootError> {
    let known = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if known
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
    {
        return Ok(());
    }
    load_with_deps(&module_dir(), &[name])
}

/// Loads the modules the initramfs lists, dependencies first.
fn load_modules() -> Result<(), BootError> {
    let dir = module_dir();
    let list_path = Path::new("/").join(modules::INITRAMFS_MODULE_LIST);
    let list = fs::read_to_string(&list_path).unwrap_or_default();
    let names: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if !names.is_empty() {
        load_with_deps(&dir, &names)?;
    }
    // Drivers for the devices present (coldplug rescans until a bus driver's new devices,
    // such as a virtio NIC behind virtio_pci, have theirs too).
    let loaded = modules::coldplug::coldplug(&dir)?;
    if !loaded.is_empty() {
        log::debug!("coldplug loaded {}", loaded.join(", "));
    }
    Ok(())
}

/// `rd.nbdroot.swap=`: attach the export (with its own supervisor), optionally write a swap
/// signature, swapon, and raise the memory reserve.
fn swap_on(plan: &BootPlan, spec: &NbdSpec) -> Result<(), BootError> {
    let attached = attach_export(plan, spec, None, &Replicas::default())?;
    let result = (|| {
        if spec.opts.mkswap {
            crate::swap::mkswap(&attached.device, attached.export.size)?;
        }
        crate::swap::swapon(&attached.device, spec.opts.priority)?;
        if let Some(k) = crate::swap::raise_min_free(plan.min_free_kbytes)? {
            log::info!("vm.min_free_kbytes raised to {k} for swap over the network");
        }
        log::info!(
            "swapping on {} ({} bytes)",
            attached.device,
            attached.export.size
        );
        Ok(())
    })();
    if result.is_err() {
        let _ = crate::kernel::disconnect(attached.index);
    }
    result
}

/// TLS settings with the credentials `mkinitramfs --tls-*` put in the image, where the command
/// line names none.
fn with_image_credentials(mut t: crate::tls::TlsSettings) -> crate::tls::TlsSettings {
    let in_image = |rel: &str| {
        let path = Path::new("/").join(rel);
        path.exists().then_some(path)
    };
    t.ca = t.ca.or_else(|| in_image(crate::initramfs::TLS_CA));
    if t.cert.is_none() && t.key.is_none() {
        t.cert = in_image(crate::initramfs::TLS_CERT);
        t.key = in_image(crate::initramfs::TLS_KEY);
    }
    t
}

/// Connects, negotiates and hands the sockets to the kernel, and starts the `@nbdroot`
/// supervisor for the device (shared by /init and `nbdroot attach`).
pub fn attach(plan: &BootPlan, spec: &NbdSpec, device: Option<u32>) -> Result<Attached, BootError> {
    attach_export(plan, spec, device, &plan.replicas)
}

/// [`attach`], with the replicas of this export (the root's; none for swap).
fn attach_export(
    plan: &BootPlan,
    spec: &NbdSpec,
    device: Option<u32>,
    replicas: &Replicas,
) -> Result<Attached, BootError> {
    let peer = connect::resolve(&Endpoint::Tcp {
        host: spec.host.clone(),
        port: spec.port,
    })?;
    // A replica whose name does not resolve is one that does not answer: left out.
    let replica_peers = replicas
        .servers
        .iter()
        .filter_map(|(host, port)| {
            let endpoint = Endpoint::Tcp {
                host: host.clone(),
                port: *port,
            };
            connect::resolve(&endpoint)
                .map_err(|e| log::warn!("replica {endpoint} left out: {e}"))
                .ok()
        })
        .collect();
    let t = &plan.tuning;
    let tls = match plan.tls_for(spec).map(with_image_credentials) {
        Some(settings) => Some(
            crate::tls::Client::new(&settings, &spec.host.to_string()).map_err(|source| {
                BootError::Tls {
                    server: spec.address(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    let opts = AttachOptions {
        export: spec.export.clone(),
        device,
        connections: spec.opts.connections.unwrap_or(t.connections).into(),
        block_size: spec.opts.block_size,
        timeout: spec.opts.timeout,
        dead_conn_timeout: spec.opts.dead_timeout.or(t.dead_timeout),
        supervised: true,
        read_only: spec.opts.read_only,
        identifier: None,
        policy: plan.connect,
        socket: t.socket,
        tls,
        replicas: replica_peers,
        shared_storage: replicas.shared_storage,
    };
    let attached = attach::attach_netlink(&peer, &opts)?;
    // The supervisor replaces dead connections; without it the root still works, but a
    // server restart would end it, so say so loudly and go on.
    let cfg = supervise::Config::new(&attached, &opts);
    match supervise::spawn(cfg) {
        Ok(pid) => log::debug!("supervisor for {} is pid {pid}", attached.device),
        Err(e) => log::error!("{e}: the root will not survive a lost connection"),
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
