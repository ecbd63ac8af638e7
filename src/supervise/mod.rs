//! The supervisor: a small process that stays after the export is attached, survives
//! switch_root, and replaces dead connections. The kernel announces a dead connection on its
//! netlink multicast group; with DEAD_CONN_TIMEOUT set, I/O waits while the supervisor
//! reconnects (same resolved address, no DNS), renegotiates the same export, checks its size
//! and hands the new sockets over with NBD_CMD_RECONFIGURE.
//!
//! Every decision is made by `machine::Supervisor`, which performs no I/O; [`run`] only
//! carries them out.

mod backoff;
pub mod config;
pub mod guard;
mod kmsg;
mod machine;
mod offer;
pub mod status;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::{fork, pipe, read, ForkResult};

use crate::connect::{self, Connection, Peer};
use crate::kernel::{self, Events, KernelError};
use crate::replica::{self, Board};
use crate::settings::ConnectPolicy;
pub use config::Config;
use machine::{Action, Actions, Device, Event, Supervisor};
use offer::{Attached, Offer};
use status::Status;

/// Where status files go; /run moves into the real root at switch_root.
pub const STATUS_DIR: &str = "/run/nbdroot";
/// argv[0] of the supervisor: systemd spares root-owned processes whose argv[0] starts
/// with '@' at switch_root and shutdown (its "root storage daemon" convention).
pub const ARGV0: &str = "@nbdroot";
/// Bound on each step of a look at a server that is down (every [`machine::CHECK_EVERY`]
/// while the device is healthy).
const DOWN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the parent waits for the supervisor to report that it is ready.
const START_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot start the supervisor for /dev/nbd{index}: {step}: {source}")]
    Start {
        index: u32,
        step: &'static str,
        source: nix::errno::Errno,
    },
    #[error("the supervisor for /dev/nbd{0} did not start within 5 s")]
    NotReady(u32),
    #[error("supervising /dev/nbd{index}: {source}")]
    Kernel { index: u32, source: KernelError },
    #[error("supervising /dev/nbd{index}: {source}")]
    Tls {
        index: u32,
        source: crate::tls::TlsError,
    },
}

/// Starts the supervisor of `cfg.index` as `@nbdroot supervise <config>` and waits until it
/// has applied its guards and subscribed to the kernel's events. Returns its pid.
pub fn spawn(mut cfg: Config) -> Result<i32, SuperviseError> {
    let index = cfg.index;
    let err = |step| {
        move |source| SuperviseError::Start {
            index,
            step,
            source,
        }
    };
    let _ = std::fs::create_dir_all(STATUS_DIR);
    let dir = open(
        STATUS_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("opening /run/nbdroot"))?;
    let (ready_r, ready_w) = pipe().map_err(err("creating a pipe"))?;
    // SAFETY: PID 1 is single-threaded here; the child only execs.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            // Inheritable copies (without close-on-exec) above the standard descriptors.
            let status_fd = fcntl(&dir, FcntlArg::F_DUPFD(10)).unwrap_or(-1);
            let ready_fd = fcntl(&ready_w, FcntlArg::F_DUPFD(10)).unwrap_or(-1);
            cfg.status_fd = (status_fd >= 0).then_some(status_fd);
            let args = [
                CString::new(ARGV0).unwrap_or_default(),
                CString::new("supervise").unwrap_or_default(),
                CString::new(cfg.encode()).unwrap_or_default(),
                CString::new(ready_fd.to_string()).unwrap_or_default(),
            ];
            let _ = nix::unistd::execv(c"/proc/self/exe", &args);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            // Wait for one byte: the guards are on and the events subscribed.
            let mut byte = [0u8; 1];
            let start = Instant::now();
            let mut pfd = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
            let wait = PollTimeout::try_from(START_WAIT).unwrap_or(PollTimeout::MAX);
            let ready = poll(&mut pfd, wait).unwrap_or(0);
            if ready == 0 || read(&ready_r, &mut byte) != Ok(1) {
                log::debug!("supervisor wait took {} ms", start.elapsed().as_millis());
                return Err(SuperviseError::NotReady(index));
            }
            Ok(child.as_raw())
        }
    }
}

