//! Connect to an export and attach it to an nbd device: the step shared by the boot and by
//! `nbdroot connect`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::connect::{self, ConnectError, Connection, Peer};
use crate::kernel::ioctl::{self, IoctlDevice, IoctlError};
use crate::kernel::{self, device, Attach, KernelError};
use crate::proto::consts::TFLAG_READ_ONLY;
use crate::proto::Export;
use crate::settings::ConnectPolicy;
use crate::settings::SocketOptions;
use crate::settings::{IO_TIMEOUT, SUPERVISED_IO_TIMEOUT};

/// How long a device node may take to appear, and the driver to report a started device.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Which kernel interface to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Netlink,
    Ioctl,
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Export name; empty for the server's default.
    pub export: String,
    /// `/dev/nbd<N>`; `None` picks a free device.
    pub device: Option<u32>,
    pub connections: usize,
    /// Kernel block size; `None` follows the server's minimum.
    pub block_size: Option<u32>,
    /// Kernel I/O timeout; `None` is [`AttachOptions::io_timeout`] over netlink, none over
    /// the ioctls.
    pub timeout: Option<Duration>,
    pub dead_conn_timeout: Option<Duration>,
    /// A supervisor will replace the device's dead connections (and adapt its I/O timeout).
    pub supervised: bool,
    pub read_only: bool,
    pub identifier: Option<String>,
    pub policy: ConnectPolicy,
    pub socket: SocketOptions,
    /// TLS for every connection, handed to the kernel as kernel-TLS sockets.
    pub tls: Option<crate::tls::Client>,
    /// Servers exporting the same image as `peer` ([`crate::replica`]): the connections are
    /// spread over all that answer.
    pub replicas: Vec<Peer>,
    /// The replicas share their storage, so a writable export may fail over between them.
    pub shared_storage: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            export: String::new(),
            device: None,
            connections: 1,
            block_size: None,
            timeout: None,
            dead_conn_timeout: None,
            supervised: false,
            read_only: false,
            identifier: None,
            policy: ConnectPolicy::default(),
            socket: SocketOptions::default(),
            tls: None,
            replicas: Vec::new(),
            shared_storage: false,
        }
    }
}

