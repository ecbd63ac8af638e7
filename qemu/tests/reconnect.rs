//! VM tests of the reconnect supervisor: the server is killed and restarted on the same port
//! while the guest writes and fsyncs files on its NBD root.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use nbdroot_qemu::scenario;
use nbdroot_qemu::{
    boot_kit, debugfs_cat, e2fsck_clean, md5_hex, qemu_nbd, run, NbdServer, RootFs, VmConfig,
    VmOutcome,
};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("reconnect-tests", name)
}

/// Guest helpers: centiseconds of uptime, and a report of the supervisor process.
const PRELUDE: &str = r#"bb=/bin/busybox
cs() { read up _ < /proc/uptime; echo ${up%.*}${up#*.}; }
for p in /proc/[0-9]*; do
  c=$($bb tr '\0' ' ' < $p/cmdline 2>/dev/null)
  case "$c" in @nbdroot*) echo "NBDT supervisor pid=${p#/proc/} oom=$($bb cat $p/oom_score_adj) $($bb grep VmLck $p/status) $($bb grep VmRSS $p/status)";; esac
done
/bin/nbdroot status | while read -r l; do echo "NBDT-STATUS $l"; done"#;

fn image(name: &str, script: &str) -> (nbdroot_qemu::Scratch, PathBuf) {
    let dir = scratch(name);
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    root.add_probe_step(&format!("{PRELUDE}\n{script}"));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    (dir, img)
}

/// Boots with the server under `control`, which runs in a thread while the guest runs and
/// gets the console log's path and the server.
fn boot_with(
    img: &std::path::Path,
    append: &str,
    control: impl FnOnce(&std::path::Path, &mut NbdServer) + Send,
) -> VmOutcome {
    let kit = boot_kit();
    boot_initrd(
        img,
        &kit.initrd,
        |port| format!("root=nbd:10.0.2.2:{port} {IP} rw {append}"),
        control,
    )
}

/// Like [`boot_with`], with any initramfs and command line (given the server's port).
fn boot_initrd(
    img: &std::path::Path,
    initrd: &std::path::Path,
    append: impl Fn(u16) -> String,
    control: impl FnOnce(&std::path::Path, &mut NbdServer) + Send,
) -> VmOutcome {
    let out = run_initrd(img, initrd, append, control);
    assert!(!out.timed_out, "the guest hung:\n{out}");
    assert!(!out.contains("panicked at"), "{out}");
    out
}

/// [`boot_initrd`] without its checks: a guest that hung is an outcome too.
fn run_initrd(
    img: &std::path::Path,
    initrd: &std::path::Path,
    append: impl Fn(u16) -> String,
    control: impl FnOnce(&std::path::Path, &mut NbdServer) + Send,
) -> VmOutcome {
    let mut server = qemu_nbd(img, None, false).expect("qemu-nbd");
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, initrd);
    cfg.append = append(server.port);
    let log = img.with_extension("console.log");
    let _ = fs::remove_file(&log);
    cfg.log_path = Some(log.clone());
    std::thread::scope(|s| {
        let server = &mut server;
        let log = log.clone();
        let ctl = s.spawn(move || control(&log, server));
        let out = run(&cfg).expect("run QEMU");
        ctl.join().expect("control thread");
        out
    })
}

fn value<'a>(out: &'a VmOutcome, key: &str) -> &'a str {
    let prefix = format!("NBDT {key}=");
    out.log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}:\n{out}"))
        .trim_end()
}

