//! Throughput benchmark: sequential write and read MB/s through an nbd device in the guest,
//! with 1 and 4 connections, for `nbdroot connect` and for Debian's nbd-client 3.24 in the
//! same guest, against one nbdkit memory export on the host. Figures, not pass/fail.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::reference::nbd_client_files;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, nbdkit, nbdroot_initramfs, qemu_nbd, run, RootFs, VmConfig,
};

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
fn script(port: u16, rounds: u32, mib: u32) -> String {
    format!(
        r#"bb=/bin/busybox
cs() {{ read up _ < /proc/uptime; echo ${{up%.*}}${{up#*.}}; }}
detached() {{ i=0; while [ -e /sys/block/nbd1/pid ] && [ $i -lt 100 ]; do $bb sleep 0.05; i=$((i+1)); done; }}
# Warm-up: the memory export allocates on first write; fill it once so no client pays that.
/bin/nbdroot connect 10.0.2.2:{port} /dev/nbd1 >/dev/null && $bb dd if=/dev/zero of=/dev/nbd1 bs=1M count={mib} oflag=direct 2>/dev/null
/bin/nbdroot disconnect /dev/nbd1; detached
for round in $($bb seq {rounds}); do
  # Alternate which client goes first, so neither always runs on a fresher guest.
  if [ $((round % 2)) = 1 ]; then order="nbdroot nbd-client"; else order="nbd-client nbdroot"; fi
  for client in $order; do
    for conns in 1 4; do
      if [ $client = nbdroot ]; then
        /bin/nbdroot connect 10.0.2.2:{port} /dev/nbd1 -C $conns >/dev/null || echo "NBDIO-FAIL connect $client $conns"
      else
        /sbin/nbd-client 10.0.2.2 {port} /dev/nbd1 -connections $conns >/dev/null 2>&1 || echo "NBDIO-FAIL connect $client $conns"
      fi
      q=/sys/block/nbd1/queue
      echo "NBDIO-DEVICE client=$client conns=$conns logical_block_size=$($bb cat $q/logical_block_size) max_sectors_kb=$($bb cat $q/max_sectors_kb) rotational=$($bb cat $q/rotational)"
      t0=$(cs)
      $bb dd if=/dev/zero of=/dev/nbd1 bs=1M count={mib} oflag=direct 2>/dev/null || echo "NBDIO-FAIL write $client $conns"
      t1=$(cs)
      $bb dd if=/dev/nbd1 of=/dev/null bs=1M count={mib} iflag=direct 2>/dev/null || echo "NBDIO-FAIL read $client $conns"
      t2=$(cs)
      echo "NBDIO client=$client conns=$conns write_cs=$((t1-t0)) read_cs=$((t2-t1))"
      if [ $client = nbdroot ]; then /bin/nbdroot disconnect /dev/nbd1; else /sbin/nbd-client -d /dev/nbd1 >/dev/null 2>&1; fi
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
    let initrd = dir.join("nbdroot.img");
    nbdroot_initramfs(&kernel, &initrd)?;

    let data = nbdkit(&["memory", &format!("{}M", mib + 16)])?;
    let mut root = RootFs::new(dir.join("root"))?;
    root.add_nbdroot()?;
    for (in_image, host) in nbd_client_files()? {
        let bytes = std::fs::read(&host).step(|| format!("read {}", host.display()))?;
        root.add_file(in_image, bytes, 0o755)?;
    }
    root.add_probe_step(&script(data.port, rounds, mib));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 96, None)?;
    let server = qemu_nbd(&img, None, false)?;

    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd);
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
    for line in out.lines_with("NBDIO-DEVICE ").iter().take(4) {
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
    for conns in [1, 4] {
        if let (Some(a), Some(b)) = (
            medians.get(&("nbdroot".to_string(), conns)),
            medians.get(&("nbd-client".to_string(), conns)),
        ) {
            println!(
                "{conns} connection(s): nbdroot / nbd-client = {:.2}× write, {:.2}× read",
                a.0 / b.0,
                a.1 / b.1
            );
        }
    }
    Ok(())
}