/// The supervisor's main loop (`@nbdroot supervise <config> <ready fd>`): a thin driver
/// that carries out what `machine::Supervisor` decides and tells it what came of it.
/// Returns only when the device is gone.
pub fn run(cfg: Config, ready_fd: Option<i32>) -> Result<(), SuperviseError> {
    let index = cfg.index;
    // The credentials are read now, before this process says it is ready: the boot waits for
    // that, and switch_root then deletes the initramfs they live in.
    let tls = match &cfg.tls {
        Some(settings) => {
            let host = settings.hostname.clone().unwrap_or_default();
            Some(
                crate::tls::Client::new(settings, &host)
                    .map_err(|source| SuperviseError::Tls { index, source })?,
            )
        }
        None => None,
    };
    let guards = guard::apply();
    let mut rss = status::Rss::open();
    let events = Events::subscribe().map_err(|source| SuperviseError::Kernel { index, source })?;
    let status = Status {
        pid: std::process::id(),
        device: kernel::device_path(index),
        server: cfg.peer.to_string(),
        export: cfg.export.clone(),
        connections: cfg.connections,
        guards: format!(
            "mlockall={} io_flusher={} oom_score_adj={}",
            guards.mlocked,
            guards.io_flusher,
            if guards.oom_protected {
                "-1000"
            } else {
                "unchanged"
            }
        ),
        rss_kib: rss.kib(),
        ..Status::default()
    };
    let attached = Attached {
        size: cfg.size,
        flags: Some(cfg.flags),
        connections: cfg.connections,
    };
    let mut sup = Supervisor::new(index, attached, status);
    if let Some(t) = cfg.io_timeout {
        sup = sup.with_io_timeout(t);
    }
    let servers: Vec<Peer> = std::iter::once(cfg.peer.clone())
        .chain(cfg.replicas.iter().cloned())
        .collect();
    let board = (!cfg.replicas.is_empty()).then(|| {
        let names = servers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.to_string(), !cfg.down.contains(&i)));
        Board::new(names, replica::epoch_secs())
    });
    // Opened now: after switch_root the supervisor no longer sees /dev.
    let kmsg = kmsg::Reader::open(index);
    if kmsg.is_none() {
        log::warn!("cannot read /dev/kmsg: the status will not count the server's errors");
    }
    let mut driver = Driver {
        cfg: &cfg,
        tls,
        events,
        kmsg,
        rss,
        sockets: Vec::new(),
        servers,
        board,
        board_changed: false,
        took: None,
    };

    let mut actions = sup.start(Instant::now());
    driver.prepare(&actions, sup.status());
    if let Some(fd) = ready_fd.filter(|fd| *fd >= 0) {
        // SAFETY: the descriptor was inherited for this one purpose; the File owns and closes it.
        let mut w = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = std::io::Write::write_all(&mut w, b"1");
    }
    let st = sup.status();
    log::info!("supervising {} ({} {})", st.device, st.server, st.guards);
    loop {
        let Some(event) = driver.execute(actions.next, sup.raised_io_timeout())? else {
            return Ok(());
        };
        if let (Event::Negotiated(_), Some(server)) = (&event, driver.took.take()) {
            sup.set_server(server);
        }
        actions = sup.handle(Instant::now(), event);
        driver.prepare(&actions, sup.status());
    }
}

/// What the supervisor does with the world: the kernel's events and netlink commands, the
/// server, the status file, the clock.
struct Driver<'a> {
    cfg: &'a Config,
    tls: Option<crate::tls::Client>,
    events: Events,
    /// What the kernel logs about the device.
    kmsg: Option<kmsg::Reader>,
    rss: status::Rss,
    /// Negotiated by the last `Connect`, for the `Reconfigure` that may follow.
    sockets: Vec<Connection>,
    /// The main server, then the replicas.
    servers: Vec<Peer>,
    /// With replicas: each server's state.
    board: Option<Board>,
    /// The board changed since the status was last written.
    board_changed: bool,
    /// With replicas: the server whose sockets the last `Connect` negotiated.
    took: Option<String>,
}

