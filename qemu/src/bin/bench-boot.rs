//! Boot-time benchmark: guest uptime when the root's init runs, for nbdroot and for the
//! kernel floor (a busybox /init that powers off at once), booted alternately in one run;
//! and the same root from nbdkit in plain text and over TLS (`--tls=require`, the image from
//! `mkinitramfs --tls-ca …`), so TLS's cost is measured against plain NBD from one server.
//! Prints a Markdown table for BENCHMARKS.md. Figures, not pass/fail.

use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::reference::nbd_client_initramfs;
use nbdroot_qemu::stats::Stats;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, floor_initramfs, nbdkit, nbdroot_binary, nbdroot_initramfs,
    nbdroot_initramfs_with, qemu_nbd, run, Kernel, RootFs, VmConfig,
};

const USAGE: &str = "usage: bench-boot [--rounds N] [--baseline BINARY]
  --rounds N         boots per stack (default 5)
  --baseline BINARY  also boot an initramfs around another static nbdroot build (an older
                     commit's), same command line as the static row";

fn main() -> ExitCode {
    let mut rounds = 5usize;
    let mut baseline = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--rounds", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                rounds = n.parse().unwrap_or(5)
            }
            ("--baseline", Some(b)) => baseline = Some(std::path::PathBuf::from(b)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match bench(rounds, baseline.as_deref()) {
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
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.append = append.to_string();
    cfg.net = !append.is_empty();
    cfg.deadline = Duration::from_secs(120);
    run(&cfg)?.uptime_after(prefix)
}

/// One initramfs and command line to boot, and its samples.
struct Stack {
    name: &'static str,
    initrd: std::path::PathBuf,
    append: String,
    marker: &'static str,
    stats: Stats,
}

impl Stack {
    fn new(
        name: &'static str,
        initrd: &std::path::Path,
        append: String,
        marker: &'static str,
    ) -> Self {
        Stack {
            name,
            initrd: initrd.to_path_buf(),
            append,
            marker,
            stats: Stats { samples: vec![] },
        }
    }
}

fn bench(rounds: usize, baseline: Option<&std::path::Path>) -> nbdroot_qemu::Result<()> {
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
    let port = server.port;
    let floor_stack = Stack::new(
        "kernel floor (busybox /init, powers off at once)",
        &floor,
        String::new(),
        "NBDROOT-FLOOR uptime=",
    );
    let probe = "NBDROOT-PROBE pid=1 uptime=";
    let static_ip =
        format!("root=nbd:10.0.2.2:{port} ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw");
    // nbdkit, plain and TLS, on the same image: the TLS row's only difference is TLS (the
    // handshake, and the tls and ChaCha20-Poly1305 modules /init loads).
    let pki = nbdroot_qemu::tls::pki(&dir)?;
    let tls_initrd = dir.join("nbdroot-tls.img");
    nbdroot_qemu::tls::tls_initramfs(&kernel, &tls_initrd, Some(&pki))?;
    let image = img.display().to_string();
    let plain_kit = nbdkit(&["file", &image])?;
    let certs = format!("--tls-certificates={}", pki.display());
    let tls_kit = nbdkit(&["--tls=require", &certs, "file", &image])?;
    let ip = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
    let mut stacks = vec![
        floor_stack,
        Stack::new("nbdroot, static ip=", &initrd, static_ip.clone(), probe),
        Stack::new(
            "nbdroot, DHCP (QEMU's)",
            &initrd,
            format!("root=nbd:10.0.2.2:{port} ip=dhcp rw"),
            probe,
        ),
        Stack::new(
            "busybox sh + nbd-client 3.24 (netlink), same static address",
            &reference,
            format!("root=nbd:unused nbdref=10.0.2.2:{port}"),
            probe,
        ),
        Stack::new(
            "nbdroot, static ip=, nbdkit in plain text",
            &initrd,
            format!("root=nbd:10.0.2.2:{} {ip} rw", plain_kit.port),
            probe,
        ),
        Stack::new(
            "nbdroot, static ip=, nbdkit over TLS (kernel TLS)",
            &tls_initrd,
            format!("root=nbd:10.0.2.2:{}:::tls {ip} rw", tls_kit.port),
            probe,
        ),
    ];
    if let Some(binary) = baseline {
        let img = dir.join("baseline.img");
        nbdroot_initramfs_with(binary, &kernel, &img)?;
        stacks.push(Stack::new(
            "nbdroot baseline (--baseline), static ip=",
            &img,
            static_ip,
            probe,
        ));
    }
    for round in 1..=rounds {
        let mut line = format!("round {round}/{rounds}:");
        for st in stacks.iter_mut() {
            let up = boot_uptime(&kernel, &st.initrd, &st.append, st.marker)?;
            st.stats.samples.push(up);
            line.push_str(&format!(" {:.2}", up));
        }
        eprintln!("{line}");
    }

    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let binary = size(&nbdroot_binary()?);
    println!(
        "Guest uptime when the root's init runs (QEMU TCG, 1 vCPU, {} kernel, qemu-nbd on 127.0.0.1, {rounds} boots each, alternating):\n",
        kernel.version
    );
    println!("| stack | initramfs bytes | median s | min – max s | over the floor |");
    println!("|---|---|---|---|---|");
    let floor_median = stacks[0].stats.median();
    for st in &stacks {
        let (min, max) = st.stats.range();
        let over = st.stats.median() - floor_median;
        let over = if st.marker.starts_with("NBDROOT-FLOOR") {
            "—".to_string()
        } else {
            format!("+{over:.2} s")
        };
        println!(
            "| {} | {} | {:.2} | {min:.2} – {max:.2} | {over} |",
            st.name,
            size(&st.initrd),
            st.stats.median()
        );
    }
    let over = |i: usize| stacks[i].stats.median() - floor_median;
    println!(
        "\nnbdroot's cost over the floor (static ip=) is {:.2}× the reference stack's ({:+.2} s against {:+.2} s).",
        over(1) / over(3),
        over(1),
        over(3)
    );
    let (plain, tls) = (stacks[4].stats.median(), stacks[5].stats.median());
    println!(
        "\nTLS against plain text, same nbdkit and image: {:+.2} s ({:.2}× the plain boot's cost over the floor).",
        tls - plain,
        over(5) / over(4)
    );
    println!("\nnbdroot static binary: {binary} bytes (stripped, x86_64-unknown-linux-musl)");
    if let Some(b) = baseline {
        println!(
            "baseline binary {}: {} bytes; the static row minus the baseline row: {:+.2} s.",
            b.display(),
            size(b),
            stacks[1].stats.median() - stacks[6].stats.median()
        );
    }
    Ok(())
}
