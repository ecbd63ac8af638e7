//! Fleet benchmark: what one boot costs the server's link, and what several guests booting
//! at once from one server cost each other. The server is docs/servers.md's shared-base
//! nbdkit recipe, the guests use `rd.nbdroot.overlay=tmpfs`, and a counting relay between
//! them measures the bytes on the wire (NBD headers included). Prints Markdown for
//! BENCHMARKS.md. Figures, not pass/fail.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nbdroot_qemu::error::{Context, Error, Result};
use nbdroot_qemu::proxy::CountingProxy;
use nbdroot_qemu::recipes::{self, Env, RecipeServer};
use nbdroot_qemu::stats::Stats;
use nbdroot_qemu::sysroot::debian_systemd_root_copy;
use nbdroot_qemu::vm::run_unslotted;
use nbdroot_qemu::{boot_kit, ext4_from_dir, free_port, scratch, BootKit, RootFs, VmConfig};

const USAGE: &str = "usage: bench-fleet [--guests N] [--rounds R] [--no-systemd]
  --guests N     guests booting at once (default 4)
  --rounds R     rounds of the alone and the together boots (default 2)
  --no-systemd   skip the Debian systemd root (its bytes per boot)";

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
const FWD_IP: &str = "10.0.2.100";
const PROBE: &str = "NBDROOT-PROBE pid=1 uptime=";
const UP: &str = "NBDT-FLEET-UP uptime=";