impl Driver<'_> {
    /// Everything in `actions` before its next action.
    fn prepare(&mut self, actions: &Actions, st: &Status) {
        if let Some(note) = &actions.log {
            log::log!(note.level, "{}", note.text);
        }
        if actions.publish || self.board_changed {
            self.board_changed = false;
            let mut st = st.clone();
            if let Some(b) = &self.board {
                st.servers = b.render();
            }
            if let Some(fd) = self.cfg.status_fd {
                if let Err(e) = status::write(fd, self.cfg.index, &st) {
                    log::warn!("cannot write the status of {}: {e}", st.device);
                }
            }
        }
        // Refused or not wanted: close them before anything else, the next attempt included
        // (a server may take one client at a time).
        if actions.next != Action::Reconfigure {
            self.sockets.clear();
        }
    }

    /// Carries out `action`; `None` once there is nothing left to do.
    /// Carries out `action`; `None` once there is nothing left to do. A RECONFIGURE sets
    /// `io_timeout` too, when given.
    fn execute(
        &mut self,
        action: Action,
        io_timeout: Option<Duration>,
    ) -> Result<Option<Event>, SuperviseError> {
        let cfg = self.cfg;
        let event = match action {
            Action::WaitEvents { until } => self.wait(until)?,
            Action::CheckDevice => {
                let device = match kernel::netlink::is_configured(cfg.index) {
                    Ok(Some(true)) => Device::Configured,
                    Ok(None | Some(false)) => Device::Unconfigured,
                    Err(e) => {
                        log::debug!("{}: {e}", kernel::device_path(cfg.index));
                        Device::Unanswered
                    }
                };
                // Unanswered is no news: the servers are worth a look all the same.
                if device != Device::Unconfigured {
                    self.probe_down_servers();
                }
                Event::Device(device)
            }
            Action::Connect if self.board.is_some() => self.connect_replicas(),
            Action::Connect => {
                let policy = ConnectPolicy {
                    attempt_timeout: cfg.attempt_timeout,
                    retries: 0,
                };
                match connect::connect_many(
                    &cfg.peer,
                    &cfg.export,
                    cfg.connections,
                    &policy,
                    &cfg.socket,
                    self.tls.as_ref(),
                ) {
                    Ok(conns) => {
                        let offer = Offer {
                            size: conns[0].export.size,
                            flags: conns[0].export.flags,
                        };
                        self.sockets = conns;
                        Event::Negotiated(offer)
                    }
                    Err(e) => Event::ConnectFailed(e.to_string()),
                }
            }
            Action::Reconfigure => {
                let fds: Vec<_> = self.sockets.iter().map(|c| c.stream.as_raw_fd()).collect();
                let result = kernel::netlink::reconfigure(
                    cfg.index,
                    &fds,
                    cfg.identifier.as_deref(),
                    io_timeout,
                );
                // The kernel holds its own references to the sockets it took.
                self.sockets.clear();
                match result {
                    Ok(()) => Event::Reconfigured {
                        rss_kib: self.rss.kib(),
                    },
                    Err(e) => Event::ReconfigureFailed {
                        errno: e.errno(),
                        message: e.to_string(),
                    },
                }
            }
            Action::Sleep { until } => {
                sleep(until.saturating_duration_since(Instant::now()));
                Event::Timer
            }
            Action::Stop => return Ok(None),
        };
        Ok(Some(event))
    }
}

