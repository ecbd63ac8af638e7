//! Boots a kernel and initramfs in QEMU (TCG) under a deadline and returns the serial console.
//!
//! A guest never outlives its deadline: a hang is a failed test with a log, never a hung CI.
//! Guests end themselves with `poweroff -f`, or with a panic that `panic=-1 -no-reboot` turns
//! into a QEMU exit.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::command;
use crate::error::{Context, Result};
use crate::lock;

/// How a guest is booted.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel arguments added after `console=ttyS0 panic=-1 loglevel=4` (and
    /// `cryptomgr.notests=1` for a [`VmConfig::lean`] guest).
    pub append: String,
    pub memory_mib: u32,
    /// vCPUs; more than one runs TCG on several host threads, so it competes with the
    /// other VM slot: benchmarks only.
    pub cpus: u32,
    /// Wall-clock limit, counted from QEMU's start (after the VM slot is taken).
    pub deadline: Duration,
    /// Further QEMU arguments (drives, devices).
    pub extra_args: Vec<String>,
    /// A NIC on QEMU user networking (the host is 10.0.2.2 from the guest).
    pub net: bool,
    /// The NIC's QEMU device model: `virtio-net-pci`, `e1000`, `vmxnet3`, …
    pub nic: String,
    /// Run QEMU in this network namespace (see [`crate::netns`]) with its NIC on the
    /// namespace's `tap0` instead of QEMU's user network.
    pub netns: Option<String>,
    /// Where to write the console log (default: a new file under the logs directory), so a
    /// test can watch the guest while it runs.
    pub log_path: Option<PathBuf>,
    /// `(guest ip, guest port, host port)`: the guest's TCP connections to `ip:port` reach
    /// `127.0.0.1:host port`, e.g. `("10.0.2.100", 10809, server.port)`.
    pub guestfwd: Vec<(String, u16, u16)>,
    /// Copy the console to stdout while the guest runs (for people watching).
    pub echo: bool,
    /// End the guest as soon as the console shows one of these texts (for guests that halt
    /// instead of powering off, such as systemd after dracut's `die`).
    pub stop_on: Vec<String>,
    /// A lean guest, the default for functional tests: the x86-64 baseline vCPU (`qemu64`),
    /// so udev loads no CPU-feature crypto modules (AES-NI, PCLMUL, AVX, SHA), and no
    /// crypto self-tests (`cryptomgr.notests=1`). Under TCG both cost seconds of every boot
    /// that runs udev, and they exercise the kernel, not nbdroot. Benchmarks, the demo and the
    /// kernel-TLS tests turn it off: `-cpu max` and the kernel as shipped.
    pub lean: bool,
}

impl VmConfig {
    /// A config with the defaults: 256 MiB, 180 s deadline, networking on.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: String::new(),
            memory_mib: 256,
            cpus: 1,
            // Generous: a TCG boot takes seconds alone but much longer on a loaded machine.
            deadline: Duration::from_secs(180),
            extra_args: Vec::new(),
            net: true,
            nic: "virtio-net-pci".to_string(),
            netns: None,
            log_path: None,
            guestfwd: Vec::new(),
            echo: false,
            stop_on: Vec::new(),
            lean: true,
        }
    }

    /// The kernel command line: the console, panic and log level, the self-test switch,
    /// then [`VmConfig::append`].
    pub fn kernel_cmdline(&self) -> String {
        let selftests = if self.lean {
            " cryptomgr.notests=1"
        } else {
            ""
        };
        format!(
            "console=ttyS0 panic=-1 loglevel=4{selftests} {}",
            self.append
        )
        .trim_end()
        .to_string()
    }

    /// The QEMU command line, with the serial console written to `serial`.
    pub fn command(&self, serial: &std::path::Path) -> Command {
        let mut cmd = match &self.netns {
            // QEMU runs inside the namespace to open its tap device there.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args([
            "-accel",
            "tcg",
            "-cpu",
            if self.lean { "qemu64" } else { "max" },
            "-smp",
            &self.cpus.to_string(),
        ])
        .args(["-m", &self.memory_mib.to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        // A file, not a pipe: it is complete even when QEMU is killed, and no child of
        // QEMU (guestfwd relays) can hold it open.
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(&self.kernel)
        .arg("-initrd")
        .arg(&self.initrd)
        .arg("-append")
        .arg(self.kernel_cmdline());
        if let Some(_ns) = &self.netns {
            let netdev = "tap,id=n0,ifname=tap0,script=no,downscript=no";
            cmd.args([
                "-netdev",
                netdev,
                "-device",
                &format!("{},netdev=n0", self.nic),
            ]);
        } else if self.net {
            let mut netdev = String::from("user,id=n0");
            for (ip, guest_port, host_port) in &self.guestfwd {
                // The `cmd:` form runs one relay per guest connection; the `tcp:` chardev form
                // connects once at QEMU start and serves a single connection, so a guest that
                // reconnects (or opens several sockets) would hang.
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{ip}:{guest_port}-cmd:/bin/busybox nc 127.0.0.1 {host_port}"
                ));
            }
            cmd.args([
                "-netdev",
                &netdev,
                "-device",
                &format!("{},netdev=n0", self.nic),
            ]);
        }
        cmd.args(&self.extra_args);
        cmd
    }
}

/// What a guest did.
#[derive(Debug)]
pub struct VmOutcome {
    /// The whole serial console.
    pub log: String,
    /// Where the console log is kept.
    pub log_path: PathBuf,
    /// QEMU's own stderr (bad arguments, missing files).
    pub stderr: String,
    pub status: ExitStatus,
    /// From QEMU's start to its exit (or kill).
    pub elapsed: Duration,
    /// QEMU was killed at the deadline.
    pub timed_out: bool,
    /// QEMU was ended because the console showed [`VmConfig::stop_on`].
    pub stopped: bool,
}

