//! dracut benchmark: guest uptime when the root's init runs, nbdroot's dracut module against
//! dracut's own `nbd` module with Debian's nbd-client 3.24 (and dracut's network-legacy with
//! dhclient, the backend that calls its netroot handler on 059), and nbdroot as that netroot
//! handler (`nbdroot_network=dracut`), in each initrd kind, same dracut, kernel, server and
//! root, booted alternately in one run; and the floor they share: an image of the same base
//! with neither NBD module, booting a copy of the same root from a local virtio disk. Prints a
//! Markdown table for BENCHMARKS.md, and where the time goes: the kernel's timestamps (dmesg,
//! read by the root's init) of the initramfs's start, the root device's arrival and the root's
//! mount. Figures, not pass/fail.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::dracut::{build_image, Dracut, ImageSpec, NbdModule, Release};
use nbdroot_qemu::error::Context;
use nbdroot_qemu::stats::Stats;
use nbdroot_qemu::{cache_dir, debian_cloud_kernel, qemu_nbd, run, Kernel, RootFs, VmConfig};

const USAGE: &str =
    "usage: bench-dracut [--rounds N] [--cpus N] [--release 059|ng111]... [--append ARGS]
  --rounds N    boots per image (default 5)
  --cpus N      the guests' vCPUs (default 1)
  --release R   which dracut (repeatable; default both)
  --append ARGS kernel arguments added to every boot (e.g. cryptomgr.notests=1)";