fn main() -> ExitCode {
    let (mut guests, mut rounds, mut systemd) = (4usize, 2usize, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut count = |slot: &mut usize| match args.next().and_then(|n| n.parse().ok()) {
            Some(n) if n > 0 => {
                *slot = n;
                true
            }
            _ => false,
        };
        let ok = match a.as_str() {
            "--guests" => count(&mut guests),
            "--rounds" => count(&mut rounds),
            "--no-systemd" => {
                systemd = false;
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    match bench(guests, rounds, systemd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-fleet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The shared base served by the documented recipe, behind a counting relay.
struct Served {
    _server: RecipeServer,
    proxy: CountingProxy,
}

fn serve(srv: &Path) -> Result<Served> {
    let env = Env {
        srv: srv.to_path_buf(),
        port: free_port()?,
    };
    let server = recipes::get("shared-base-nbdkit")?.serve(&env)?;
    let proxy = CountingProxy::start(([127, 0, 0, 1], env.port).into())?;
    Ok(Served {
        _server: server,
        proxy,
    })
}

fn config(kit: &BootKit, port: u16, extra: &str) -> VmConfig {
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    // no_timer_check: with several TCG guests starting at once on a loaded host, the kernel's
    // IO-APIC timer check can miss its window and panic ("IO-APIC + timer doesn't work").
    cfg.append = format!(
        "root=nbd:{FWD_IP}:gold-v1 rd.nbdroot.overlay=tmpfs:256m {IP} no_timer_check {extra}"
    );
    cfg.guestfwd.push((FWD_IP.into(), 10809, port));
    cfg.deadline = Duration::from_secs(600);
    cfg
}

/// The uptime after `prefix` in `out`, or an error with the console.
fn uptime(out: &nbdroot_qemu::VmOutcome, prefix: &str) -> Result<f64> {
    if out.timed_out {
        return Err(Error::unexpected("boot a guest", out.to_string()));
    }
    out.uptime_after(prefix)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bench(guests: usize, rounds: usize, systemd: bool) -> Result<()> {
    let kit = boot_kit();
    let dir = scratch("bench-fleet", "srv");
    let kernel_bytes = fs::metadata(&kit.kernel.vmlinuz)
        .step(|| "size of the kernel")?
        .len();
    let initrd_bytes = fs::metadata(&kit.initrd)
        .step(|| "size of the initramfs")?
        .len();

    // The busybox probe root: small, so the boots measure nbdroot and the server, not a
    // distribution's start-up.
    let probe = dir.join("gold-v1.ext4");
    RootFs::new(dir.join("probe-root"))?
        .with_probe()
        .build_ext4(&probe, 64, None)?;
    let served = serve(&dir)?;

    let mut alone = Stats::default();
    let mut alone_bytes = Stats::default();
    for _ in 0..rounds {
        let before = served.proxy.down();
        let out = run_unslotted(&config(kit, served.proxy.port, ""))?;
        alone.samples.push(uptime(&out, PROBE)?);
        alone_bytes
            .samples
            .push((served.proxy.down() - before) as f64);
    }
    let mut together = Stats::default();
    let mut together_wall = Stats::default();
    let mut together_bytes = Stats::default();
    for _ in 0..rounds {
        let before = served.proxy.down();
        let started = Instant::now();
        let outs: Vec<Result<nbdroot_qemu::VmOutcome>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..guests)
                .map(|_| s.spawn(|| run_unslotted(&config(kit, served.proxy.port, ""))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("guest thread"))
                .collect()
        });
        together_wall.samples.push(started.elapsed().as_secs_f64());
        together_bytes
            .samples
            .push((served.proxy.down() - before) as f64 / guests as f64);
        for out in outs {
            together.samples.push(uptime(&out?, PROBE)?);
        }
    }
    let connections = served.proxy.counters.connections.load(Ordering::Relaxed);
    drop(served);

    let systemd_bytes = if systemd {
        Some(systemd_boot(kit)?)
    } else {
        None
    };

    let host = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Kernel {} under TCG, {host} host cores shared with other work; server: docs/servers.md `shared-base-nbdkit` behind a counting relay; guests: `rd.nbdroot.overlay=tmpfs:256m`, 1 vCPU, 256 MiB.", kit.kernel.version);
    println!();
    println!("| boot | bytes from the server (median) | time to the root's init, guest uptime (median, range) |");
    println!("|---|---|---|");
    let (lo, hi) = alone.range();
    println!(
        "| busybox probe root, one guest alone ({rounds} boots) | {:.2} MiB | {:.2} s ({lo:.2}–{hi:.2}) |",
        mib(alone_bytes.median() as u64),
        alone.median()
    );
    let (lo, hi) = together.range();
    println!(
        "| busybox probe root, {guests} guests at once ({rounds} rounds, {} boots) | {:.2} MiB per guest | {:.2} s ({lo:.2}–{hi:.2}); ratio to alone {:.2}; whole round {:.1} s wall-clock |",
        together.samples.len(),
        mib(together_bytes.median() as u64),
        together.median(),
        together.median() / alone.median(),
        together_wall.median()
    );
    if let Some((bytes, up)) = systemd_bytes {
        println!(
            "| Debian 12 minbase with systemd, to multi-user.target | {:.1} MiB | {up:.1} s |",
            mib(bytes)
        );
    }
    println!();
    println!(
        "{connections} NBD connections relayed. Kernel {:.1} MiB and nbdroot initramfs {:.1} MiB, fetched by the firmware (PXE/HTTP), come on top of the root's bytes.",
        mib(kernel_bytes),
        mib(initrd_bytes)
    );
    if let Some((bytes, _)) = systemd_bytes {
        let per_boot = bytes + kernel_bytes + initrd_bytes;
        for (name, bytes_per_s) in [("1 Gbit/s", 125e6), ("10 Gbit/s", 1250e6)] {
            println!(
                "- {name}: {:.0} systemd boots per minute from the root's bytes alone, {:.0} with the kernel and initramfs over the same link (link-bound, server cache warm, no other traffic).",
                bytes_per_s * 60.0 / bytes as f64,
                bytes_per_s * 60.0 / per_boot as f64
            );
        }
    }
    Ok(())
}

/// Boots the Debian systemd root to multi-user.target through the relay; returns the bytes
/// read until the guest reported it was up, and its uptime then.
fn systemd_boot(kit: &BootKit) -> Result<(u64, f64)> {
    let dir = scratch("bench-fleet", "systemd");
    let root = debian_systemd_root_copy(&dir)?;
    write(
        &root,
        "usr/local/bin/nbdroot-fleet-up",
        "#!/bin/sh\nread up _ < /proc/uptime\necho \"NBDT-FLEET-UP uptime=$up\" > /dev/console\nsystemctl --no-block poweroff\n",
        0o755,
    )?;
    write(
        &root,
        "etc/systemd/system/nbdroot-fleet-up.service",
        "[Unit]\nDescription=nbdroot fleet benchmark probe\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/nbdroot-fleet-up\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    )?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants/nbdroot-fleet-up.service");
    fs::create_dir_all(wants.parent().unwrap_or(&root)).step(|| "create the wants dir")?;
    let _ = fs::remove_file(&wants);
    symlink("../nbdroot-fleet-up.service", &wants).step(|| "enable the probe")?;

    ext4_from_dir(&root, &dir.join("gold-v1.ext4"), 1024, None)?;
    let _ = fs::remove_dir_all(&root);
    let served = serve(&dir)?;
    let log: PathBuf = dir.join("console.log");
    let mut cfg = config(kit, served.proxy.port, "systemd.show_status=0");
    cfg.memory_mib = 512;
    cfg.log_path = Some(log.clone());
    let counters = served.proxy.counters.clone();
    // The bytes when the guest says it is up, before shutdown reads more.
    let watcher = std::thread::spawn(move || {
        nbdroot_qemu::scenario::wait_for(&log, UP, Duration::from_secs(600))
            .then(|| counters.down.load(Ordering::Relaxed))
    });
    let out = run_unslotted(&cfg)?;
    let up = uptime(&out, UP)?;
    let bytes = watcher
        .join()
        .ok()
        .flatten()
        .ok_or_else(|| Error::unexpected("count the systemd boot's bytes", out.to_string()))?;
    Ok((bytes, up))
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).step(|| format!("create {}", parent.display()))?;
    }
    fs::write(&path, text).step(|| format!("write {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .step(|| format!("chmod {}", path.display()))
}
