//! The supervisor's state, as a small key=value file per device in /run/nbdroot, read by
//! `nbdroot status`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::path::Path;

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;

/// What the supervisor is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum State {
    /// Every connection is live; waiting for the kernel to announce a dead one.
    #[default]
    Connected,
    /// Replacing a dead connection; I/O waits (until the dead-connection timeout).
    Reconnecting,
    /// The device was disconnected: nothing is left to supervise.
    Gone,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
            State::Gone => "gone",
        }
    }
}

/// What `nbdroot status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub pid: u32,
    pub device: String,
    pub server: String,
    pub export: String,
    pub state: State,
    pub connections: usize,
    pub reconnects: u64,
    pub last_error: String,
    /// How long the last reconnect took, from the dead-link event to RECONFIGURE.
    pub last_stall_ms: Option<u128>,
    /// Requests the server answered with an error (the kernel failed them with an I/O
    /// error), as the kernel's log tells.
    pub server_errors: u64,
    /// The kernel I/O timeout, when the supervisor manages it.
    pub io_timeout_s: Option<u64>,
    pub rss_kib: Option<u64>,
    pub guards: String,
    /// With replicas: one `server.N=<addr> <state> since=<epoch secs>` line per server
    /// ([`crate::replica::Board::render`]).
    pub servers: String,
}

impl Status {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "pid={}", self.pid);
        let _ = writeln!(s, "device={}", self.device);
        let _ = writeln!(s, "server={}", self.server);
        let _ = writeln!(s, "export={}", self.export);
        let _ = writeln!(s, "state={}", self.state.as_str());
        let _ = writeln!(s, "connections={}", self.connections);
        let _ = writeln!(s, "reconnects={}", self.reconnects);
        let _ = writeln!(s, "last_error={}", self.last_error.replace('\n', " "));
        let _ = writeln!(
            s,
            "last_stall_ms={}",
            self.last_stall_ms
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
        let _ = writeln!(s, "server_errors={}", self.server_errors);
        let _ = writeln!(
            s,
            "io_timeout_s={}",
            self.io_timeout_s.map(|v| v.to_string()).unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "rss_kib={}",
            self.rss_kib.map(|v| v.to_string()).unwrap_or_default()
        );
        let _ = writeln!(s, "guards={}", self.guards);
        s.push_str(&self.servers);
        s
    }
}

/// Reads this process's resident set size. Opened once: after switch_root the supervisor
/// no longer sees /proc, but a file it opened before keeps answering.
#[derive(Debug)]
pub struct Rss(Option<fs::File>);

impl Rss {
    pub fn open() -> Self {
        Rss(fs::File::open("/proc/self/status").ok())
    }

    pub fn kib(&mut self) -> Option<u64> {
        use std::io::{Read, Seek};
        let f = self.0.as_mut()?;
        f.rewind().ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Writes `nbd<index>.status` in the directory `dir_fd` atomically (temp file + rename).
pub fn write(dir_fd: i32, index: u32, status: &Status) -> io::Result<()> {
    // SAFETY: the supervisor owns `dir_fd` for its whole life; it is only borrowed here.
    let dir = unsafe { BorrowedFd::borrow_raw(dir_fd) };
    let tmp = format!(".nbd{index}.status.tmp");
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut f = fs::File::from(fd);
    f.write_all(status.render().as_bytes())?;
    drop(f);
    renameat(
        dir,
        tmp.as_str(),
        dir,
        format!("nbd{index}.status").as_str(),
    )?;
    Ok(())
}

/// Every status file in `dir`, as (device file name, contents).
pub fn read_all(dir: &Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".status"))
                .collect()
        })
        .unwrap_or_default();
    // Names are unique in a directory, so sorting them sorts the pairs (and shares the
    // binary's one sort of strings).
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let text = fs::read_to_string(dir.join(&name)).ok()?;
            Some((name, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nbdroot status`, the VM tests and people read these keys: they do not change.
    #[test]
    fn renders_every_key_in_order() {
        let st = Status {
            pid: 42,
            device: "/dev/nbd1".into(),
            server: "unix:/run/nbd.sock".into(),
            export: "swap".into(),
            state: State::Reconnecting,
            connections: 2,
            reconnects: 3,
            last_error: "a\nb".into(),
            last_stall_ms: Some(250),
            server_errors: 16,
            io_timeout_s: Some(4),
            rss_kib: None,
            guards: "mlockall=false io_flusher=true oom_score_adj=unchanged".into(),
            servers: String::new(),
        };
        assert_eq!(
            st.render(),
            "pid=42\ndevice=/dev/nbd1\nserver=unix:/run/nbd.sock\nexport=swap\n\
             state=reconnecting\nconnections=2\nreconnects=3\nlast_error=a b\n\
             last_stall_ms=250\nserver_errors=16\nio_timeout_s=4\nrss_kib=\n\
             guards=mlockall=false io_flusher=true oom_score_adj=unchanged\n"
        );
        let states = [State::Connected, State::Reconnecting, State::Gone].map(State::as_str);
        assert_eq!(states, ["connected", "reconnecting", "gone"]);
    }
}
