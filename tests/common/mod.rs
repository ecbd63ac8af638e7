//! Real NBD servers for the host integration tests: started on a free 127.0.0.1 port,
//! killed (with their scratch files removed) when dropped, even when a test panics.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nbdroot::proto::{self, Client, ExportEntry, HandshakeError};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIB: u64 = 1 << 20;

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nbdroot-interop-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A `size`-byte file filled with `fill`.
    pub fn file(&self, name: &str, size: u64, fill: u8) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, vec![fill; size as usize]).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A server process, killed and reaped when dropped (so also when a test panics).
pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// For a server that daemonizes: where it writes the daemon's pid.
    pidfile: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `program` with `args(port)` and waits until the port listens. A few attempts,
    /// in case something else took the free port in between. With `pidfile`, the program
    /// daemonizes: the process started exits, and the daemon is found through the file.
    pub fn start(
        scratch: &Scratch,
        program: &str,
        pidfile: Option<PathBuf>,
        args: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        let log = scratch.path(&format!("{program}.log"));
        for _ in 0..3 {
            let port = free_port();
            let out = fs::File::create(&log).unwrap();
            let child = Command::new(program)
                .args(args(port))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {program} (packages nbdkit, qemu-utils, nbd-server): {e}")
                });
            let mut server = Self {
                child,
                port,
                log: log.clone(),
                pidfile: pidfile.clone(),
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!(
            "{program} did not start listening: {}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.pidfile.as_ref()?).ok()?;
        text.trim().parse().ok()
    }

    /// True once the port is listening; false if the process failed first. Bounded at 10 s.
    /// Watches the kernel's socket table rather than connecting, so the servers never see a
    /// connection that fails its negotiation.
    pub fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let wanted = format!("0100007F:{:04X}", self.port);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if self.pidfile.is_none() || !status.success() => return false,
                _ => {}
            }
            let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            let listening = table.lines().skip(1).any(|line| {
                let fields: Vec<_> = line.split_whitespace().collect();
                fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
            });
            if listening && (self.pidfile.is_none() || self.daemon_pid().is_some()) {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn client(&self, export: &str) -> Client<TcpStream> {
        let mut s = self.connect();
        let export = proto::negotiate(&mut s, export)
            .unwrap_or_else(|e| panic!("negotiate {export:?}: {e}\n{}", self.log_text()));
        Client::new(s, export)
    }

    pub fn negotiate_err(&self, export: &str) -> HandshakeError {
        proto::negotiate(&mut self.connect(), export).unwrap_err()
    }

    pub fn list(&self) -> Result<Vec<ExportEntry>, HandshakeError> {
        proto::list(&mut self.connect())
    }

    pub fn info(&self, export: &str) -> proto::ExportInfo {
        proto::info(&mut self.connect(), export)
            .unwrap_or_else(|e| panic!("info {export:?}: {e}\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub fn nbdkit(scratch: &Scratch, args: &[&str]) -> Server {
    let args = args.to_vec();
    Server::start(scratch, "nbdkit", None, move |port| {
        let mut all = strings(&[
            "--foreground",
            "--exit-with-parent",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        all.extend(strings(&args));
        all
    })
}

pub fn qemu_nbd(scratch: &Scratch, args: &[&str], file: &Path) -> Server {
    let args = args.to_vec();
    let file = file.to_str().unwrap().to_string();
    Server::start(scratch, "qemu-nbd", None, move |port| {
        let mut all = strings(&[
            "-f",
            "raw",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--persistent",
            "--shared=8",
        ]);
        all.extend(strings(&args));
        all.push(file.clone());
        all
    })
}

/// nbd-server with two exports: "alpha" (read-write, flush, FUA, trim) and "beta"
/// (read-only), each 1 MiB.
pub fn nbd_server(scratch: &Scratch, allowlist: bool) -> (Server, PathBuf, PathBuf) {
    let alpha = scratch.file("alpha.img", MIB, 0xaa);
    let beta = scratch.file("beta.img", MIB, 0xbb);
    let config = scratch.path("nbd-server.conf");
    let (a, b, c) = (alpha.clone(), beta.clone(), config.clone());
    // Daemonized: with -d (no fork) nbd-server 3.24 serves a single transmission session and
    // exits, and also exits when any negotiation fails.
    let pidfile = scratch.path("nbd-server.pid");
    let pid = pidfile.clone();
    let server = Server::start(scratch, "nbd-server", Some(pidfile), move |port| {
        let _ = fs::remove_file(&pid);
        // The config names the port, so it is rewritten for every attempt.
        fs::write(
            &c,
            format!(
                "[generic]\n\
                 listenaddr = 127.0.0.1\n\
                 port = {port}\n\
                 allowlist = {allowlist}\n\
                 [alpha]\n\
                 exportname = {}\n\
                 flush = true\n\
                 fua = true\n\
                 trim = true\n\
                 [beta]\n\
                 exportname = {}\n\
                 readonly = true\n",
                a.display(),
                b.display()
            ),
        )
        .unwrap();
        strings(&["-C", c.to_str().unwrap(), "-p", pid.to_str().unwrap()])
    });
    (server, alpha, beta)
}