impl Driver<'_> {
    /// Waits until `until` for the kernel's dead-link events, or for lines the kernel logs
    /// about the device, whichever comes first.
    fn wait(&mut self, until: Instant) -> Result<Event, SuperviseError> {
        let index = self.cfg.index;
        let err = |source| SuperviseError::Kernel { index, source };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Some(kmsg) = &mut self.kmsg else {
                return self.events.wait(left).map(Event::LinkDead).map_err(err);
            };
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [
                PollFd::new(self.events.fd(), PollFlags::POLLIN),
                PollFd::new(kmsg.as_fd(), PollFlags::POLLIN),
            ];
            let ready = poll(&mut fds, timeout).unwrap_or(0);
            let logged = fds[1].any().unwrap_or(false);
            let announced = fds[0].any().unwrap_or(false);
            if logged {
                let notes = kmsg.drain();
                if !notes.is_empty() {
                    return Ok(Event::KernelLog(notes));
                }
            }
            // Other lines of the log are no news: wait on, unless the time is up.
            if announced || ready == 0 || left.is_zero() {
                return self
                    .events
                    .wait(Duration::ZERO)
                    .map(Event::LinkDead)
                    .map_err(err);
            }
        }
    }

    fn record(&mut self, server: usize, answered: bool) {
        if let Some(b) = &mut self.board {
            if b.record(server, answered, replica::epoch_secs()) {
                let (level, state) = if answered {
                    (log::Level::Info, "back")
                } else {
                    (log::Level::Warn, "down")
                };
                log::log!(
                    level,
                    "{}: server {} is {state}",
                    kernel::device_path(self.cfg.index),
                    self.servers[server]
                );
                self.board_changed = true;
            }
        }
    }

    /// One attempt on `server`, each step bounded by `timeout`: connect, negotiate, and
    /// check the export's fingerprint.
    fn probe(
        &self,
        server: usize,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Connection>, String> {
        let cfg = self.cfg;
        let peer = &self.servers[server];
        let policy = ConnectPolicy {
            attempt_timeout: timeout,
            retries: 0,
        };
        let mut conns = connect::connect_many(
            peer,
            &cfg.export,
            count,
            &policy,
            &cfg.socket,
            self.tls.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        let first = conns.remove(0);
        let (first, id) =
            replica::probe::fingerprint(first, cfg.attempt_timeout).map_err(|e| e.to_string())?;
        if let Some(fp) = cfg.fingerprint.filter(|fp| *fp != id.fingerprint) {
            return Err(format!(
                "replica {peer} refused: different data in the sampled blocks (fingerprint {:016x}, not {fp:016x})",
                id.fingerprint
            ));
        }
        conns.insert(0, first);
        Ok(conns)
    }

    /// A dead connection with replicas: the servers that answered last first, the first
    /// one that answers with the same export takes the device's connections (the kernel
    /// fills its dead slots with them and drops the rest).
    fn connect_replicas(&mut self) -> Event {
        let order = self.board.as_ref().map(Board::order).unwrap_or_default();
        let mut errors = Vec::new();
        for server in order {
            match self.probe(server, self.cfg.connections, self.cfg.attempt_timeout) {
                Ok(conns) => {
                    self.record(server, true);
                    let offer = Offer {
                        size: conns[0].export.size,
                        flags: conns[0].export.flags,
                    };
                    self.sockets = conns;
                    self.took = Some(self.servers[server].to_string());
                    return Event::Negotiated(offer);
                }
                Err(e) => {
                    self.record(server, false);
                    errors.push(e);
                }
            }
        }
        Event::ConnectFailed(errors.join("; "))
    }

    /// While the device is healthy: see whether the servers that were down are back, so
    /// the status says so and the next dead connection may go to them.
    fn probe_down_servers(&mut self) {
        let down = self.board.as_ref().map(Board::down).unwrap_or_default();
        for server in down {
            // Short: a silent host must not keep the supervisor from the kernel's events.
            let timeout = self.cfg.attempt_timeout.min(DOWN_PROBE_TIMEOUT);
            let answered = self.probe(server, 1, timeout).is_ok();
            self.record(server, answered);
        }
    }
}

/// Whether a status directory exists (for `nbdroot status`).
pub fn status_dir() -> &'static Path {
    Path::new(STATUS_DIR)
}
