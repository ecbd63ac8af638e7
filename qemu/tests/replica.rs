//! VM tests of replica servers: two (or three) server hosts in a test network namespace,
//! each an nbdkit on its own address serving a copy of the root image; the guest's root
//! device has a connection to each.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nbdroot_qemu::netns::NetNs;
use nbdroot_qemu::ns_server::NsServer;
use nbdroot_qemu::scenario::wait_for;
use nbdroot_qemu::{boot_kit, run, RootFs, VmConfig, VmOutcome};

const A: &str = "10.77.0.1";
const B: &str = "10.77.0.2";
const C: &str = "10.77.0.3";
const IP: &str = "ip=10.77.0.50::10.77.0.1:255.255.255.0::eth0:off";
/// The big file the guest reads, MiB.
const BIG_MIB: usize = 24;

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("replica-tests", name)
}

/// Deterministic bytes that do not compress (xorshift), so every read goes to the server.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_string()
}

/// A root image with `/big` (`seed`'s noise), nbdroot, and the probe running `script`.
/// Returns the image and the md5 of /big.
fn image(dir: &Path, name: &str, seed: u64, script: &str) -> (PathBuf, String) {
    let mut root = RootFs::new(dir.join(format!("{name}-root"))).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    root.add_file("big", noise(BIG_MIB << 20, seed), 0o644)
        .expect("big file");
    root.add_probe_step(script);
    let sum = md5(&root.dir().join("big"));
    let img = dir.join(format!("{name}.ext4"));
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    (img, sum)
}

/// A namespace whose tap0 side has the addresses of the three server hosts.
fn hosts(tag: &str) -> NetNs {
    let ns = NetNs::new(tag).expect("network namespace");
    ns.add_address(B).expect("second host");
    ns.add_address(C).expect("third host");
    ns
}

/// Read-only nbdkit serving `img` on `addr`:10809.
fn serve(ns: &NetNs, addr: &str, img: &Path) -> NsServer {
    let img = img.display().to_string();
    NsServer::nbdkit(ns, addr, 10809, &["--readonly", "file", &img]).expect("nbdkit")
}

fn vm(ns: &NetNs, append: &str, log: &Path) -> VmConfig {
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.netns = Some(ns.name.clone());
    cfg.append = format!("{IP} {append}");
    cfg.deadline = Duration::from_secs(420);
    let _ = fs::remove_file(log);
    cfg.log_path = Some(log.to_path_buf());
    cfg
}

/// Runs the guest while `control` runs in a thread that lives until the guest ends (servers
/// it starts die with their thread, see [`NsServer::nbdkit`]); returns both outcomes.
fn run_with<T: Send>(cfg: &VmConfig, control: impl FnOnce() -> T + Send) -> (VmOutcome, T) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let ctl = s.spawn(|| {
            let result = control();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            result
        });
        let out = run(cfg);
        done.store(true, Ordering::Relaxed);
        let result = ctl.join().expect("control thread");
        (out.expect("run QEMU"), result)
    })
}

fn assert_ran(out: &VmOutcome) {
    assert!(!out.timed_out, "the guest hung:\n{out}");
    assert!(!out.contains("panicked at"), "{out}");
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init did not finish:\n{out}"
    );
}

/// The guest's status lines about servers and reconnects, as `NBDT-ST <pass> <line>`.
const STATUS: &str = r#"st() { /bin/nbdroot status | $bb grep -E 'state=|reconnects=|server\.' | while read -r l; do echo "NBDT-ST $1 $l"; done; }"#;

/// Kill the first server while the guest reads /big over and over, start it again once the
/// guest's status shows it reconnecting: every read has the right sum, no I/O error reaches
/// the kernel log, and the status shows the reconnect and the server back.
#[test]
fn a_server_killed_and_restarted_costs_no_io_error() {
    let dir = scratch("failover");
    let script = format!(
        r#"bb=/bin/busybox
{STATUS}
want=$($bb cat /want)
st start
echo "NBDT-READING"
pass=0; bad=0
while [ $pass -lt 400 ]; do
  echo 3 > /proc/sys/vm/drop_caches
  sum=$($bb md5sum /big); sum=${{sum%% *}}
  [ "$sum" = "$want" ] || {{ bad=$((bad+1)); echo "NBDT bad-sum pass=$pass $sum"; }}
  pass=$((pass+1))
  st $pass
  s=$(/bin/nbdroot status)
  case "$s" in *"reconnects=0"*) continue;; esac
  case "$s" in *"server.0={A}:10809 connected"*) break;; esac
