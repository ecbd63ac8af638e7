//! Reconnect benchmark: the server restarts (3 s down) while the guest writes and fsyncs
//! files on its NBD root; nbdroot's supervisor against Debian's nbd-client 3.24 with
//! `-persist`, in the same run. Prints what the guest saw. Figures, not pass/fail.

use std::process::ExitCode;
use std::time::Duration;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::reference::nbd_client_initramfs;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, nbdroot_initramfs, qemu_nbd, run, scenario, RootFs, VmConfig,
    VmOutcome,
};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: bench-reconnect");
        return ExitCode::from(2);
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-reconnect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn field<'a>(out: &'a VmOutcome, key: &str) -> &'a str {
    let prefix = format!("NBDT {key}=");
    out.log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("?")
        .trim()
}

fn bench() -> nbdroot_qemu::Result<()> {
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("bench-reconnect");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let ours = dir.join("nbdroot.img");
    nbdroot_initramfs(&kernel, &ours)?;
    let reference = dir.join("reference.img");
    nbd_client_initramfs(&kernel, &reference)?;
    let down = Duration::from_secs(3);

    println!("Server restart while the guest writes and fsyncs {} files of 128 KiB on its NBD root (server down {} s; QEMU TCG, {}):\n", scenario::FILES, down.as_secs(), kernel.version);
    println!("| stack | failed writes | longest write s | files readable after | supervisor |");
    println!("|---|---|---|---|---|");
    for (name, initrd, append) in [
        (
            "nbdroot (supervisor, RECONFIGURE)",
            &ours,
            "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw",
        ),
        (
            "busybox + nbd-client 3.24 -persist",
            &reference,
            "nbdrefopts=-persist",
        ),
    ] {
        let mut root = RootFs::new(dir.join("root"))?;
        root.add_nbdroot()?;
        root.add_probe_step(&format!(
            "{}\n/bin/nbdroot status 2>/dev/null | while read -r l; do echo \"NBDT-STATUS $l\"; done",
            scenario::writer_script()
        ));
        let img = dir.join("root.ext4");
        root.build_ext4(&img, 64, None)?;
        let mut server = qemu_nbd(&img, None, false)?;
        let mut cfg = VmConfig::new(&kernel.vmlinuz, initrd);
        // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
        cfg.lean = false;
        cfg.append = if initrd == &reference {
            format!("root=nbd:unused nbdref=10.0.2.2:{} {append}", server.port)
        } else {
            format!("root=nbd:10.0.2.2:{} {append}", server.port)
        };
        cfg.deadline = Duration::from_secs(300);
        let log = dir.join(format!(
            "{}.console.log",
            if initrd == &ours {
                "nbdroot"
            } else {
                "reference"
            }
        ));
        let _ = std::fs::remove_file(&log);
        cfg.log_path = Some(log.clone());
        let out = std::thread::scope(|s| {
            let srv = &mut server;
            let log = log.clone();
            s.spawn(move || scenario::restart_server(&log, srv, down));
            run(&cfg)
        })?;
        let sums = out.lines_with("NBDT-SUM ").len();
        let longest = field(&out, "max_write_cs")
            .parse::<f64>()
            .map(|c| format!("{:.2}", c / 100.0))
            .unwrap_or("?".into());
        let status: Vec<&str> = out.lines_with("NBDT-STATUS ");
        let sup = status
            .iter()
            .filter(|l| {
                l.trim().starts_with("reconnects=")
                    || l.trim().starts_with("rss_kib=")
                    || l.trim().starts_with("last_stall_ms=")
            })
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(", ");
        let ended = if out.timed_out {
            " (guest hung; killed)"
        } else {
            ""
        };
        println!(
            "| {name} | {} of {} | {longest} | {sums} of {} | {}{ended} |",
            field(&out, "errors"),
            scenario::FILES,
            scenario::FILES,
            if sup.is_empty() { "none" } else { &sup }
        );
    }
    Ok(())
}
