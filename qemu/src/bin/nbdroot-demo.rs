//! Boots a diskless VM from NBD: Debian's cloud kernel, an initramfs made by
//! `nbdroot mkinitramfs`, and a root image served by qemu-nbd on 127.0.0.1.

use std::process::ExitCode;

use nbdroot_qemu::error::Context;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, debugfs_cat, nbdroot_initramfs, qemu_nbd, run, RootFs, VmConfig,
};

const USAGE: &str = "usage: nbdroot-demo [--append \"<extra kernel arguments>\"]

Builds the pieces (cached under target/vm-cache), serves a 64 MiB ext4 root image with
qemu-nbd on 127.0.0.1, boots it in QEMU with root=nbd:10.0.2.2:<port> and a static ip=,
prints the guest's console, and shows the file the guest wrote to the image.";

fn say(msg: &str) {
    println!("\x1b[1mdemo:\x1b[0m {msg}");
}

fn main() -> ExitCode {
    let mut extra = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        match (a.as_str(), args.next()) {
            ("--append", Some(v)) => extra = v,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match demo(&extra) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(extra: &str) -> nbdroot_qemu::Result<bool> {
    say("getting Debian's cloud kernel (downloaded once, then cached)");
    let kernel = debian_cloud_kernel()?;
    let dir = cache_dir()?.join("demo");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let initrd = dir.join("initrd.img");
    say(&format!(
        "making the initramfs with nbdroot mkinitramfs for {}",
        kernel.version
    ));
    nbdroot_initramfs(&kernel, &initrd)?;
    let size = std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0);
    say(&format!("{} is {size} bytes", initrd.display()));

    say("making the root filesystem image (busybox and a probe /sbin/init)");
    let img = dir.join("root.ext4");
    RootFs::new(dir.join("root"))?
        .with_probe()
        .build_ext4(&img, 64, None)?;

    let server = qemu_nbd(&img, None, false)?;
    say(&format!(
        "serving {} with qemu-nbd on 127.0.0.1:{}",
        img.display(),
        server.port
    ));
    let append = format!(
        "root=nbd:10.0.2.2:{} ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw {extra}",
        server.port
    );
    say(&format!("booting QEMU (TCG) with: {append}"));
    println!();
    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    cfg.append = append;
    cfg.echo = true;
    let out = run(&cfg)?;
    drop(server);
    println!();
    if out.timed_out || !out.contains("NBDROOT-PROBE-DONE") {
        say(&format!("the guest did not reach its root:\n{out}"));
        return Ok(false);
    }
    let uptime = out.lines_with("NBDROOT-PROBE pid=1 uptime=");
    say(&format!(
        "the root's /sbin/init ran as PID 1 at {} s of guest uptime, with / on /dev/nbd0",
        uptime.first().unwrap_or(&"?")
    ));
    let written = debugfs_cat(&img, "/probe-result")?;
    say("what the guest wrote to /probe-result, read back from the image on the server:");
    print!("{}", String::from_utf8_lossy(&written));
    Ok(true)
}