done
echo "NBDT passes=$pass bad=$bad"
echo "NBDT-IOERR $($bb dmesg | $bb grep -c -i 'I/O error')"
st end"#
    );
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    let big = noise(BIG_MIB << 20, 7);
    root.add_file("big", big, 0o644).expect("big file");
    let want = md5(&root.dir().join("big"));
    root.add_file("want", want.clone(), 0o644).expect("want");
    root.add_probe_step(&script);
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let copy = dir.join("copy.ext4");
    fs::copy(&img, &copy).expect("copy the image");

    let ns = hosts("repl-kill");
    let mut a = serve(&ns, A, &img);
    // Started on this thread, which outlives the guest; restarted on the control thread.
    let _b = serve(&ns, B, &copy);
    let log = dir.join("console.log");
    let cfg = vm(
        &ns,
        &format!("root=nbd:{A}:10809 rd.nbdroot.replicas={B}"),
        &log,
    );
    let (out, down) = run_with(&cfg, || {
        if !wait_for(&log, "NBDT-READING", Duration::from_secs(240)) {
            return Err("the guest never started reading");
        }
        std::thread::sleep(Duration::from_secs(1));
        a.kill();
        let down = wait_for(
            &log,
            &format!("server.0={A}:10809 reconnecting"),
            Duration::from_secs(120),
        );
        std::thread::sleep(Duration::from_secs(2));
        a.start(&ns).expect("restart the first server");
        // Restarted from this thread, which lives until the guest ends.
        down.then_some(())
            .ok_or("the status never showed the first server down")
    });
    assert_eq!(down, Ok(()), "{out}");
    assert_ran(&out);
    // Both servers took connections at attach.
    assert!(
        out.contains(&format!("connections spread over {A}:10809, {B}:10809")),
        "{out}"
    );
    // The dead connection went to the live server, the first one was seen back.
    assert!(
        out.contains(&format!("/dev/nbd0: reconnected to {B}:10809 in ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("/dev/nbd0: server {A}:10809 is back")),
        "{out}"
    );
    let result = out.lines_with("NBDT passes=");
    assert_eq!(result.len(), 1, "{out}");
    assert!(result[0].ends_with(" bad=0"), "{}\n{out}", result[0]);
    assert_eq!(out.lines_with("NBDT-IOERR "), ["0"], "{out}");
    assert!(!out.contains("I/O error"), "{out}");
    let end = out.lines_with("NBDT-ST end ");
    assert!(end.iter().any(|l| l.trim() == "state=connected"), "{end:?}");
    assert!(
        end.iter()
            .any(|l| l.trim().starts_with("reconnects=") && l.trim() != "reconnects=0"),
        "{end:?}"
    );
    for server in [A, B] {
        assert!(
            end.iter()
                .any(|l| l.contains(&format!("={server}:10809 connected since="))),
            "{server}: {end:?}"
        );
    }
}

/// The first server is down from the start, the third serves another image of the same
/// size: the boot goes on with the second (a warning for the first, a refusal naming the
/// third); the first is shown back once it starts. In the booted guest, `nbdroot connect`
/// refuses replicas of a writable export unless shared storage is declared.
#[test]
fn first_server_down_and_a_differing_replica_refused() {
    let dir = scratch("down-and-differ");
    let script = format!(
        r#"bb=/bin/busybox
{STATUS}
st boot
sum=$($bb md5sum /big); echo "NBDT-SUM ${{sum%% *}}"
echo "NBDT-BOOTED"
i=0
while [ $i -lt 120 ]; do
  case "$(/bin/nbdroot status)" in *"server.0={A}:10809 connected"*) break;; esac
  $bb sleep 1; i=$((i+1))
done
st later
out=$(/bin/nbdroot connect {B}:10810 /dev/nbd1 --replica {C}:10810 2>&1); rc=$?
echo "NBDT-RW-UNDECLARED rc=$rc $out"
out=$(/bin/nbdroot connect {B}:10810 /dev/nbd1 --replica {C}:10810 --replicas-shared 2>&1); rc=$?
echo "NBDT-RW-SHARED rc=$rc $($bb cat /sys/block/nbd1/size)"
/bin/nbdroot disconnect /dev/nbd1"#
    );
    let (img, want) = image(&dir, "root", 11, &script);
    let copy = dir.join("copy.ext4");
    fs::copy(&img, &copy).expect("copy the image");
    // Same size and layout, other data in /big: only the sampled blocks tell it apart.
    let (other, other_sum) = image(&dir, "other", 12, &script);
    assert_ne!(want, other_sum);
    assert_eq!(
        fs::metadata(&img).unwrap().len(),
        fs::metadata(&other).unwrap().len()
    );

    let ns = hosts("repl-down");
    let _b = serve(&ns, B, &copy);
    let _c = serve(&ns, C, &other);
    // Writable exports for `connect` in the guest.
    let _bw = NsServer::nbdkit(&ns, B, 10810, &["memory", "16M"]).expect("nbdkit memory");
    let _cw = NsServer::nbdkit(&ns, C, 10810, &["memory", "16M"]).expect("nbdkit memory");
    let log = dir.join("console.log");
    let cfg = vm(
        &ns,
        &format!("root=nbd:{A}:10809 rd.nbdroot.replicas={B},{C} rd.nbdroot.retries=1"),
        &log,
    );
    let (out, (booted, _a)) = run_with(&cfg, || {
        let booted = wait_for(&log, "NBDT-BOOTED", Duration::from_secs(300));
        (booted, booted.then(|| serve(&ns, A, &img)))
    });
    assert!(booted, "the guest never booted:\n{out}");
    assert_ran(&out);
    assert!(
        out.contains(&format!(
            "replica {A}:10809 left out for now: cannot reach {A}:10809"
        )),
        "{out}"
    );
    let refusal =
        format!("replica {C}:10809 refused: different data in the sampled blocks (fingerprint ");
    let line = out
        .log
        .lines()
        .find(|l| l.contains(&refusal))
        .unwrap_or_else(|| panic!("no refusal of {C}:\n{out}"));
    assert!(
        line.trim_end()
            .ends_with(&format!("; it serves another export than {B}:10809")),
        "{line}"
    );
    assert!(
        out.contains(&format!(
            "connections spread over {B}:10809, {B}:10809, {B}:10809"
        )),
        "{out}"
    );
    assert_eq!(out.lines_with("NBDT-SUM "), [want.as_str()], "{out}");
    let boot = out.lines_with("NBDT-ST boot ");
    for (i, server, state) in [
        (0, A, "reconnecting"),
        (1, B, "connected"),
        (2, C, "reconnecting"),
    ] {
        let want = format!("server.{i}={server}:10809 {state} since=");
        assert!(boot.iter().any(|l| l.contains(&want)), "{want}: {boot:?}");
    }
    let later = out.lines_with("NBDT-ST later ");
    assert!(
        later
            .iter()
            .any(|l| l.contains(&format!("server.0={A}:10809 connected since="))),
        "{later:?}\n{out}"
    );
    let rw = out.lines_with("NBDT-RW-UNDECLARED ");
    assert_eq!(rw.len(), 1, "{out}");
    assert!(
        rw[0].starts_with("rc=1 ")
            && rw[0].contains(&format!(
                "replicas {B}:10810, {C}:10810: the export is writable"
            ))
            && rw[0].contains("rd.nbdroot.replicas.shared=1"),
        "{}",
        rw[0]
    );
    // Declared shared: attached (16 MiB = 32768 sectors).
    assert_eq!(out.lines_with("NBDT-RW-SHARED "), ["rc=0 32768"], "{out}");
}

