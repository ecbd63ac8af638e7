//! A private network for a guest: a network namespace holding a tap device for QEMU, the
//! host side's address, dnsmasq for DHCP (with the options QEMU's own DHCP cannot send, such
//! as root-path) and the NBD server. Nothing touches the host's own network; everything is
//! removed when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::command;
use crate::error::{Context, Error, Result};

/// The subnet inside every namespace: the host side is .1, DHCP hands out .50–.99.
pub const HOST_IP: &str = "10.77.0.1";
pub const PREFIX: &str = "10.77.0";
/// The host side's IPv6 address.
pub const HOST_IP6: &str = "fd77::1";

/// A network namespace with a tap device `tap0` whose host side is [`HOST_IP`]/24.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
    children: Vec<Child>,
    pub dir: PathBuf,
}

impl NetNs {
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!("nbdr-{}-{}-{tag}", std::process::id(), crate::unique());
        let dir = crate::cache_dir()?.join("netns").join(&name);
        fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
        let ns = NetNs {
            name,
            children: Vec::new(),
            dir,
        };
        ns.ip(&["netns", "add", &ns.name])?;
        ns.exec("set up the namespace", &["ip", "link", "set", "lo", "up"])?;
        ns.exec(
            "add the tap device",
            &["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
        )?;
        ns.exec(
            "address the tap device",
            &["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "tap0"],
        )?;
        // No duplicate address detection: servers bind to this address at once.
        ns.exec(
            "address the tap device",
            &[
                "ip",
                "addr",
                "add",
                &format!("{HOST_IP6}/64"),
                "dev",
                "tap0",
                "nodad",
            ],
        )?;
        ns.exec(
            "bring the tap device up",
            &["ip", "link", "set", "tap0", "up"],
        )?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        command::run(
            "configure a network namespace",
            Command::new("ip").args(args),
        )
        .map(drop)
    }

    /// Adds another host-side address on tap0 (in [`PREFIX`].0/24), for a second server
    /// host.
    pub fn add_address(&self, addr: &str) -> Result<()> {
        self.exec(
            "add a host address",
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "tap0"],
        )
    }

    /// Runs a command inside the namespace and waits for it.
    pub fn exec(&self, step: &str, argv: &[&str]) -> Result<()> {
        command::run(
            step,
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(argv),
        )
        .map(drop)
    }

    /// A command that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Starts dnsmasq on tap0 with `options` (e.g. `dhcp-option=option:root-path,"nbd:…"`),
    /// and waits until it listens.
    pub fn dnsmasq(&mut self, options: &[String]) -> Result<()> {
        let log = self.dir.join("dnsmasq.log");
        let mut argv: Vec<String> = [
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=tap0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--log-dhcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(format!(
            "--dhcp-range={PREFIX}.50,{PREFIX}.99,255.255.255.0,1h"
        ));
        argv.push(format!(
            "--dhcp-leasefile={}",
            self.dir.join("leases").display()
        ));
        argv.extend(options.iter().map(|o| format!("--{o}")));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = fs::File::create(&log).step(|| format!("create {}", log.display()))?;
        let err = out.try_clone().step(|| "dup the dnsmasq log")?;
        let child = self
            .command(&refs)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .step(|| "start dnsmasq")?;
        self.children.push(child);
        // dnsmasq logs "DHCP, IP range …" once it serves.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP, IP range")) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.children.last_mut().map(|c| c.try_wait()) {
                return Err(Error::unexpected(
                    "start dnsmasq",
                    format!(
                        "exited with {status}: {}",
                        fs::read_to_string(&log).unwrap_or_default()
                    ),
                ));
            }
            sleep(Duration::from_millis(20));
        }
        Err(Error::unexpected("start dnsmasq", "not serving after 10 s"))
    }

    /// Starts a long-running server inside the namespace, owned by this namespace.
    pub fn spawn(&mut self, step: &str, argv: &[&str]) -> Result<()> {
        let log = self.dir.join(format!("{}.log", argv[0]));
        let out = fs::File::create(&log).step(|| format!("create {}", log.display()))?;
        let err = out.try_clone().step(|| "dup a server log")?;
        let child = self
            .command(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .step(|| step.to_string())?;
        self.children.push(child);
        Ok(())
    }

    /// Waits until `addr:port` accepts TCP connections inside the namespace.
    pub fn wait_listening(&self, addr: &str, port: u16) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // bash's /dev/tcp takes IPv6 addresses as they are, without brackets.
            let probe = self
                .command(&["bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if probe.is_ok_and(|s| s.success()) {
                return Ok(());
            }
            sleep(Duration::from_millis(50));
        }
        Err(Error::unexpected(
            format!("wait for {addr}:{port} in {}", self.name),
            "nothing listening after 10 s",
        ))
    }

    /// dnsmasq's log, for assertions and diagnostics.
    pub fn dnsmasq_log(&self) -> String {
        fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
