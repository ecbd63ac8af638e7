//! NBD servers on 127.0.0.1 for the guest (through a guestfwd) or for host-side tests.
//!
//! Each server listens on a free port picked at start, so tests run in parallel; its stderr
//! goes to a log file so a failed test can be diagnosed after the fact.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::command;
use crate::error::{Context, Error, Result};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a port is picked anew when another process takes it between our probe and the
/// server's bind.
const PORT_ATTEMPTS: usize = 5;
/// How long an orderly stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running NBD server process; killed and reaped on drop.
#[derive(Debug)]
pub struct NbdServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's stderr.
    pub log: PathBuf,
    /// The program and its arguments, without the address (kept for restart).
    argv: Vec<String>,
    /// How the server is told where to listen.
    listen: Listen,
    /// Run in this network namespace, listening on this address, port 10809 (the
    /// namespace's ports are its own).
    netns: Option<(String, String)>,
    child: Option<Child>,
    /// The daemon's pid, for a server that daemonizes.
    daemon: Option<u32>,
}

/// How a server takes its listening address.
#[derive(Debug)]
enum Listen {
    /// An option before the other arguments (`-b` for qemu-nbd, `-i` for nbdkit), then `-p`.
    Flag(&'static str),
    /// Written into the arguments: `@ADDR@` and `@PORT@` are replaced at each start
    /// (qemu-storage-daemon's `--nbd-server addr.host=@ADDR@,addr.port=@PORT@`).
    Template,
    /// nbd-server: a configuration file written before each start from a template with
    /// `@PORT@`. It serves more than one client only as a daemon (`-d` serves one and
    /// exits), so it daemonizes and writes its pid to `pid_file`; as a daemon it leads its
    /// own process group, which holds the per-client children a restart must end too.
    Config {
        path: PathBuf,
        template: String,
        pid_file: PathBuf,
    },
}

/// Serves `image` (raw) with `qemu-nbd`; many clients at once, surviving disconnects.
pub fn qemu_nbd(image: &Path, export: Option<&str>, read_only: bool) -> Result<NbdServer> {
    let mut argv = vec!["qemu-nbd", "-f", "raw", "--persistent", "--shared=8"];
    if let Some(name) = export {
        argv.extend(["-x", name]);
    }
    argv.extend(read_only.then_some("-r"));
    let mut argv: Vec<String> = argv.into_iter().map(String::from).collect();
    argv.push(image.display().to_string());
    let log = PathBuf::from(format!("{}.qemu-nbd.log", image.display()));
    NbdServer::start(argv, log, Listen::Flag("-b"), None)
}

/// Runs `nbdkit <args>` (plugin and its parameters) on a free port, tied to this process.
pub fn nbdkit(args: &[&str]) -> Result<NbdServer> {
    let fixed = ["nbdkit", "--foreground", "--exit-with-parent"];
    let argv = fixed.iter().chain(args).map(|a| a.to_string()).collect();
    let name = format!("nbdkit-{}-{}.log", std::process::id(), crate::unique());
    let log = crate::logs_dir()?.join(name);
    NbdServer::start(argv, log, Listen::Flag("-i"), None)
}

/// Runs the real `nbd-server` (in the foreground) with one named export per `(name, image)`,
/// read-write, on a free port; its configuration file and log sit beside the first image.
pub fn nbd_server(exports: &[(&str, &Path)]) -> Result<NbdServer> {
    nbd_server_at(None, exports)
}

/// [`nbd_server`] inside the network namespace `ns`, listening on `addr`:10809 there.
pub fn nbd_server_in(ns: &str, addr: &str, exports: &[(&str, &Path)]) -> Result<NbdServer> {
    nbd_server_at(Some((ns.to_string(), addr.to_string())), exports)
}

fn nbd_server_at(netns: Option<(String, String)>, exports: &[(&str, &Path)]) -> Result<NbdServer> {
    let first = exports.first().map(|(_, p)| *p).ok_or_else(|| {
        Error::unexpected(
            "start nbd-server",
            "no export given (expected name and image)",
        )
    })?;
    let template = String::from(
        "[generic]\nuser = root\ngroup = root\nlistenaddr = @ADDR@\nport = @PORT@\nallowlist = true\n",
    );
    let addr = netns.as_ref().map_or("127.0.0.1", |(_, a)| a.as_str());
    let mut template = template.replace("@ADDR@", addr);
    for (name, image) in exports {
        template.push_str(&format!("[{name}]\nexportname = {}\n", image.display()));
    }
    let path = PathBuf::from(format!("{}.nbd-server.conf", first.display()));
    let pid_file = PathBuf::from(format!("{}.nbd-server.pid", first.display()));
    let argv = ["nbd-server", "-C", &path.to_string_lossy(), "-p"]
        .iter()
        .map(|s| s.to_string())
        .chain([pid_file.display().to_string()])
        .collect();
    let log = PathBuf::from(format!("{}.nbd-server.log", first.display()));
    let listen = Listen::Config {
        path,
        template,
        pid_file,
    };
    NbdServer::start(argv, log, listen, netns)
}

impl NbdServer {
    /// Runs `argv` inside the namespace `ns`, listening on `addr`:10809 there; `@ADDR@` and
    /// `@PORT@` in `argv` say where. Its stderr goes to `log`.
    pub fn in_netns(ns: &str, addr: &str, argv: &[&str], log: PathBuf) -> Result<NbdServer> {
        let argv = argv.iter().map(|a| a.to_string()).collect();
        let netns = Some((ns.to_string(), addr.to_string()));
        NbdServer::start(argv, log, Listen::Template, netns)
    }

