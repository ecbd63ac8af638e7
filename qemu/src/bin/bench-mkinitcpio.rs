//! mkinitcpio benchmark: guest uptime when the root's init runs, and image bytes, for
//! nbdroot's hook against an nbd-client hook of the AUR hook's shape (`add_binary
//! nbd-client`, a `net` hook for the address, `root=/dev/nbd0`), both in busybox images made
//! by the real mkinitcpio 41 with the same HOOKS otherwise, booted alternately in one run on
//! the same kernel and server. Prints a Markdown table for BENCHMARKS.md. Figures, not
//! pass/fail.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::mkinitcpio::{build_image, test_hooks, ImageSpec, Mkinitcpio};
use nbdroot_qemu::{cache_dir, debian_cloud_kernel, qemu_nbd, run, Kernel, RootFs, VmConfig};

const USAGE: &str = "usage: bench-mkinitcpio [--rounds N]
  --rounds N   boots per stack (default 5)
needs $NBDROOT_VENDOR/mkinitcpio-41.tar.gz (default ../shared/vendor) and nbd-client on the host";

const STATIC_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
const PROBE: &str = "NBDROOT-PROBE pid=1 uptime=";

fn main() -> ExitCode {
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (
            a.as_str(),
            args.next().and_then(|n| n.parse::<usize>().ok()),
        ) {
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
            eprintln!("bench-mkinitcpio: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One image and command line, and its samples (seconds).
struct Stack {
    name: &'static str,
    image: PathBuf,
    bytes: u64,
    append: String,
    samples: Vec<f64>,
}

impl Stack {
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

fn image(
    mk: &Mkinitcpio,
    kernel: &Kernel,
    dir: &Path,
    name: &str,
    hooks: &[&str],
) -> nbdroot_qemu::Result<(PathBuf, u64)> {
    let mut spec = ImageSpec::nbdroot(hooks)?;
    spec.hook_dirs.push(test_hooks()?);
    let out = dir.join(format!("{name}.img"));
    let built = build_image(mk, kernel, &spec, &out)?;
    Ok((out, built.bytes))
}

fn boot_uptime(kernel: &Kernel, st: &Stack) -> nbdroot_qemu::Result<f64> {
    let mut cfg = VmConfig::new(&kernel.vmlinuz, &st.image);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.append = st.append.clone();
    cfg.memory_mib = 512;
    cfg.deadline = Duration::from_secs(180);
    run(&cfg)?.uptime_after(PROBE)
}

fn bench(rounds: usize) -> nbdroot_qemu::Result<()> {
    let mk = Mkinitcpio::get()?;
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("bench-mkinitcpio");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let common = |mid: &[&'static str]| -> Vec<&'static str> {
        let mut h = vec!["base", "udev", "modconf", "block"];
        h.extend_from_slice(mid);
        h.push("filesystems");
        h
    };
    let (ours, ours_bytes) = image(&mk, &kernel, &dir, "nbdroot", &common(&["nbdroot"]))?;
    let (reference, ref_bytes) = image(
        &mk,
        &kernel,
        &dir,
        "nbd-client",
        &common(&["net", "nbdclient"]),
    )?;
    let img = dir.join("root.ext4");
    RootFs::new(dir.join("root"))?
        .with_probe()
        .build_ext4(&img, 64, None)?;
    let server = qemu_nbd(&img, None, false)?;
    let port = server.port;
    let mut stacks = vec![
        Stack {
            name: "nbdroot hook, static ip=",
            image: ours.clone(),
            bytes: ours_bytes,
            append: format!("root=nbd:10.0.2.2:{port} {STATIC_IP} rw"),
            samples: vec![],
        },
        Stack {
            name: "nbdroot hook, DHCP (QEMU's)",
            image: ours,
            bytes: ours_bytes,
            append: format!("root=nbd:10.0.2.2:{port} rw"),
            samples: vec![],
        },
        Stack {
            name: "net hook (static) + nbd-client 3.24 hook, root=/dev/nbd0",
            image: reference,
            bytes: ref_bytes,
            append: format!(
                "root=/dev/nbd0 rootfstype=ext4 nbd_host=10.0.2.2 nbd_port={port} {STATIC_IP} rw"
            ),
            samples: vec![],
        },
    ];
    for round in 1..=rounds {
        let mut line = format!("round {round}/{rounds}:");
        for st in stacks.iter_mut() {
            let up = boot_uptime(&kernel, st)?;
            st.samples.push(up);
            line.push_str(&format!(" {up:.2}"));
        }
        eprintln!("{line}");
    }
    drop(server);

    println!(
        "Guest uptime when the root's init runs, mkinitcpio 41 busybox images (HOOKS=(base udev \
         modconf block … filesystems), zstd), QEMU TCG, 1 vCPU, {} kernel, qemu-nbd on \
         127.0.0.1, {rounds} boots each, alternating:\n",
        kernel.version
    );
    println!("| stack | image bytes | median s | min – max s |");
    println!("|---|---|---|---|");
    for st in &stacks {
        let (min, max) = st.range();
        println!(
            "| {} | {} | {:.2} | {min:.2} – {max:.2} |",
            st.name,
            st.bytes,
            st.median()
        );
    }
    println!(
        "\nnbdroot (static ip=) against nbd-client: {:+.2} s, image {:+} bytes.",
        stacks[0].median() - stacks[2].median(),
        stacks[0].bytes as i64 - stacks[2].bytes as i64
    );
    Ok(())
}
