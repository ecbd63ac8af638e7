//! Debian benchmark: the same Debian 12 root (debootstrap, Debian's cloud kernel package,
//! initramfs-tools) booted through nbd-client's own initramfs-tools hook (nbd-client 3.24
//! installed in a copy) and through nbdroot's (the package installed in another copy), with
//! the same kernel, the same cmdline in Debian's form (`nbdroot=<server>,root,nbd0
//! root=/dev/nbd0`, static ip=), the same nbd-server, alternating in one run. Figures from
//! systemd's own clock (what `systemd-analyze` reports): guest uptime when the root's init
//! starts and when multi-user.target is reached; and the initramfs bytes. Prints a Markdown
//! table for BENCHMARKS.md. Figures, not pass/fail.

use std::process::ExitCode;

use nbdroot_qemu::debian::build_deb;
use nbdroot_qemu::debian_boot::{prepare, DebianBoot, Extras, NbdPackage};
use nbdroot_qemu::debian_probe::{add_probe, milestones, value, Milestones};
use nbdroot_qemu::error::Context;
use nbdroot_qemu::stats::Stats;
use nbdroot_qemu::{cache_dir, nbd_server, nbdroot_binary, run, Error};

const USAGE: &str = "usage: bench-debian [--rounds N]
  --rounds N   boots per stack (default 3)
needs debootstrap, nbd-server and Debian's mirror (the first run installs packages in a chroot)";

/// Both stacks boot with Debian's own nbd-client form.
const CMDLINE: &str = "nbdroot=10.0.2.100,root,nbd0 root=/dev/nbd0";

fn main() -> ExitCode {
    let mut rounds = 3usize;
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
            eprintln!("bench-debian: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Stack {
    name: &'static str,
    boot: DebianBoot,
    bytes: u64,
    root_init: Stats,
    multi_user: Stats,
}

/// One boot of a fresh copy of the stack's image, until the probe's report.
fn boot_once(st: &Stack, dir: &std::path::Path) -> nbdroot_qemu::Result<Milestones> {
    let img = st.boot.copy_image(&dir.join("root.ext4"))?;
    let server = nbd_server(&[("root", &img)])?;
    let mut cfg = st.boot.vm(CMDLINE, server.port);
    // A full guest: the CPU's crypto features and the kernel's self-tests, as on hardware.
    cfg.lean = false;
    // The report is all the benchmark needs; the shutdown is the flagship test's.
    cfg.stop_on = vec!["NBDT-DEB DONE".into()];
    let out = run(&cfg)?;
    drop(server);
    let state = value(&out, "state")?;
    if state != "running" {
        return Err(Error::unexpected(
            format!("boot {}", st.name),
            format!("systemd's state is {state:?}, not running:\n{out}"),
        ));
    }
    milestones(&out)
}

fn bench(rounds: usize) -> nbdroot_qemu::Result<()> {
    let dir = cache_dir()?.join("bench-debian");
    std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    let deb = build_deb(&nbdroot_binary()?, &dir)?;
    let mut extras = Extras::default();
    add_probe(&mut extras, false);
    let mut stacks = Vec::new();
    for (name, package) in [
        ("nbd-client 3.24 hook (Debian's)", NbdPackage::NbdClient),
        ("nbdroot hook", NbdPackage::Nbdroot(deb)),
    ] {
        eprintln!("preparing the {name} system (cached after the first run)");
        let boot = prepare(&package, &extras)?;
        stacks.push(Stack {
            name,
            bytes: boot.initrd_bytes()?,
            boot,
            root_init: Stats::default(),
            multi_user: Stats::default(),
        });
    }
    let version = stacks[0].boot.kernel_version.clone();
    for round in 1..=rounds {
        let mut line = format!("round {round}/{rounds}:");
        for st in stacks.iter_mut() {
            let m = boot_once(st, &dir)?;
            st.root_init.samples.push(m.root_init_s);
            st.multi_user.samples.push(m.multi_user_s);
            line.push_str(&format!(
                " {} {:.2}/{:.2}",
                st.name, m.root_init_s, m.multi_user_s
            ));
        }
        eprintln!("{line}");
    }

    println!(
        "Debian 12 root (debootstrap + linux-image {version} + initramfs-tools, MODULES=most, \
         gzip), `{CMDLINE}` with a static ip=, nbd-server 3.24 on 127.0.0.1, QEMU TCG, 1 vCPU, \
         1 GiB, {rounds} boots each, alternating; uptime from systemd's monotonic timestamps \
         (UserspaceTimestamp, multi-user.target's ActiveEnterTimestamp):\n"
    );
    println!("| stack | initramfs bytes | root's init, median s (min – max) | multi-user.target, median s (min – max) |");
    println!("|---|---|---|---|");
    for st in &stacks {
        let (a, b) = st.root_init.range();
        let (c, d) = st.multi_user.range();
        println!(
            "| {} | {} | {:.2} ({a:.2} – {b:.2}) | {:.2} ({c:.2} – {d:.2}) |",
            st.name,
            st.bytes,
            st.root_init.median(),
            st.multi_user.median()
        );
    }
    let (r, o) = (&stacks[0], &stacks[1]);
    println!(
        "\nnbdroot / nbd-client: root's init {:.2}×, multi-user.target {:.2}×, initramfs {:.3}×.",
        o.root_init.median() / r.root_init.median(),
        o.multi_user.median() / r.multi_user.median(),
        o.bytes as f64 / r.bytes as f64
    );
    Ok(())
}