fn main() -> ExitCode {
    let mut rounds = 5usize;
    let mut cpus = 1u32;
    let mut releases = Vec::new();
    let mut extra = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().as_deref()) {
            ("--rounds", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                rounds = n.parse().unwrap_or(5)
            }
            ("--cpus", Some(n)) if n.parse::<u32>().is_ok_and(|n| n > 0) => {
                cpus = n.parse().unwrap_or(1)
            }
            ("--release", Some("059")) => releases.push(Release::Debian059),
            ("--release", Some("ng111")) => releases.push(Release::Ng111),
            ("--append", Some(a)) => {
                extra.push(' ');
                extra.push_str(a);
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if releases.is_empty() {
        releases = vec![Release::Debian059, Release::Ng111];
    }
    match bench(rounds, cpus, &releases, &extra) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-dracut: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One image and its samples.
struct Row {
    name: String,
    initrd: PathBuf,
    bytes: u64,
    /// Its kernel arguments.
    append: String,
    /// The floor's local disk (it boots that, not the NBD root).
    disk: Option<PathBuf>,
    stats: Stats,
    /// Per milestone of [`MILESTONES`], its kernel timestamps.
    marks: Vec<Stats>,
}

/// Kernel messages every image causes, in boot order, each with the NBD root's and the local
/// disk's form: the initramfs's /init starts, the root device is there (nbd0 gets its size
/// when attached; virtio_blk reports vda), the root filesystem is mounted.
const MILESTONES: &[(&str, [&str; 2])] = &[
    ("/init starts", ["Run /init as init process"; 2]),
    (
        "root device",
        [
            "nbd0: detected capacity change",
            "virtio_blk virtio1: [vda]",
        ],
    ),
    (
        "root mounted",
        ["EXT4-fs (nbd0): mounted", "EXT4-fs (vda): mounted"],
    ),
];

/// The floor's kernel arguments: the NBD boots' without the NBD root and its network.
const LOCAL_APPEND: &str = "root=/dev/vda rw rd.shell=0 rd.retry=60 systemd.show_status=0";

/// The probe step printing the kernel's log, for the milestones.
const DMESG_STEP: &str = "$bb dmesg | while read -r l; do echo \"NBDT-KMSG $l\"; done";

/// The probe's uptime (seconds) and the milestones' timestamps, or an error with the console.
fn boot_uptime(
    kernel: &Kernel,
    initrd: &Path,
    append: &str,
    cpus: u32,
    disk: Option<&Path>,
) -> nbdroot_qemu::Result<(f64, Vec<Option<f64>>)> {
    let mut cfg = VmConfig::new(&kernel.vmlinuz, initrd);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.cpus = cpus;
    cfg.append = append.to_string();
    cfg.memory_mib = 512;
    cfg.deadline = Duration::from_secs(240);
    if let Some(disk) = disk {
        // snapshot=on: every boot starts from the same bytes, as the NBD boots' root does.
        cfg.extra_args.extend([
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=none,id=d0,snapshot=on",
                disk.display()
            ),
            "-device".to_string(),
            "virtio-blk-pci,drive=d0".to_string(),
        ]);
    }
    let form = usize::from(disk.is_some());
    let out = run(&cfg)?;
    if out.contains("NBDROOT-PROBE-REMOUNT-FAILED") {
        return Err(nbdroot_qemu::Error::unexpected(
            "leave the probe root clean (remount read-only)",
            out.tail(30),
        ));
    }
    let up = out.uptime_after("NBDROOT-PROBE pid=1 uptime=")?;
    let kmsg = out.lines_with("NBDT-KMSG ");
    let marks = MILESTONES
        .iter()
        .map(|(_, needles)| {
            kmsg.iter()
                .find(|l| l.contains(needles[form]))
                .and_then(|l| timestamp(l))
        })
        .collect();
    Ok((up, marks))
}

/// The seconds of a dmesg line's `[   12.345678]`.
fn timestamp(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

fn bench(rounds: usize, cpus: u32, releases: &[Release], extra: &str) -> nbdroot_qemu::Result<()> {
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("bench-dracut");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let img = dir.join("root.ext4");
    let mut root = RootFs::new(dir.join("root"))?;
    root.add_file("etc/os-release", "ID=nbdroot-probe\n", 0o644)?;
    // Left clean at each poweroff, as a real shutdown leaves it: no journal replay at the mount.
    root.add_probe_step(DMESG_STEP)
        .clean_poweroff()
        .build_ext4(&img, 64, None)?;
    // The floor's disk: a copy, since qemu-nbd holds the image.
    let local = dir.join("root-local.ext4");
    std::fs::copy(&img, &local)
        .step(|| format!("copy {} to {}", img.display(), local.display()))?;
    let server = qemu_nbd(&img, None, false)?;
    let append = format!(
        "root=nbd:10.0.2.2:{} ip=dhcp rw rd.shell=0 rd.retry=60 systemd.show_status=0{extra}",
        server.port
    );

    let mut rows = Vec::new();
    for &release in releases {
        let dracut = Dracut::get(release)?;
        for systemd in [false, true] {
            let kind = if systemd { "systemd" } else { "shell" };
            let mut handler = ImageSpec::nbdroot(systemd)?;
            handler.extra_modules.push("network-legacy".into());
            handler.conf.push("nbdroot_network=dracut".into());
            let specs = [
                (
                    "nbdroot",
                    "nbdroot's module (its own DHCP)",
                    ImageSpec::nbdroot(systemd)?,
                ),
                (
                    "stock",
                    "dracut's nbd + nbd-client 3.24 + network-legacy (dhclient)",
                    ImageSpec {
                        nbd: NbdModule::Stock,
                        systemd,
                        extra_modules: vec!["network-legacy".into()],
                        conf: Vec::new(),
                        compress: true,
                    },
                ),
                (
                    "handler",
                    "nbdroot as netroot handler of network-legacy (dhclient)",
                    handler,
                ),
                (
                    "floor",
                    "floor: neither NBD module, the same root on a local virtio disk",
                    // The NIC drivers too: the coldplug loads the same modules as in the others.
                    ImageSpec {
                        nbd: NbdModule::Neither,
                        systemd,
                        extra_modules: vec!["kernel-network-modules".into()],
                        conf: Vec::new(),
                        compress: true,
                    },
                ),
            ];
            for (tag, what, mut spec) in specs {
                // Packed as distributions ship them: unpacking is part of a real boot.
                spec.compress = true;
                let initrd = dir.join(format!("{release:?}-{kind}-{tag}.img"));
                let bytes = build_image(&dracut, &kernel, &spec, &initrd)?;
                rows.push(Row {
                    name: format!("{release}, {kind} initrd: {what}"),
                    initrd,
                    bytes,
                    append: if tag == "floor" {
                        format!("{LOCAL_APPEND}{extra}")
                    } else {
                        append.clone()
                    },
                    disk: (tag == "floor").then(|| local.clone()),
                    stats: Stats::default(),
                    marks: vec![Stats::default(); MILESTONES.len()],
                });
            }
        }
    }
    for round in 1..=rounds {
        let mut line = format!("round {round}/{rounds}:");
        for row in rows.iter_mut() {
            let (up, marks) =
                boot_uptime(&kernel, &row.initrd, &row.append, cpus, row.disk.as_deref())?;
            row.stats.samples.push(up);
            for (stats, mark) in row.marks.iter_mut().zip(marks) {
                if let Some(t) = mark {
                    stats.samples.push(t);
                }
            }
            line.push_str(&format!(" {up:.2}"));
        }
        eprintln!("{line}");
    }

    println!(
        "Guest uptime when the root's init runs (QEMU TCG, {cpus} vCPU, {} kernel, qemu-nbd on 127.0.0.1, `{append}`; the floor `{LOCAL_APPEND}{extra}`; {rounds} boots each, alternating):\n",
        kernel.version
    );
    println!(
        "| image | initramfs bytes | median s | min – max s | / stock | over the floor s | / stock's over the floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Rows come in fours per dracut and initrd kind: nbdroot, stock, handler, floor.
    for group in rows.chunks(4) {
        let stock = group[1].stats.median();
        let floor = group[3].stats.median();
        for row in group {
            let (min, max) = row.stats.range();
            let median = row.stats.median();
            let (over, over_ratio) = if row.disk.is_some() {
                ("—".to_string(), "—".to_string())
            } else {
                (
                    format!("{:+.2}", median - floor),
                    format!("{:.2}×", (median - floor) / (stock - floor)),
                )
            };
            println!(
                "| {} | {} | {median:.2} | {min:.2} – {max:.2} | {:.2}× | {over} | {over_ratio} |",
                row.name,
                row.bytes,
                median / stock
            );
        }
    }
    println!(
        "\nWhere the time goes (medians of the kernel's timestamps, s; each column the time \
         since the one before it):\n"
    );
    let mut head = String::from("| image |");
    let mut rule = String::from("|---|");
    for (name, _) in MILESTONES {
        head.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    println!("{head} root's init |\n{rule}---|");
    for row in &rows {
        let mut line = format!("| {} |", row.name);
        let mut before = 0.0;
        for m in &row.marks {
            let t = m.median();
            line.push_str(&format!(" {:.2} (+{:.2}) |", t, t - before));
            before = t;
        }
        let up = row.stats.median();
        line.push_str(&format!(" {up:.2} (+{:.2}) |", up - before));
        println!("{line}");
    }
    Ok(())
}