#[test]
fn server_restart_during_fsynced_writes_loses_nothing() {
    let script = format!(
        "{}\n/bin/nbdroot status | while read -r l; do echo \"NBDT-AFTER $l\"; done",
        scenario::writer_script()
    );
    let (_dir, img) = image("restart", &script);
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let out = boot_with(&img, "", |log, server| {
        let ok = scenario::restart_server(log, server, Duration::from_secs(3));
        restarted.store(ok, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(
        restarted.load(std::sync::atomic::Ordering::SeqCst),
        "the restart happened while the guest wrote"
    );
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(
        !out.contains("NBDT io-error"),
        "I/O errors in the guest:\n{out}"
    );
    // The supervisor: alive after switch_root, guarded, and it reconnected.
    let sup = value(&out, "supervisor pid");
    assert!(sup.contains("oom=-1000"), "{sup}");
    assert!(
        !sup.contains("VmLck:\t       0 kB") && sup.contains("VmLck"),
        "mlockall: {sup}"
    );
    let after: Vec<&str> = out.lines_with("NBDT-AFTER ");
    assert!(after.iter().any(|l| l.trim() == "state=connected"), "{out}");
    let reconnects: u32 = after
        .iter()
        .find_map(|l| l.trim().strip_prefix("reconnects="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reconnects >= 1, "the supervisor reconnected:\n{out}");
    let rss: u64 = after
        .iter()
        .find_map(|l| l.trim().strip_prefix("rss_kib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rss_kib in the status:\n{out}"));
    assert!(rss > 0);
    eprintln!("supervisor RSS after the reconnect: {rss} KiB");
    let stall: f64 = value(&out, "max_write_cs").parse::<f64>().unwrap() / 100.0;
    eprintln!("longest fsync'd write across the restart: {stall:.2} s (server down 3 s)");

    // Every fsync'd file is on the server with the checksum the guest computed.
    let sums: BTreeMap<String, String> = out
        .lines_with("NBDT-SUM ")
        .iter()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(s, f)| (f.trim().to_string(), s.to_string()))
        })
        .collect();
    assert_eq!(sums.len(), scenario::FILES, "{out}");
    for (file, sum) in &sums {
        let data = debugfs_cat(&img, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(data.len(), 128 * 1024, "{file}");
        let host = md5_hex(&data).expect("md5");
        assert!(
            host.starts_with(sum.as_str()),
            "{file}: guest {sum}, server {host}"
        );
    }
    e2fsck_clean(&img).expect("clean filesystem");
}

/// The server hangs in the middle of a stream of direct writes, then dies for good: the requests
/// in flight when it went, unanswered, must fail too (after the kernel's I/O timeout and the dead
/// timeout), not wait for a server that never comes back, and the guest must shut down.
#[test]
fn server_gone_longer_than_the_dead_timeout_fails_io_cleanly() {
    let script = r#"echo "NBDT-STREAMING"
t0=$(cs)
n=0
while $bb dd if=/dev/zero of=/stream bs=1M count=4 oflag=direct conv=notrunc 2>/dev/null; do n=$((n+1)); done
t1=$(cs)
echo "NBDT streamed=$n"
echo "NBDT failed_after_cs=$((t1-t0))"
$bb dd if=/dev/zero of=/late bs=4k count=1 conv=fsync 2>/dev/null; echo "NBDT late_write=$?""#;
    let (_dir, img) = image("gone", script);
    let out = boot_with(&img, "rd.nbdroot.dead_timeout=3", |log, server| {
        assert!(
            scenario::wait_for(log, "NBDT-STREAMING", Duration::from_secs(120)),
            "the guest never started"
        );
        std::thread::sleep(Duration::from_secs(2));
        server.freeze();
        std::thread::sleep(Duration::from_secs(1));
        server.kill();
    });
    assert_ne!(
        value(&out, "late_write"),
        "0",
        "a write with the server gone must fail:\n{out}"
    );
    let cs: u64 = value(&out, "failed_after_cs").parse().unwrap();
    // 2 s of streaming, the I/O timeout that releases requests in flight (1 s; 30 s before
    // the supervisor managed it), the 3 s dead timeout, and the host's slack.
    assert!(
        cs < 6000,
        "the failure came within a minute, not a hang: {cs} cs\n{out}"
    );
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the guest did not get through its shutdown:\n{out}"
    );
    eprintln!(
        "streaming writes failed {:.2} s after they began, {} passes of 4 MiB (dead timeout 3 s)",
        cs as f64 / 100.0,
        value(&out, "streamed")
    );
}

#[test]
fn a_server_back_with_another_size_is_refused_loudly() {
    let script = r#"echo "NBDT-WRITING"
$bb sleep 2
$bb dd if=/dev/urandom of=/late bs=4k count=1 conv=fsync 2>/dev/null; echo "NBDT late_write=$?"
/bin/nbdroot status | while read -r l; do echo "NBDT-AFTER $l"; done"#;
    let (_dir, img) = image("resized", script);
    let out = boot_with(&img, "rd.nbdroot.dead_timeout=5", |log, server| {
        assert!(scenario::wait_for(
            log,
            "NBDT-WRITING",
            Duration::from_secs(120)
        ));
        server.kill();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .expect("open the image");
        let len = f.metadata().unwrap().len();
        f.set_len(len + (1 << 20)).expect("grow the image");
        server.restart().expect("restart qemu-nbd");
    });
    assert_ne!(
        value(&out, "late_write"),
        "0",
        "the root must not come back with another size:\n{out}"
    );
    let after = out.lines_with("NBDT-AFTER ").join("\n");
    assert!(after.contains("state=reconnecting"), "{after}\n{out}");
    assert!(
        after.contains(
            "last_error=the export is now 68157440 bytes, not 67108864: refusing to reattach it"
        ),
        "{after}\n{out}"
    );
    assert!(
        out.contains("nbdroot: /dev/nbd0: the export is now"),
        "the refusal is on the console:\n{out}"
    );
}

#[test]
fn nbd_client_persist_loses_the_root_on_the_same_restart() {
    // The reference stack, same scenario: Debian's nbd-client 3.24 with -persist, whose
    // connection was measured never to come back. If this ever passes, the comparison in
    // BENCHMARKS.md is stale.
    let kit = boot_kit();
    let dir = scratch("reference");
    let initrd = dir.join("reference.img");
    nbdroot_qemu::reference::nbd_client_initramfs(&kit.kernel, &initrd)
        .expect("reference initramfs");
    let (_dir, img) = image("reference-root", &scenario::writer_script());
    let out = run_initrd(
        &img,
        &initrd,
        |port| format!("root=nbd:unused nbdref=10.0.2.2:{port} nbdrefopts=-persist"),
        |log, server| {
            assert!(scenario::restart_server(
                log,
                server,
                Duration::from_secs(3)
            ))
        },
    );
    assert!(!out.contains("panicked at"), "{out}");
    assert!(
        out.contains("NBDT-WRITING"),
        "the writer never started:\n{out}"
    );
    if out.timed_out {
        // The root lost the other way: I/O blocked for good after the restart.
        eprintln!("nbd-client -persist across a 3 s restart: the guest hung");
        assert!(!out.contains("NBDT errors=0"), "{out}");
        return;
    }
    let errors: usize = value(&out, "errors").parse().expect("error count");
    let readable = out.lines_with("NBDT-SUM ").len();
    eprintln!("nbd-client -persist across a 3 s restart: {errors} of {} writes failed, {readable} files readable", scenario::FILES);
    assert!(errors > 0, "nbd-client -persist saw no error:\n{out}");
}

/// The server stops answering for 2.5 s on a live connection (a link slower than the 1 s I/O
/// timeout looks the same to the kernel): the kernel gives up on the requests and drops the
/// connection, the server answers the reconnect at once, so the supervisor doubles the
/// timeout, and the kernel's own setting shows it. Nothing fails meanwhile.
#[test]
fn a_server_slower_than_the_io_timeout_doubles_it() {
    let script = r#"echo "NBDT io_timeout_before=$($bb cat /sys/block/nbd0/queue/io_timeout)"
echo "NBDT-STREAMING"
t0=$(cs); errors=0
while [ $(( $(cs) - t0 )) -lt 1200 ]; do
  $bb dd if=/dev/zero of=/stream bs=64k count=16 oflag=direct conv=notrunc 2>/dev/null || errors=$((errors+1))
done
echo "NBDT errors=$errors"
echo "NBDT io_timeout_after=$($bb cat /sys/block/nbd0/queue/io_timeout)"
/bin/nbdroot status | while read -r l; do echo "NBDT-AFTER $l"; done"#;
    let (_dir, img) = image("slow", script);
    let out = boot_with(&img, "", |log, server| {
        assert!(
            scenario::wait_for(log, "NBDT-STREAMING", Duration::from_secs(120)),
            "the guest never started"
        );
        // Past the attach's first seconds, where a timeout may still be an old request's.
        std::thread::sleep(Duration::from_secs(4));
        server.freeze();
        std::thread::sleep(Duration::from_millis(2500));
        server.thaw();
    });
    assert_eq!(value(&out, "io_timeout_before"), "1000", "{out}");
    assert_eq!(value(&out, "errors"), "0", "{out}");
    assert!(!out.contains("I/O error"), "{out}");
    assert!(
        out.contains("requests outlasted the I/O timeout on a live connection, so it is now 2 s"),
        "{out}"
    );
    assert_eq!(value(&out, "io_timeout_after"), "2000", "{out}");
    let after = out.lines_with("NBDT-AFTER ");
    assert!(
        after.iter().any(|l| l.trim() == "io_timeout_s=2"),
        "{after:?}"
    );
}
