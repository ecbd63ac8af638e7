//! An NBD server bound to one address inside a test network namespace, which a test can
//! kill (SIGKILL, like a crashed server) and start again on the same address and port: the
//! server hosts of the replica tests, several of them side by side in one namespace.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::error::{Context, Result};
use crate::netns::NetNs;

/// A server process in a namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct NsServer {
    ns: String,
    pub addr: String,
    pub port: u16,
    /// The program's arguments after the listening address and port.
    args: Vec<String>,
    /// stdout and stderr of every run, appended.
    pub log: PathBuf,
    child: Option<Child>,
}

impl NsServer {
    /// Runs `nbdkit --foreground --exit-with-parent -i <addr> -p <port> <args>` in `ns`
    /// and waits until it listens. The kernel ties `--exit-with-parent` to the *thread* that
    /// started the server: start (and restart) it from one that outlives the guest.
    pub fn nbdkit(ns: &NetNs, addr: &str, port: u16, args: &[&str]) -> Result<Self> {
        let mut s = NsServer {
            ns: ns.name.clone(),
            addr: addr.to_string(),
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            log: ns.dir.join(format!("nbdkit-{addr}-{port}.log")),
            child: None,
        };
        s.start(ns)?;
        Ok(s)
    }

    /// The address as `nbdroot` takes it.
    pub fn target(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// Starts the server (again) and waits until it listens.
    pub fn start(&mut self, ns: &NetNs) -> Result<()> {
        self.kill();
        let port = self.port.to_string();
        let mut argv = vec![
            "nbdkit",
            "--foreground",
            "--exit-with-parent",
            "-i",
            &self.addr,
            "-p",
            &port,
        ];
        argv.extend(self.args.iter().map(String::as_str));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .step(|| format!("open {}", self.log.display()))?;
        let err = log.try_clone().step(|| "dup a server log")?;
        // `ip netns exec` execs the program: the child is nbdkit itself.
        let child = ns
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .step(|| format!("start {} in {}", argv.join(" "), self.ns))?;
        self.child = Some(child);
        ns.wait_listening(&self.addr, self.port)
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