impl VmOutcome {
    /// The console lines that start with `prefix`, with the prefix removed.
    pub fn lines_with(&self, prefix: &str) -> Vec<&str> {
        self.log
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
            .collect()
    }

    /// The probe's `NBDROOT-MOUNT` line for `/` (device, mount point, fstype, options), as
    /// the root's init saw /proc/mounts. Panics with the console when there is none: a test
    /// helper.
    pub fn root_mount(&self) -> String {
        self.lines_with("NBDROOT-MOUNT ")
            .into_iter()
            .find(|m| m.split(' ').nth(1) == Some("/"))
            .unwrap_or_else(|| panic!("no / mount:\n{self}"))
            .to_string()
    }

    /// The guest uptime (seconds) the first console line starting with `prefix` reports, as
    /// the benchmarks' probes print it; an error with the console when there is none.
    pub fn uptime_after(&self, prefix: &str) -> Result<f64> {
        self.lines_with(prefix)
            .first()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| crate::Error::unexpected("read the guest's uptime", self.to_string()))
    }

    /// Whether the console shows `s` anywhere.
    pub fn contains(&self, s: &str) -> bool {
        self.log.contains(s)
    }

    /// The last `n` console lines, for assertion messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A summary for assertion messages: how QEMU ended and the end of the console.
impl fmt::Display for VmOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let killed = if self.timed_out {
            " (killed at the deadline)"
        } else {
            ""
        };
        let (status, elapsed, log) = (self.status, self.elapsed, self.log_path.display());
        writeln!(
            f,
            "QEMU {status} after {elapsed:.1?}{killed}; console log {log}"
        )?;
        if !self.stderr.trim().is_empty() {
            writeln!(f, "--- QEMU stderr ---\n{}", self.stderr.trim_end())?;
        }
        write!(f, "--- console tail ---\n{}", self.tail(60))
    }
}

/// Boots the guest and waits for it to end, or kills it at the deadline.
///
/// Holds a VM slot for the guest's life (see [`lock::vm_slot`]); the deadline starts when
/// QEMU starts, so time spent queueing for a slot never counts against a guest.
pub fn run(cfg: &VmConfig) -> Result<VmOutcome> {
    let _slot = lock::vm_slot()?;
    run_unslotted(cfg)
}

/// [`run`] without taking a VM slot: for benchmarks that boot several guests at once on
/// purpose, to measure the contention the slots otherwise prevent.
pub fn run_unslotted(cfg: &VmConfig) -> Result<VmOutcome> {
    let dir = crate::logs_dir()?;
    let name = format!("{}-{}", std::process::id(), crate::unique());
    let log_path = cfg
        .log_path
        .clone()
        .unwrap_or_else(|| dir.join(format!("{name}.console.log")));
    let err_path = dir.join(format!("{name}.qemu-stderr.log"));
    let err_file = File::create(&err_path).step(|| format!("create {}", err_path.display()))?;

    let mut cmd = cfg.command(&log_path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file);
    let step = format!("run VM `{}`", command::describe(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().step(|| step.clone())?;
    let mut echo = Echo::default();
    let mut polls = 0u32;
    let (status, timed_out, stopped) = loop {
        if cfg.echo {
            echo.copy_new(&log_path);
        }
        if let Some(status) = child.try_wait().step(|| format!("{step}: wait"))? {
            if cfg.echo {
                echo.copy_new(&log_path);
            }
            break (status, false, false);
        }
        if started.elapsed() >= cfg.deadline {
            child.kill().step(|| format!("{step}: kill"))?;
            break (child.wait().step(|| format!("{step}: reap"))?, true, false);
        }
        polls += 1;
        // Every half second: reading the whole log is cheap, but not every 20 ms.
        if !cfg.stop_on.is_empty() && polls.is_multiple_of(25) {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            if cfg.stop_on.iter().any(|text| log.contains(text.as_str())) {
                // A moment for the lines after it.
                std::thread::sleep(Duration::from_millis(500));
                child.kill().step(|| format!("{step}: kill"))?;
                break (child.wait().step(|| format!("{step}: reap"))?, false, true);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    // QEMU creates the log only once it starts; a bad command line leaves none.
    let log = std::fs::read(&log_path).unwrap_or_default();
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    let outcome = VmOutcome {
        log: String::from_utf8_lossy(&log).into_owned(),
        log_path,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status,
        elapsed,
        timed_out,
        stopped,
    };
    record_boot(&outcome);
    Ok(outcome)
}

/// Appends one line per boot to the file `NBDROOT_BOOT_LOG` names, if any: how the test
/// runner counts each tier's boots and their time. One `write` of a short line on an
/// O_APPEND file, so test threads and processes sharing the file never interleave.
fn record_boot(out: &VmOutcome) {
    let Some(path) = std::env::var_os("NBDROOT_BOOT_LOG") else {
        return;
    };
    let line = format!(
        "{:.1} {} {}\n",
        out.elapsed.as_secs_f64(),
        if out.timed_out { "timeout" } else { "ended" },
        out.log_path.display()
    );
    let file = File::options().create(true).append(true).open(&path);
    if let Err(e) = file.and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes())) {
        eprintln!(
            "cannot record the boot in {}: {e}",
            PathBuf::from(path).display()
        );
    }
}

/// Copies what a growing console log gained since the last call to stdout.
#[derive(Default)]
struct Echo {
    file: Option<File>,
}

impl Echo {
    fn copy_new(&mut self, path: &std::path::Path) {
        if self.file.is_none() {
            self.file = File::open(path).ok();
        }
        if let Some(f) = &mut self.file {
            let _ = std::io::copy(f, &mut std::io::stdout().lock());
        }
    }
}
