//! Boot-time benchmark: guest uptime when the root's init runs, for nbdroot and for the
//! kernel floor (a busybox /init that powers off at once), booted alternately in one run.
//! Prints a Markdown table for BENCHMARKS.md. Figures, not pass/fail.

use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::reference::nbd_client_initramfs;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, floor_initramfs, nbdroot_binary, nbdroot_initramfs, qemu_nbd,
    run, Kernel, RootFs, VmConfig,
};

const USAGE: &str = "usage: bench-boot [--rounds N]   (default 5)";

fn main() -> ExitCode {
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match bench(rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-boot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Uptime (seconds) printed by the guest after `prefix`, or an error with the console.
fn boot_uptime(
    kernel: &Kernel,
    initrd: &std::path::Path,
    append: &str,
    prefix: &str,
) -> nbdroot_qemu::Result<f64> {
    let mut cfg = VmConfig::new(&kernel.vmlinuz, initrd);
    cfg.append = append.to_string();
    cfg.net = !append.is_empty();
    cfg.deadline = Duration::from_secs(120);
    let out = run(&cfg)?;
    out.lines_with(prefix)
        .first()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| nbdroot_qemu::Error::unexpected("read the guest's uptime", out.to_string()))
}

struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }
    fn range(&self) -> (f64, f64) {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

fn bench(rounds: usize) -> nbdroot_qemu::Result<()> {
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("bench-boot");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let floor = dir.join("floor.img");
    floor_initramfs(&floor)?;
    let initrd = dir.join("nbdroot.img");
    nbdroot_initramfs(&kernel, &initrd)?;
    let reference = dir.join("reference.img");
    nbd_client_initramfs(&kernel, &reference)?;
    let img = dir.join("root.ext4");
    RootFs::new(dir.join("root"))?
        .with_probe()
        .build_ext4(&img, 64, None)?;
    let server = qemu_nbd(&img, None, false)?;
    let append = format!(
        "root=nbd:10.0.2.2:{} ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw",
        server.port
    );

    let ref_append = format!("root=nbd:unused nbdref=10.0.2.2:{}", server.port);

    let mut floor_s = Stats { samples: vec![] };
    let mut nbd_s = Stats { samples: vec![] };
    let mut ref_s = Stats { samples: vec![] };
    let probe = "NBDROOT-PROBE pid=1 uptime=";
    for round in 1..=rounds {
        floor_s
            .samples
            .push(boot_uptime(&kernel, &floor, "", "NBDROOT-FLOOR uptime=")?);
        nbd_s
            .samples
            .push(boot_uptime(&kernel, &initrd, &append, probe)?);
        ref_s
            .samples
            .push(boot_uptime(&kernel, &reference, &ref_append, probe)?);
        eprintln!(
            "round {round}/{rounds}: floor {:.2} s, nbdroot {:.2} s, busybox + nbd-client {:.2} s",
            floor_s.samples.last().unwrap(),
            nbd_s.samples.last().unwrap(),
            ref_s.samples.last().unwrap()
        );
    }

    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let binary = size(&nbdroot_binary()?);
    println!("Guest uptime when the root's init runs (QEMU TCG, 1 vCPU, {} kernel, {rounds} boots each, alternating):\n", kernel.version);
    println!("| stack | initramfs bytes | median s | min – max s | over the floor |");
    println!("|---|---|---|---|---|");
    let (fmin, fmax) = floor_s.range();
    println!(
        "| kernel floor (busybox /init, powers off at once) | {} | {:.2} | {fmin:.2} – {fmax:.2} | — |",
        size(&floor),
        floor_s.median()
    );
    let (nmin, nmax) = nbd_s.range();
    println!(
        "| nbdroot (static ip=, qemu-nbd on 127.0.0.1) | {} | {:.2} | {nmin:.2} – {nmax:.2} | +{:.2} s |",
        size(&initrd),
        nbd_s.median(),
        nbd_s.median() - floor_s.median()
    );
    let (rmin, rmax) = ref_s.range();
    println!(
        "| busybox sh + nbd-client 3.24 (netlink), same static address | {} | {:.2} | {rmin:.2} – {rmax:.2} | +{:.2} s |",
        size(&reference),
        ref_s.median(),
        ref_s.median() - floor_s.median()
    );
    let over = |s: &Stats| s.median() - floor_s.median();
    println!(
        "\nnbdroot's cost over the floor is {:.2}× the reference stack's ({:+.2} s against {:+.2} s).",
        over(&nbd_s) / over(&ref_s),
        over(&nbd_s),
        over(&ref_s)
    );
    println!("\nnbdroot static binary: {binary} bytes (stripped, x86_64-unknown-linux-musl)");
    Ok(())
}
