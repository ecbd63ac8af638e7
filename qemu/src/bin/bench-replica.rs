//! Read throughput through replicas: in one guest, `dd` of a read-only export through one
//! server (2 connections to it) against the same export on two replica servers (one
//! connection to each, `nbdroot connect --replica`), in a test network namespace with each
//! server an nbdkit on its own address. Figures, not pass/fail.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::netns::NetNs;
use nbdroot_qemu::ns_server::NsServer;
use nbdroot_qemu::{boot_kit, cache_dir, run, RootFs, VmConfig};

const USAGE: &str = "usage: bench-replica [--rounds N] [--mib M]   (defaults: 3 rounds of 64 MiB)";
const A: &str = "10.77.0.1";
const B: &str = "10.77.0.2";

fn main() -> ExitCode {
    let (mut rounds, mut mib) = (3u32, 64u32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            ("--mib", Some(n)) if n > 0 => mib = n,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match bench(rounds, mib) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-replica: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The guest's side: per round (setups in alternating order), attach /dev/nbd1, read it
/// all with O_DIRECT, time it with /proc/uptime (centiseconds), detach.
fn script(rounds: u32, mib: u32) -> String {
    format!(
        r#"bb=/bin/busybox
cs() {{ read up _ < /proc/uptime; echo ${{up%.*}}${{up#*.}}; }}
detached() {{ i=0; while [ -e /sys/block/nbd1/pid ] && [ $i -lt 100 ]; do $bb sleep 0.05; i=$((i+1)); done; }}
for round in $($bb seq {rounds}); do
  if [ $((round % 2)) = 1 ]; then order="one two"; else order="two one"; fi
  for setup in $order; do
    if [ $setup = one ]; then
      /bin/nbdroot connect {A}:10810 /dev/nbd1 -C 2 -R >/dev/null 2>&1 || echo "NBDIO-FAIL connect $setup"
    else
      /bin/nbdroot connect {A}:10810 /dev/nbd1 -C 2 -R --replica {B}:10810 >/dev/null 2>&1 || echo "NBDIO-FAIL connect $setup"
    fi
    t0=$(cs)
    $bb dd if=/dev/nbd1 of=/dev/null bs=1M count={mib} iflag=direct 2>/dev/null || echo "NBDIO-FAIL read $setup"
    t1=$(cs)
    echo "NBDIO setup=$setup read_cs=$((t1-t0))"
    /bin/nbdroot disconnect /dev/nbd1; detached
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

fn bench(rounds: u32, mib: u32) -> nbdroot_qemu::Result<()> {
    let kit = boot_kit();
    let dir = cache_dir()?.join("bench-replica");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    // The data: noise, so nothing compresses or is skipped as zeroes.
    let data = dir.join("data.img");
    let mut bytes = vec![0u8; (mib as usize) << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&data, &bytes).step(|| format!("write {}", data.display()))?;

    let mut root = RootFs::new(dir.join("root"))?;
    root.add_nbdroot()?;
    root.add_probe_step(&script(rounds, mib));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 32, None)?;

    let ns = NetNs::new("bench-repl")?;
    ns.add_address(B)?;
    let (img_s, data_s) = (img.display().to_string(), data.display().to_string());
    let _root = NsServer::nbdkit(&ns, A, 10809, &["--readonly", "file", &img_s])?;
    let _a = NsServer::nbdkit(&ns, A, 10810, &["--readonly", "file", &data_s])?;
    let _b = NsServer::nbdkit(&ns, B, 10810, &["--readonly", "file", &data_s])?;

    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.netns = Some(ns.name.clone());
    cfg.append = format!("ip=10.77.0.50::{A}:255.255.255.0::eth0:off root=nbd:{A}:10809");
    cfg.deadline = Duration::from_secs(900);
    let out = run(&cfg)?;
    if out.timed_out || !out.contains("NBDROOT-PROBE-DONE") || out.contains("NBDIO-FAIL") {
        return Err(nbdroot_qemu::Error::unexpected(
            "run the guest's benchmark",
            out.to_string(),
        ));
    }
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in out.lines_with("NBDIO ") {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        let cs: f64 = field("read_cs=").parse().unwrap_or(f64::NAN);
        samples
            .entry(field("setup="))
            .or_default()
            .push(f64::from(mib) * 1.048576 / (cs / 100.0));
    }
    println!(
        "Sequential read through /dev/nbd1 in the guest (QEMU TCG, 1 vCPU, {}; {mib} MiB, \
         O_DIRECT, 1 MiB blocks; nbdkit --readonly file, one per address in a network \
         namespace; median of {rounds}):\n",
        kit.kernel.version
    );
    println!("| servers | connections | read MB/s |");
    println!("|---|---|---|");
    let one = samples.get("one").map(|v| median(v.clone()));
    let two = samples.get("two").map(|v| median(v.clone()));
    if let Some(r) = one {
        println!("| one server | 2 (both to it) | {r:.1} |");
    }
    if let Some(r) = two {
        println!("| two replicas | 2 (one to each) | {r:.1} |");
    }
    for (setup, v) in &samples {
        let v: Vec<String> = v.iter().map(|r| format!("{r:.1}")).collect();
        println!("\n{setup}: every round {}", v.join(", "));
    }
    if let (Some(a), Some(b)) = (one, two) {
        println!("\ntwo replicas / one server = {:.2}× read", b / a);
    }
    Ok(())
}