/// Replicas over TLS: every server is an nbdkit that requires TLS; the third serves other
/// data. Each connection does its own STARTTLS and kernel-TLS hand-off before the sampled
/// reads, so the fingerprints (equal for the copy, different for the third) were read through
/// kernel TLS; then the first server is killed under reads and the supervisor's reconnect to
/// the second, and its look at the first once back, go through TLS as well. Every server's
/// certificate is checked for the one name `rd.nbdroot.tls.hostname=` gives.
#[test]
fn replicas_over_tls_each_socket_its_own_session() {
    let dir = scratch("tls");
    let pki = nbdroot_qemu::tls::pki(&dir).expect("certificates");
    let initrd = dir.join("initrd-tls.img");
    nbdroot_qemu::tls::tls_initramfs(&boot_kit().kernel, &initrd, Some(&pki))
        .expect("mkinitramfs --tls");
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        fs::copy(pki.join(f), certs.join(f)).unwrap();
    }
    let tls = format!("--tls-certificates={}", certs.display());
    let script = format!(
        r#"bb=/bin/busybox
{STATUS}
tls() {{ while read -r k v; do echo "NBDT-TLS $1 $k $v"; done < /proc/net/tls_stat; }}
want=$($bb cat /want)
tls start
echo "NBDT-READING"
pass=0; bad=0
while [ $pass -lt 200 ]; do
  echo 3 > /proc/sys/vm/drop_caches
  sum=$($bb md5sum /big); sum=${{sum%% *}}
  [ "$sum" = "$want" ] || {{ bad=$((bad+1)); echo "NBDT bad-sum pass=$pass $sum"; }}
  pass=$((pass+1))
  st $pass
  s=$(/bin/nbdroot status)
  case "$s" in *"reconnects=0"*) continue;; esac
  case "$s" in *"server.0={A}:10809 connected"*) break;; esac
