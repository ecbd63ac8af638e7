//! Throughput benchmark: sequential write and read MB/s through an nbd device in the guest,
//! with 1 and 4 connections, for `nbdroot connect` and for Debian's nbd-client 3.24 in the
//! same guest, against one nbdkit memory export on the host; and the same over TLS against a
//! second export served with `--tls=require` (nbdroot: kernel TLS, no process in the data
//! path; nbd-client: its GnuTLS proxy process). Figures, not pass/fail.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::reference::nbd_client_files;
use nbdroot_qemu::tls::{pki, tls_initramfs};
use nbdroot_qemu::{cache_dir, debian_cloud_kernel, nbdkit, qemu_nbd, run, RootFs, VmConfig};

const USAGE: &str =
    "usage: bench-io [--rounds N] [--mib M] [--cpus C]   (defaults: 3 rounds of 128 MiB, 1 vCPU)";

fn main() -> ExitCode {
    let (mut rounds, mut mib, mut cpus) = (3u32, 128u32, 1u32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            ("--mib", Some(n)) if n > 0 => mib = n,
            ("--cpus", Some(n)) if (1..=8).contains(&n) => cpus = n,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match bench(rounds, mib, cpus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-io: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The guest's side: after one warm-up pass, for each round (clients in alternating order)
/// and connection count, attach the export to
/// /dev/nbd1, time a direct write then a direct read of the whole size with /proc/uptime
/// (centiseconds), detach, and print one `NBDIO` line.
fn script(port: u16, tls_port: u16, rounds: u32, mib: u32) -> String {
    format!(
        r#"bb=/bin/busybox
cs() {{ read up _ < /proc/uptime; echo ${{up%.*}}${{up#*.}}; }}
detached() {{ i=0; while [ -e /sys/block/nbd1/pid ] && [ $i -lt 100 ]; do $bb sleep 0.05; i=$((i+1)); done; }}
# Warm-up: the memory export allocates on first write; fill it once so no client pays that.
/bin/nbdroot connect 10.0.2.2:{port} /dev/nbd1 >/dev/null && $bb dd if=/dev/zero of=/dev/nbd1 bs=1M count={mib} oflag=direct 2>/dev/null
/bin/nbdroot disconnect /dev/nbd1; detached
tls="--tls --tls-ca /ca.pem"
/bin/nbdroot connect $tls 10.0.2.2:{tls_port} /dev/nbd1 >/dev/null && $bb dd if=/dev/zero of=/dev/nbd1 bs=1M count={mib} oflag=direct 2>/dev/null
/bin/nbdroot disconnect /dev/nbd1; detached
for round in $($bb seq {rounds}); do
  # Alternate which client goes first, so neither always runs on a fresher guest.
  if [ $((round % 2)) = 1 ]; then order="nbdroot nbd-client nbdroot-tls nbd-client-tls"; else order="nbd-client-tls nbdroot-tls nbd-client nbdroot"; fi
  for client in $order; do
    for conns in 1 4; do
      case $client in
        nbdroot) /bin/nbdroot connect 10.0.2.2:{port} /dev/nbd1 -C $conns >/dev/null ;;
        nbdroot-tls) /bin/nbdroot connect $tls 10.0.2.2:{tls_port} /dev/nbd1 -C $conns >/dev/null ;;
        nbd-client) /sbin/nbd-client 10.0.2.2 {port} /dev/nbd1 -connections $conns >/dev/null 2>&1 ;;
        nbd-client-tls) /sbin/nbd-client 10.0.2.2 {tls_port} /dev/nbd1 -connections $conns -x -A /ca.pem -H 10.0.2.2 >/dev/null 2>&1 ;;
      esac || echo "NBDIO-FAIL connect $client $conns"
      q=/sys/block/nbd1/queue
      echo "NBDIO-DEVICE client=$client conns=$conns logical_block_size=$($bb cat $q/logical_block_size) max_sectors_kb=$($bb cat $q/max_sectors_kb) rotational=$($bb cat $q/rotational)"
      t0=$(cs)
      $bb dd if=/dev/zero of=/dev/nbd1 bs=1M count={mib} oflag=direct 2>/dev/null || echo "NBDIO-FAIL write $client $conns"
      t1=$(cs)
      $bb dd if=/dev/nbd1 of=/dev/null bs=1M count={mib} iflag=direct 2>/dev/null || echo "NBDIO-FAIL read $client $conns"
      t2=$(cs)
      echo "NBDIO client=$client conns=$conns write_cs=$((t1-t0)) read_cs=$((t2-t1))"
      case $client in nbdroot*) /bin/nbdroot disconnect /dev/nbd1 ;; *) /sbin/nbd-client -d /dev/nbd1 >/dev/null 2>&1 ;; esac
      detached
    done
  done
done"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench(rounds: u32, mib: u32, cpus: u32) -> nbdroot_qemu::Result<()> {
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("bench-io");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    // Kernel TLS modules in the image, loaded by /init; the CA in the root.
    let initrd = dir.join("nbdroot.img");
    tls_initramfs(&kernel, &initrd, None)?;
    let pki = pki(&dir)?;

    let size = format!("{}M", mib + 16);
    let data = nbdkit(&["memory", &size])?;
    let certs = format!("--tls-certificates={}", pki.display());
    let tls_data = nbdkit(&["--tls=require", &certs, "memory", &size])?;
    let mut root = RootFs::new(dir.join("root"))?;
    root.add_nbdroot()?;
    let ca = std::fs::read(pki.join("ca-cert.pem")).step(|| "read the CA".to_string())?;
    root.add_file("ca.pem", ca, 0o644)?;
    for (in_image, host) in nbd_client_files()? {
        let bytes = std::fs::read(&host).step(|| format!("read {}", host.display()))?;
        root.add_file(in_image, bytes, 0o755)?;
    }
    root.add_probe_step(&script(data.port, tls_data.port, rounds, mib));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 96, None)?;
    let server = qemu_nbd(&img, None, false)?;

    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.append = format!(
        "root=nbd:10.0.2.2:{} ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw",
        server.port
    );
    cfg.memory_mib = 512;
    cfg.cpus = cpus;
    cfg.deadline = Duration::from_secs(900);
    let out = run(&cfg)?;
    if out.timed_out || !out.contains("NBDROOT-PROBE-DONE") || out.contains("NBDIO-FAIL") {
        return Err(nbdroot_qemu::Error::unexpected(
            "run the guest's benchmark",
            out.to_string(),
        ));
    }

    // (client, conns) → write and read MB/s samples.
    let mut samples: BTreeMap<(String, u32), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for line in out.lines_with("NBDIO ") {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        let rate = |cs: String| {
            f64::from(mib) * 1.048576 / (cs.parse::<f64>().unwrap_or(f64::NAN) / 100.0)
        };
        let e = samples
            .entry((field("client="), field("conns=").parse().unwrap_or(0)))
            .or_default();
        e.0.push(rate(field("write_cs=")));
        e.1.push(rate(field("read_cs=")));
    }
    println!(
        "Sequential I/O through /dev/nbd1 in the guest (QEMU TCG, {cpus} vCPU, {}; {mib} MiB with O_DIRECT and 1 MiB blocks; nbdkit memory on 127.0.0.1; median of {rounds}):\n",
        kernel.version
    );
    for line in out.lines_with("NBDIO-DEVICE ").iter().take(8) {
        println!("- {line}");
    }
    println!();
    println!("| client | connections | write MB/s | read MB/s |");
    println!("|---|---|---|---|");
    let mut medians = BTreeMap::new();
    for ((client, conns), (w, r)) in &samples {
        let (w, r) = (median(w.clone()), median(r.clone()));
        medians.insert((client.clone(), *conns), (w, r));
        println!("| {client} | {conns} | {w:.1} | {r:.1} |");
    }
    println!();
    for (a, b) in [
        ("nbdroot", "nbd-client"),
        ("nbdroot-tls", "nbdroot"),
        ("nbdroot-tls", "nbd-client-tls"),
    ] {
        for conns in [1, 4] {
            if let (Some(x), Some(y)) = (
                medians.get(&(a.to_string(), conns)),
                medians.get(&(b.to_string(), conns)),
            ) {
                println!(
                    "{conns} connection(s): {a} / {b} = {:.2}× write, {:.2}× read",
                    x.0 / y.0,
                    x.1 / y.1
                );
            }
        }
    }
    Ok(())
}