    fn start(
        argv: Vec<String>,
        log: PathBuf,
        listen: Listen,
        netns: Option<(String, String)>,
    ) -> Result<Self> {
        let (port, child) = (0, None);
        let mut server = NbdServer {
            port,
            log,
            argv,
            listen,
            netns,
            child,
            daemon: None,
        };
        if server.netns.is_some() {
            server.port = 10809;
            server.spawn()?;
            return Ok(server);
        }
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            if server.spawn()? {
                return Ok(server);
            }
        }
        let detail = format!("{PORT_ATTEMPTS} free ports were taken before the server bound them");
        Err(Error::unexpected(
            format!("start {}", server.argv[0]),
            detail,
        ))
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server (SIGKILL: as abrupt as a crash or a power cut) and reaps it.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.daemon = None;
    }

    /// Stops the server as an operator would, with `signal` (`kill`'s form: `-TERM`, `-INT`),
    /// and waits until it has exited; how long that took. A server still running after
    /// [`STOP_TIMEOUT`] is killed, and that is an error.
    pub fn stop(&mut self, signal: &str) -> Result<Duration> {
        let started = Instant::now();
        self.signal(signal);
        let step = format!("stop {} with {signal}", self.argv[0]);
        while started.elapsed() < STOP_TIMEOUT {
            let gone = match (&mut self.child, self.daemon) {
                (Some(child), _) => child.try_wait().step(|| step.clone())?.is_some(),
                // The daemon's group: gone once no process of it is left.
                (None, Some(pid)) => !Command::new("kill")
                    .args(["-0", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                (None, None) => true,
            };
            if gone {
                self.child = None;
                self.daemon = None;
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(Error::unexpected(
            step,
            format!("still running after {STOP_TIMEOUT:?}"),
        ))
    }

    /// Starts a server that [`NbdServer::stop`] stopped, on the same address and port.
    pub fn start_again(&mut self) -> Result<()> {
        match self.spawn()? {
            true => Ok(()),
            false => Err(Error::unexpected(
                format!("start {} again", self.argv[0]),
                format!("port {} was taken meanwhile", self.port),
            )),
        }
    }

    /// Stops the server without closing anything (SIGSTOP): requests sent to it stay in flight,
    /// unanswered, as with a server that hangs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT): it answers what it holds.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Sends `signal` (`kill`'s form) to the server: its process, or a daemon's whole group,
    /// since the per-client children hold the connections.
    fn signal(&self, signal: &str) {
        let pids = match (&self.child, self.daemon) {
            (Some(child), _) => vec![child.id().to_string()],
            (None, Some(pid)) => vec![format!("-{pid}"), pid.to_string()],
            (None, None) => return,
        };
        let _ = Command::new("kill")
            .args([signal, "--"])
            .args(&pids)
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the server again on the same port, as after a server restart.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start_again()
    }

    /// Starts the process and waits until the port accepts connections; `false` if another
    /// process took the port first.
    fn spawn(&mut self) -> Result<bool> {
        let mut cmd = Command::new(&self.argv[0]);
        let inside = self.netns.clone();
        if let Some((ns, _)) = &inside {
            cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, &self.argv[0]]);
        }
        let addr = inside.as_ref().map_or("127.0.0.1", |(_, a)| a.as_str());
        let port = self.port.to_string();
        let mut argv: Vec<String> = self.argv[1..].to_vec();
        match &self.listen {
            // Options go before the positional arguments (the image, or the nbdkit plugin).
            Listen::Flag(flag) => {
                cmd.args([flag, addr, "-p", &port]);
            }
            Listen::Template => {
                for a in &mut argv {
                    *a = a.replace("@ADDR@", addr).replace("@PORT@", &port);
                }
            }
            Listen::Config {
                path,
                template,
                pid_file,
                ..
            } => {
                let text = template.replace("@PORT@", &self.port.to_string());
                fs::write(path, text).step(|| format!("write {}", path.display()))?;
                let _ = fs::remove_file(pid_file);
            }
        }
        cmd.args(&argv);
        let step = format!("start NBD server `{}`", command::describe(&cmd));
        let log = File::options().create(true).append(true).open(&self.log);
        let log = log.step(|| format!("{step}: open log {}", self.log.display()))?;
        // The log is appended to across restarts: errors quote only this run's part.
        let log_start = log.metadata().map_or(0, |m| m.len() as usize);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let mut child = cmd.spawn().step(|| step.clone())?;
        let started = Instant::now();
        let pid_file = match &self.listen {
            Listen::Config { pid_file, .. } => Some(pid_file.clone()),
            Listen::Flag(_) | Listen::Template => None,
        };
        // A daemonizing server's first process exits 0 once the daemon runs.
        let mut daemonized = false;
        loop {
            let exited = match daemonized {
                true => None,
                false => child.try_wait().step(|| format!("{step}: wait"))?,
            };
            if let Some(status) = exited.filter(|s| !(s.success() && pid_file.is_some())) {
                let log = std::fs::read(&self.log).unwrap_or_default();
                let log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
                if log.contains("Address already in use") {
                    return Ok(false);
                }
                return Err(Error::unexpected(
                    step,
                    format!("exited with {status} before listening; log:\n{log}"),
                ));
            }
            daemonized |= exited.is_some();
            // A process that took the port meanwhile would answer too; the window is tiny
            // (ports come from the kernel's port-0 choice) and such a server then exits.
            let listening = match &inside {
                None => {
                    TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                }
                Some((ns, addr)) => listening_in(ns, addr, self.port),
            };
            if listening {
                let Some(pid_file) = &pid_file else {
                    self.child = Some(child);
                    return Ok(true);
                };
                let pid = fs::read_to_string(pid_file).ok();
                if let Some(pid) = pid.and_then(|p| p.trim().parse().ok()) {
                    self.daemon = Some(pid);
                    return Ok(true);
                }
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                // A daemon that never listened is ended too.
                let pid = pid_file.as_ref().and_then(|f| fs::read_to_string(f).ok());
                self.daemon = pid.and_then(|p| p.trim().parse().ok());
                self.kill();
                return Err(Error::unexpected(
                    step,
                    format!("port {} not open after {START_TIMEOUT:?}", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `addr:port` accepts a connection inside the namespace `ns` (bash's /dev/tcp).
fn listening_in(ns: &str, addr: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nobody listens on right now (the kernel's choice for port 0). Another process may
/// take it before the server binds; the caller retries then.
pub fn free_port() -> Result<u16> {
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr());
    Ok(addr.step(|| "pick a free port on 127.0.0.1")?.port())
}