done
echo "NBDT passes=$pass bad=$bad"
echo "NBDT-IOERR $($bb dmesg | $bb grep -c -i 'I/O error')"
tls end
st end"#
    );
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    root.add_file("big", noise(BIG_MIB << 20, 21), 0o644)
        .expect("big file");
    let want = md5(&root.dir().join("big"));
    root.add_file("want", want.clone(), 0o644).expect("want");
    root.add_probe_step(&script);
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let copy = dir.join("copy.ext4");
    fs::copy(&img, &copy).expect("copy the image");
    let (other, _) = image(&dir, "other", 22, "true");
    assert_eq!(
        fs::metadata(&img).unwrap().len(),
        fs::metadata(&other).unwrap().len()
    );

    let ns = hosts("repl-tls");
    let serve_tls = |addr: &str, img: &Path| {
        let img = img.display().to_string();
        NsServer::nbdkit(
            &ns,
            addr,
            10809,
            &["--tls=require", &tls, "--readonly", "file", &img],
        )
        .expect("nbdkit --tls=require")
    };
    let mut a = serve_tls(A, &img);
    let _b = serve_tls(B, &copy);
    let _c = serve_tls(C, &other);
    let log = dir.join("console.log");
    let mut cfg = vm(
        &ns,
        &format!(
            "root=nbd:{A}:10809:::tls rd.nbdroot.replicas={B},{C} \
             rd.nbdroot.tls.hostname=10.0.2.2"
        ),
        &log,
    );
    cfg.initrd = initrd;
    // Kernel TLS is in the path: the CPU's crypto features (the image carries the x86
    // ChaCha20 and Poly1305 modules), the kernel as shipped.
    cfg.lean = false;
    let (out, down) = run_with(&cfg, || {
        if !wait_for(&log, "NBDT-READING", Duration::from_secs(240)) {
            return Err("the guest never started reading");
        }
        std::thread::sleep(Duration::from_secs(1));
        a.kill();
        let down = wait_for(
            &log,
            &format!("server.0={A}:10809 reconnecting"),
            Duration::from_secs(120),
        );
        std::thread::sleep(Duration::from_secs(2));
        a.start(&ns).expect("restart the first server");
        down.then_some(())
            .ok_or("the status never showed the first server down")
    });
    assert_eq!(down, Ok(()), "{out}");
    assert_ran(&out);
    // The third's sampled blocks, read over kernel TLS, differ; the copy's match.
    assert!(
        out.contains(&format!(
            "replica {C}:10809 refused: different data in the sampled blocks (fingerprint "
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "connections spread over {A}:10809, {B}:10809, {A}:10809"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("/dev/nbd0: reconnected to {B}:10809 in ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("/dev/nbd0: server {A}:10809 is back")),
        "{out}"
    );
    let result = out.lines_with("NBDT passes=");
    assert_eq!(result.len(), 1, "{out}");
    assert!(result[0].ends_with(" bad=0"), "{}\n{out}", result[0]);
    assert_eq!(out.lines_with("NBDT-IOERR "), ["0"], "{out}");
    let stat = |when: &str, k: &str| -> u32 {
        out.lines_with(&format!("NBDT-TLS {when} {k} "))
            .first()
            .unwrap_or_else(|| panic!("no {k} in /proc/net/tls_stat:\n{out}"))
            .trim()
            .parse()
            .unwrap()
    };
    // The device's three sockets are kernel-TLS ones in both directions (the refused third
    // server's probe had its own, closed since).
    assert_eq!(stat("start", "TlsCurrTxSw"), 3, "{out}");
    assert_eq!(stat("start", "TlsCurrRxSw"), 3, "{out}");
    assert_eq!(stat("start", "TlsTxSw"), 4, "{out}");
    // The replacements are kernel-TLS sockets too (the looks at down servers add to the total).
    assert!(stat("end", "TlsTxSw") >= 4 + 2, "{out}");
    assert_eq!(stat("end", "TlsCurrRxSw"), 3, "{out}");
    assert_eq!(stat("end", "TlsDecryptError"), 0, "{out}");
}