impl AttachOptions {
    /// The kernel I/O timeout of a netlink attach: the one given, else short under a
    /// supervisor ([`SUPERVISED_IO_TIMEOUT`]), else [`IO_TIMEOUT`].
    pub fn io_timeout(&self) -> Duration {
        match (self.timeout, self.supervised) {
            (Some(t), _) => t,
            (None, true) => SUPERVISED_IO_TIMEOUT,
            (None, false) => IO_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Replica(#[from] crate::replica::probe::ProbeError),
    #[error("attaching {peer} to the kernel: {source}")]
    Netlink { peer: String, source: KernelError },
    #[error("attaching {peer} to the kernel: {source}")]
    Ioctl { peer: String, source: IoctlError },
    #[error("no free nbd device: all of /sys/block/nbd* are in use")]
    NoFreeDevice,
    #[error("no nbd devices: the nbd module is not loaded (modprobe nbd)")]
    NoModule,
    #[error("/dev/nbd{0} is already connected")]
    Busy(u32),
    #[error("/dev/nbd{0} does not exist (is the nbd module loaded? it makes nbds_max devices, 16 by default)")]
    NoSuchDevice(u32),
    #[error("{device} did not appear within {secs} s after attaching it")]
    NoNode { device: String, secs: u64 },
    #[error("cannot start the process that serves {device}: {source}")]
    Fork {
        device: String,
        source: nix::errno::Errno,
    },
    #[error("the process serving {device} ended before the device started: {why}")]
    ServerProcess { device: String, why: String },
}

/// An attached device.
#[derive(Debug, Clone)]
pub struct Attached {
    pub index: u32,
    pub device: String,
    pub export: Export,
    /// The server or the options made the device read-only.
    pub read_only: bool,
    pub peer: Peer,
    /// With replicas: the fingerprint every server's export matched at attach time.
    pub fingerprint: Option<u64>,
    /// With replicas: the servers (0 the main one) that did not answer, or differed.
    pub down: Vec<usize>,
}

impl Attached {
    /// The kernel block size used.
    fn describe(&self, opts: &AttachOptions, block_size: u32) -> String {
        let name = if opts.export.is_empty() {
            "the default export".to_string()
        } else {
            format!("export \"{}\"", opts.export)
        };
        format!(
            "{} {name}: {} bytes, block size {block_size}, {}{}, on {}",
            self.peer,
            self.export.size,
            crate::text::plural(
                if opts.replicas.is_empty() {
                    opts.connections
                } else {
                    crate::replica::connection_count(opts.connections, opts.replicas.len() + 1)
                },
                "connection"
            ),
            if self.read_only { ", read-only" } else { "" },
            self.device
        )
    }
}

struct Prepared {
    conns: Vec<Connection>,
    fingerprint: Option<u64>,
    down: Vec<usize>,
    export: Export,
    flags: u16,
    block_size: u32,
    read_only: bool,
}

fn prepare(peer: &Peer, opts: &AttachOptions) -> Result<Prepared, AttachError> {
    let (conns, fingerprint, down) = if opts.replicas.is_empty() {
        let conns = connect::connect_many(
            peer,
            &opts.export,
            opts.connections.max(1),
            &opts.policy,
            &opts.socket,
            opts.tls.as_ref(),
        )?;
        (conns, None, Vec::new())
    } else {
        let servers: Vec<Peer> = std::iter::once(peer.clone())
            .chain(opts.replicas.iter().cloned())
            .collect();
        let g = crate::replica::probe::gather(
            &crate::replica::probe::Ask {
                servers: &servers,
                export: &opts.export,
                connections: opts.connections,
                policy: opts.policy,
                socket: opts.socket,
                read_only: opts.read_only,
                shared_storage: opts.shared_storage,
                tls: opts.tls.as_ref(),
            },
            crate::replica::epoch_secs(),
        )?;
        let spread: Vec<String> = g.conns.iter().map(|c| c.peer.to_string()).collect();
        log::info!("connections spread over {}", spread.join(", "));
        (g.conns, Some(g.identity.fingerprint), g.board.down())
    };
    let export = conns[0].export.clone();
    let read_only = opts.read_only || export.read_only();
    let flags = if read_only {
        export.flags | TFLAG_READ_ONLY
    } else {
        export.flags
    };
    let block_size = opts
        .block_size
        .unwrap_or_else(|| export.kernel_block_size());
    Ok(Prepared {
        conns,
        fingerprint,
        down,
        export,
        flags,
        block_size,
        read_only,
    })
}

/// Connects and attaches over netlink; the kernel keeps the sockets, nothing stays behind.
pub fn attach_netlink(peer: &Peer, opts: &AttachOptions) -> Result<Attached, AttachError> {
    if let Some(i) = opts.device {
        check_free(i)?;
    }
    let p = prepare(peer, opts)?;
    let fds: Vec<_> = p.conns.iter().map(|c| c.stream.as_raw_fd()).collect();
    let index = kernel::connect(&Attach {
        index: opts.device,
        sockets: &fds,
        size: p.export.size,
        block_size: u64::from(p.block_size),
        server_flags: u64::from(p.flags),
        timeout: Some(opts.io_timeout()),
        dead_conn_timeout: opts.dead_conn_timeout,
        client_flags: 0,
        identifier: opts.identifier.as_deref(),
    })
    .map_err(|source| AttachError::Netlink {
        peer: peer.to_string(),
        source,
    })?;
    // The kernel holds its own references to the sockets now.
    drop(p.conns);
    let attached = Attached {
        index,
        device: kernel::device_path(index),
        export: p.export,
        read_only: p.read_only,
        peer: peer.clone(),
        fingerprint: p.fingerprint,
        down: p.down.clone(),
    };
    log::info!("{}", attached.describe(opts, p.block_size));
    wait_for_node(&attached.device)?;
    Ok(attached)
}

fn check_free(index: u32) -> Result<(), AttachError> {
    match device::is_connected(index) {
        None => Err(AttachError::NoSuchDevice(index)),
        Some(true) => Err(AttachError::Busy(index)),
        Some(false) => Ok(()),
    }
}

fn wait_for_node(device: &str) -> Result<(), AttachError> {
    wait(DEVICE_WAIT, || Path::new(device).exists())
        .then_some(())
        .ok_or_else(|| AttachError::NoNode {
            device: device.to_string(),
            secs: DEVICE_WAIT.as_secs(),
        })
}

/// Polls `ready` until it holds or `bound` passes.
fn wait(bound: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= bound {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Connects and attaches over ioctls. A child process stays in NBD_DO_IT to serve the
/// device; this returns once the device has started. With `foreground`, the calling process
/// serves the device itself and returns only when it is disconnected.
pub fn attach_ioctl(
    peer: &Peer,
    opts: &AttachOptions,
    foreground: bool,
) -> Result<Attached, AttachError> {
    let index = match opts.device {
        Some(i) => {
            check_free(i)?;
            i
        }
        None if !Path::new("/sys/module/nbd").exists() => return Err(AttachError::NoModule),
        None => device::find_free().ok_or(AttachError::NoFreeDevice)?,
    };
    let path = kernel::device_path(index);
    let p = prepare(peer, opts)?;
    let ioctl_err = |source| AttachError::Ioctl {
        peer: peer.to_string(),
        source,
    };
    let dev = IoctlDevice::open(Path::new(&path)).map_err(ioctl_err)?;
    let fds: Vec<_> = p.conns.iter().map(|c| c.stream.as_raw_fd()).collect();
    dev.configure(&ioctl::Config {
        sockets: &fds,
        size: p.export.size,
        block_size: u64::from(p.block_size),
        flags: p.flags,
        read_only: p.read_only,
        timeout: opts.timeout,
    })
    .map_err(ioctl_err)?;
    let attached = Attached {
        index,
        device: path.clone(),
        export: p.export.clone(),
        read_only: p.read_only,
        peer: peer.clone(),
        fingerprint: p.fingerprint,
        down: p.down.clone(),
    };
    log::info!("{}", attached.describe(opts, p.block_size));

    if foreground {
        spawn_partition_rescan(index, path.clone());
        dev.do_it().map_err(ioctl_err)?;
        return Ok(attached);
    }
    // SAFETY: the process is single-threaded here (no thread has been spawned yet), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|source| AttachError::Fork {
        device: path.clone(),
        source,
    })? {
        nix::unistd::ForkResult::Child => {
            // A daemon: no terminal, and stdio closed so that `$(nbdroot connect …)` in a
            // shell sees its end; later messages go to the kernel log.
            let _ = nix::unistd::setsid();
            crate::logger::detach_from_stdio();
            drop(p.conns);
            // Re-executed as `@nbdroot serve`, so that systemd spares it at switch_root and
            // shutdown like the supervisor; serving in this process is the fallback.
            let argv = [
                c"@nbdroot".to_owned(),
                c"serve".to_owned(),
                std::ffi::CString::new(path.clone()).unwrap_or_default(),
            ];
            let _ = nix::unistd::execv(c"/proc/self/exe", &argv);
            drop(dev);
            let code = match serve(&path) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            let started = wait(DEVICE_WAIT, || {
                device::is_connected(index) == Some(true)
                    || matches!(
                        nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                        Ok(nix::sys::wait::WaitStatus::Exited(..)
                            | nix::sys::wait::WaitStatus::Signaled(..))
                    )
            });
            if !started || device::is_connected(index) != Some(true) {
                return Err(AttachError::ServerProcess {
                    device: path,
                    why: if started {
                        "it exited (see its message above)".into()
                    } else {
                        format!("not started after {} s", DEVICE_WAIT.as_secs())
                    },
                });
            }
            Ok(attached)
        }
    }
}

/// Serves an ioctl-configured device until it is disconnected (`@nbdroot serve /dev/nbdN`):
/// the supervisor's guards, a partition rescan once the device runs, then NBD_DO_IT.
pub fn serve(path: &str) -> Result<(), AttachError> {
    crate::supervise::guard::apply();
    let index = device::parse_index(path).ok_or(AttachError::NoNode {
        device: path.to_string(),
        secs: 0,
    })?;
    let dev = IoctlDevice::open(Path::new(path)).map_err(|source| AttachError::Ioctl {
        peer: path.to_string(),
        source,
    })?;
    spawn_partition_rescan(index, path.to_string());
    dev.do_it().map_err(|source| AttachError::Ioctl {
        peer: path.to_string(),
        source,
    })
}

/// The driver cannot scan partitions from inside NBD_DO_IT: once the device runs, ask for a
/// rescan from another thread. A refused rescan is tried again for a while, and a last
/// refusal is said rather than leaving the partitions silently missing.
fn spawn_partition_rescan(index: u32, path: String) {
    std::thread::spawn(move || {
        if !wait(DEVICE_WAIT, || device::is_connected(index) == Some(true)) {
            return;
        }
        for attempt in 1..=RESCAN_TRIES {
            match IoctlDevice::open(Path::new(&path)).and_then(|d| d.reread_partitions()) {
                Ok(()) => return,
                Err(e) if attempt == RESCAN_TRIES => {
                    log::warn!("partitions of {path} not scanned: {e}")
                }
                Err(_) => std::thread::sleep(RESCAN_PAUSE),
            }
        }
    });
}

/// A refused partition rescan is tried this often, this far apart (2 s in all).
const RESCAN_TRIES: u32 = 20;
const RESCAN_PAUSE: Duration = Duration::from_millis(100);

/// Disconnects a device, over netlink when the kernel has it, else with ioctls.
pub fn detach(index: u32) -> Result<(), AttachError> {
    match device::is_connected(index) {
        None => return Err(AttachError::NoSuchDevice(index)),
        Some(false) => log::warn!("/dev/nbd{index} is not connected"),
        Some(true) => {}
    }
    let peer = format!("/dev/nbd{index}");
    match kernel::disconnect(index) {
        Ok(()) => Ok(()),
        Err(KernelError::NoFamily) => IoctlDevice::open(Path::new(&peer))
            .and_then(|d| d.disconnect())
            .map_err(|source| AttachError::Ioctl { peer, source }),
        Err(source) => Err(AttachError::Netlink { peer, source }),
    }
}
