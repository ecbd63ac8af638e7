//! The supervisor: a small process that stays after the export is attached, survives
//! switch_root, and replaces dead connections. The kernel announces a dead connection on its
//! netlink multicast group; with DEAD_CONN_TIMEOUT set, I/O waits while the supervisor
//! reconnects (same resolved address, no DNS), renegotiates the same export, checks its size
//! and hands the new sockets over with NBD_CMD_RECONFIGURE.

pub mod config;
pub mod guard;
pub mod status;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fork, pipe, read, ForkResult};

use crate::cmdline::ConnectPolicy;
use crate::connect;
use crate::kernel::{self, Events, KernelError};
pub use config::Config;
use status::{State, Status};

/// Where status files go; /run moves into the real root at switch_root.
pub const STATUS_DIR: &str = "/run/nbdroot";
/// argv[0] of the supervisor: systemd spares root-owned processes whose argv[0] starts
/// with '@' at switch_root and shutdown (its "root storage daemon" convention).
pub const ARGV0: &str = "@nbdroot";
/// Pause between reconnect attempts: short (a refused connection costs nothing), so I/O
/// resumes within a quarter of a second of the server's return; after a minute of
/// failures, once a second.
const RETRY_PAUSES_MS: [u64; 4] = [50, 100, 200, 250];
const SLOW_RETRY: Duration = Duration::from_secs(1);
const SLOW_AFTER: Duration = Duration::from_secs(60);
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
            let fd = ready_r.as_raw_fd();
            let start = Instant::now();
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, START_WAIT.as_millis() as i32) };
            if ready <= 0 || read(&ready_r, &mut byte) != Ok(1) {
                log::debug!("supervisor wait took {} ms", start.elapsed().as_millis());
                return Err(SuperviseError::NotReady(index));
            }
            Ok(child.as_raw())
        }
    }
}

/// The supervisor's main loop (`@nbdroot supervise <config> <ready fd>`). Returns only when
/// the device is gone.
pub fn run(cfg: Config, ready_fd: Option<i32>) -> Result<(), SuperviseError> {
    let index = cfg.index;
    let guards = guard::apply();
    let mut rss = status::Rss::open();
    let mut events =
        Events::subscribe().map_err(|source| SuperviseError::Kernel { index, source })?;
    let mut st = Status {
        pid: std::process::id(),
        device: kernel::device_path(index),
        server: cfg.peer.to_string(),
        export: cfg.export.clone(),
        state: State::Connected,
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
    let publish = |st: &Status| {
        if let Some(fd) = cfg.status_fd {
            if let Err(e) = status::write(fd, index, st) {
                log::warn!("cannot write the status of {}: {e}", st.device);
            }
        }
    };
    publish(&st);
    if let Some(fd) = ready_fd.filter(|fd| *fd >= 0) {
        // SAFETY: the descriptor was inherited for this one purpose; the File owns and closes it.
        let mut w = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = std::io::Write::write_all(&mut w, b"1");
    }
    log::info!("supervising {} ({} {})", st.device, st.server, st.guards);

    loop {
        let dead = events
            .wait(Duration::from_secs(5))
            .map_err(|source| SuperviseError::Kernel { index, source })?;
        if !dead.contains(&index) {
            // Quiet: check now and then that the device still exists (someone may have
            // disconnected it); then there is nothing left to supervise.
            if dead.is_empty()
                && matches!(
                    kernel::netlink::is_configured(index),
                    Ok(None | Some(false))
                )
            {
                st.state = State::Gone;
                st.last_error = format!("{} was disconnected", st.device);
                publish(&st);
                log::info!("{}: disconnected; the supervisor stops", st.device);
                return Ok(());
            }
            continue;
        }
        let since = Instant::now();
        st.state = State::Reconnecting;
        publish(&st);
        log::warn!(
            "{}: connection to {} lost; reconnecting",
            st.device,
            st.server
        );
        match reconnect(&cfg, &mut st, &publish) {
            Ok(()) => {
                st.reconnects += 1;
                st.state = State::Connected;
                st.last_stall_ms = Some(since.elapsed().as_millis());
                st.rss_kib = rss.kib();
                log::info!(
                    "{}: reconnected to {} in {} ms",
                    st.device,
                    st.server,
                    since.elapsed().as_millis()
                );
                publish(&st);
                // Events for the other sockets of the same failure: already handled.
                let _ = events.wait(Duration::from_millis(0));
            }
            Err(gone) => {
                st.state = State::Gone;
                st.last_error = gone.to_string();
                publish(&st);
                log::error!("{}: {gone}; the supervisor stops", st.device);
                return Ok(());
            }
        }
    }
}

/// Reconnects until RECONFIGURE succeeds. Ends with an error only when the kernel no
/// longer has the device (it was disconnected, or its dead-connection timeout expired).
fn reconnect(cfg: &Config, st: &mut Status, publish: &dyn Fn(&Status)) -> Result<(), KernelError> {
    let policy = ConnectPolicy {
        attempt_timeout: cfg.attempt_timeout,
        retries: 0,
    };
    let mut attempt = 0usize;
    let start = Instant::now();
    loop {
        let pause = match start.elapsed() >= SLOW_AFTER {
            true => SLOW_RETRY,
            false => Duration::from_millis(RETRY_PAUSES_MS[attempt.min(RETRY_PAUSES_MS.len() - 1)]),
        };
        attempt += 1;
        match connect::connect_many(
            &cfg.peer,
            &cfg.export,
            cfg.connections,
            &policy,
            &cfg.socket,
        ) {
            Ok(conns) if conns[0].export.size != cfg.size => {
                st.last_error = format!(
                    "the export is now {} bytes, not {}: refusing to reattach it",
                    conns[0].export.size, cfg.size
                );
                log::error!("{}: {}", st.device, st.last_error);
                publish(st);
            }
            Ok(conns) => {
                let fds: Vec<_> = conns.iter().map(|c| c.stream.as_raw_fd()).collect();
                match kernel::netlink::reconfigure(cfg.index, &fds, cfg.identifier.as_deref()) {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if matches!(
                            e.errno(),
                            Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
                        ) =>
                    {
                        return Err(e)
                    }
                    Err(e) => {
                        st.last_error = e.to_string();
                        log::warn!("{}: {e}", st.device);
                    }
                }
            }
            Err(e) => {
                st.last_error = e.to_string();
                if attempt == 1 || attempt % 20 == 0 {
                    log::warn!("{}: {e}", st.device);
                }
                publish(st);
            }
        }
        sleep(pause);
    }
}

/// Whether a status directory exists (for `nbdroot status`).
pub fn status_dir() -> &'static Path {
    Path::new(STATUS_DIR)
}
