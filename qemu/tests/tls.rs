//! VM tests of TLS roots: Debian's cloud kernel boots an initramfs made by
//! `nbdroot mkinitramfs --tls-ca … --tls-cert … --tls-key …`, whose /init negotiates TLS with
//! a server on the host, installs the keys with kernel TLS and hands the socket to nbd.
//!
//! The guest reaches the server through a relay in the test that records every byte in both
//! directions: the capture that shows nothing of NBD or of the files in clear after STARTTLS.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nbdroot_qemu::{
    boot_kit, debugfs_cat, md5_hex, nbdkit, run, scenario, RootFs, VmConfig, VmOutcome,
};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
/// Written by the guest into the root, and read by it from the root: neither may cross the
/// wire in clear.
const GUEST_SECRET: &str = "NBDROOT-GUEST-SECRET-7f3a9c";
const SERVER_SECRET: &str = "NBDROOT-SERVER-SECRET-51d2e8";
/// NBD_OPT_STARTTLS as the client sends it: IHAVEOPT, option 5, no data.
const STARTTLS: [u8; 16] = *b"IHAVEOPT\0\0\0\x05\0\0\0\0";
/// The magic of every NBD request.
const REQUEST_MAGIC: [u8; 4] = 0x2560_9513u32.to_be_bytes();

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("tls-tests", name)
}

fn pki(dir: &Path) -> PathBuf {
    nbdroot_qemu::tls::pki(dir).expect("certificates")
}

/// The initramfs with kernel TLS and the credentials of `pki`.
fn tls_initramfs(dir: &Path, pki: &Path) -> PathBuf {
    let out = dir.join("initrd-tls.img");
    nbdroot_qemu::tls::tls_initramfs(&boot_kit().kernel, &out, Some(pki)).expect("mkinitramfs");
    out
}

/// The root: the probe, which reports the kernel's TLS counters, reads the server's secret
/// and writes its own.
fn root_image(dir: &Path) -> PathBuf {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_file(
        "server-secret",
        SERVER_SECRET.repeat(64).into_bytes(),
        0o644,
    )
    .expect("add file");
    root.add_probe_step(
        "while read -r k v; do echo \"NBDROOT-TLS $k $v\"; done < /proc/net/tls_stat",
    );
    root.add_probe_step("$bb grep -c SERVER-SECRET /server-secret | $bb sed 's/^/NBDROOT-READ /'");
    root.add_probe_step(&format!(
        "for i in 1 2 3 4 5 6 7 8; do echo {GUEST_SECRET}; done > /guest-secret; $bb sync"
    ));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    img
}

/// What one connection carried: the client's bytes and the server's.
type Capture = Arc<Mutex<Vec<u8>>>;

/// A TCP relay on 127.0.0.1 to `to`, recording what each side of each connection sent.
struct Relay {
    port: u16,
    connections: Arc<Mutex<Vec<(Capture, Capture)>>>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream, record: Capture) {
    let mut buf = [0u8; 16384];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<(Capture, Capture)>>> = Arc::default();
        let all = Arc::clone(&connections);
        thread::spawn(move || {
            for guest in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let (up, down): (Capture, Capture) = Default::default();
                all.lock()
                    .unwrap()
                    .push((Arc::clone(&up), Arc::clone(&down)));
                let (g2, s2) = (guest.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pipe(guest, server, up));
                thread::spawn(move || pipe(s2, g2, down));
            }
        });
        Relay { port, connections }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// After STARTTLS, each connection's client bytes are TLS records, and neither direction
/// carries an NBD request or a file's content in clear. Returns the bytes the server sent.
fn assert_nothing_in_clear(relay: &Relay) -> usize {
    let connections = relay.connections.lock().unwrap();
    assert!(!connections.is_empty(), "the guest came through the relay");
    let mut total = 0;
    for (i, (up, down)) in connections.iter().enumerate() {
        let (up, down) = (up.lock().unwrap(), down.lock().unwrap());
        let start = find(&up, &STARTTLS)
            .unwrap_or_else(|| panic!("connection {i}: no NBD_OPT_STARTTLS"))
            + STARTTLS.len();
        let after = &up[start..];
        assert_eq!(
            after.first(),
            Some(&0x16),
            "connection {i}: a TLS handshake record follows STARTTLS"
        );
        // Ciphertext may hold the 4 magic bytes by chance (p ≈ n/2^32); NBD in clear would
        // start every request with them.
        let magic = after.windows(4).filter(|w| *w == REQUEST_MAGIC).count();
        assert!(
            magic < 3,
            "connection {i}: {magic} NBD request magics in clear after STARTTLS"
        );
        assert!(
            find(after, b"IHAVEOPT").is_none(),
            "connection {i}: an option in clear after STARTTLS"
        );
        for (what, bytes) in [("client", after), ("server", &down[..])] {
            for secret in [GUEST_SECRET, SERVER_SECRET] {
                assert!(
                    find(bytes, secret.as_bytes()).is_none(),
                    "connection {i}: {secret} in clear from the {what}"
                );
            }
        }
        total += down.len();
    }
    total
}

fn boot(initrd: &Path, append: String) -> VmOutcome {
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, initrd);
    // Kernel TLS is the subject: the CPU's crypto features, the kernel's self-tests.
    cfg.lean = false;
    cfg.append = append;
    let out = run(&cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung until the deadline:\n{out}");
    assert!(!out.contains("panicked at"), "a Rust panic:\n{out}");
    out
}

/// The root came up over TLS: the probe ran, read the server's file, the kernel counts one TLS
/// session each way per connection, and the guest's file is on the server.
fn assert_tls_root(out: &VmOutcome, img: &Path, connections: u32) {
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init ran:\n{out}"
    );
    assert!(
        out.contains("nbdroot: mounted /dev/nbd0 (ext4, rw)"),
        "{out}"
    );
    // One line holds the 64 copies: the probe read the server's file through TLS.
    assert_eq!(out.lines_with("NBDROOT-READ "), ["1"], "{out}");
    let stat = |k: &str| -> u32 {
        out.lines_with(&format!("NBDROOT-TLS {k} "))
            .first()
            .unwrap_or_else(|| panic!("no {k} in /proc/net/tls_stat:\n{out}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(stat("TlsCurrTxSw"), connections, "{out}");
    assert_eq!(stat("TlsCurrRxSw"), connections, "{out}");
    assert_eq!(stat("TlsDecryptError"), 0, "{out}");
    let written = debugfs_cat(img, "/guest-secret").expect("the guest's file is on the server");
    assert_eq!(
        String::from_utf8(written).unwrap(),
        format!("{GUEST_SECRET}\n").repeat(8)
    );
}

#[test]
fn nbdkit_tls_root_boots_with_nothing_in_clear() {
    let dir = scratch("nbdkit");
    let pki = pki(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for (from, to) in [
        ("ca-cert.pem", "ca-cert.pem"),
        ("server-cert.pem", "server-cert.pem"),
        ("server-key.pem", "server-key.pem"),
    ] {
        std::fs::copy(pki.join(from), certs.join(to)).unwrap();
    }
    let tls_dir = format!("--tls-certificates={}", certs.display());
    let server =
        nbdkit(&["--tls=require", &tls_dir, "file", img.to_str().unwrap()]).expect("nbdkit");
    let relay = Relay::start(server.port);
    let out = boot(
        &initrd,
        format!("root=nbd:10.0.2.2:{}:::tls,conns=4 {IP} rw", relay.port),
    );
    drop(server);
    assert_tls_root(&out, &img, 4);
    let read = assert_nothing_in_clear(&relay);
    assert!(
        read > 1 << 20,
        "the root was read through the relay ({read} bytes)"
    );
    assert_eq!(
        relay.connections.lock().unwrap().len(),
        4,
        "one TLS session per connection, four connections"
    );
}

#[test]
fn qemu_nbd_tls_root_boots_with_a_client_certificate() {
    let dir = scratch("qemu-nbd");
    let pki = pki(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        std::fs::copy(pki.join(f), certs.join(f)).unwrap();
    }
    // The harness's qemu_nbd() has no TLS options: qemu-nbd is run here.
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=server,dir={}",
        certs.display()
    );
    let port = nbdroot_qemu::free_port().unwrap();
    let mut child = Command::new("qemu-nbd")
        .args(["-f", "raw", "--persistent", "--shared=8", "-b", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "--object",
            &object,
            "--tls-creds",
            "tls0",
        ])
        .arg(&img)
        .spawn()
        .expect("qemu-nbd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu-nbd did not listen"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = boot(&initrd, format!("root=nbd:10.0.2.2:{port}:::tls {IP} rw"));
    let _ = child.kill();
    let _ = child.wait();
    assert_tls_root(&out, &img, 1);
}

#[test]
fn nbd_server_force_tls_root_boots() {
    let dir = scratch("nbd-server");
    let pki = pki(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let port = nbdroot_qemu::free_port().unwrap();
    let config = dir.join("nbd-server.conf");
    let pidfile = dir.join("nbd-server.pid");
    std::fs::write(
        &config,
        format!(
            "[generic]\nlistenaddr = 127.0.0.1\nport = {port}\nforce_tls = true\n\
             certfile = {d}/server-cert.pem\nkeyfile = {d}/server-key.pem\n\
             cacertfile = {d}/ca-cert.pem\n[root]\nexportname = {}\nflush = true\n",
            img.display(),
            d = pki.display()
        ),
    )
    .unwrap();
    let status = Command::new("nbd-server")
        .arg("-C")
        .arg(&config)
        .arg("-p")
        .arg(&pidfile)
        .status()
        .expect("nbd-server");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nbd-server did not listen"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let out = boot(
        &initrd,
        format!("root=nbd:10.0.2.2:{port}:::export=root,tls {IP} rw"),
    );
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    assert_tls_root(&out, &img, 1);
}

#[test]
fn server_without_tls_ends_the_boot_with_one_line() {
    let dir = scratch("no-tls-server");
    let pki = pki(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let server = nbdkit(&["file", img.to_str().unwrap()]).expect("nbdkit");
    let out = boot(
        &initrd,
        format!("root=nbd:10.0.2.2:{}:::tls {IP} rw", server.port),
    );
    let lines: Vec<&str> = out
        .log
        .lines()
        .filter(|l| l.contains("nbdroot: ") && l.contains("does not offer TLS"))
        .collect();
    assert_eq!(lines.len(), 1, "one refusal line:\n{out}");
    assert!(!out.contains("NBDROOT-PROBE"), "no plain-text root:\n{out}");
    assert!(
        out.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{out}"
    );
}

#[test]
fn wrong_ca_ends_the_boot_with_one_line_and_no_plain_text() {
    let dir = scratch("wrong-ca");
    let pki = pki(&dir);
    let other = pki_other(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(other.join("ca-cert.pem"), certs.join("ca-cert.pem")).unwrap();
    std::fs::copy(other.join("server-cert.pem"), certs.join("server-cert.pem")).unwrap();
    std::fs::copy(other.join("server-key.pem"), certs.join("server-key.pem")).unwrap();
    let tls_dir = format!("--tls-certificates={}", certs.display());
    let server =
        nbdkit(&["--tls=require", &tls_dir, "file", img.to_str().unwrap()]).expect("nbdkit");
    let out = boot(
        &initrd,
        format!("root=nbd:10.0.2.2:{}:::tls {IP} rw", server.port),
    );
    let line = out
        .log
        .lines()
        .find(|l| l.contains("nbdroot: ") && l.contains("not signed by the given CA"))
        .unwrap_or_else(|| panic!("no refusal line:\n{out}"));
    assert!(line.contains("TLS"), "{line}");
    assert!(
        !out.contains("NBDROOT-PROBE"),
        "the root must not come up:\n{out}"
    );
    assert!(
        out.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{out}"
    );
}

/// A second, unrelated PKI (its own CA), in `dir/pki-other`.
fn pki_other(dir: &Path) -> PathBuf {
    let sub = dir.join("other");
    std::fs::create_dir_all(&sub).unwrap();
    pki(&sub)
}

// ---------------------------------------------------------------------------------------------
// Dead TLS connections: the supervisor's new TCP connection, TLS session and kernel TLS

/// The guest writes and fsyncs files, then reports the kernel's TLS counters and the
/// supervisor's status.
fn writer_image(dir: &Path) -> PathBuf {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    root.add_probe_step(&scenario::writer_script());
    root.add_probe_step(
        "while read -r k v; do echo \"NBDROOT-TLS $k $v\"; done < /proc/net/tls_stat\n\
         /bin/nbdroot status | while read -r l; do echo \"NBDT-AFTER $l\"; done",
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    img
}

/// Boots `initrd` with `append` while `control` runs in a thread with the console log's path.
fn boot_controlled(
    initrd: &Path,
    img: &Path,
    append: String,
    control: impl FnOnce(&Path) + Send,
) -> VmOutcome {
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, initrd);
    // Kernel TLS is the subject: the CPU's crypto features, the kernel's self-tests.
    cfg.lean = false;
    cfg.append = append;
    let log = img.with_extension("console.log");
    let _ = std::fs::remove_file(&log);
    cfg.log_path = Some(log.clone());
    let out = thread::scope(|s| {
        let ctl = s.spawn(|| control(&log));
        let out = run(&cfg).expect("run QEMU");
        ctl.join().expect("control thread");
        out
    });
    assert!(!out.timed_out, "the guest hung:\n{out}");
    assert!(!out.contains("panicked at"), "{out}");
    out
}

/// Every write succeeded and is on the server with the guest's checksum; the supervisor
/// reconnected, and the kernel counted a new TLS session for it.
fn assert_writes_survived(out: &VmOutcome, img: &Path) {
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    assert!(
        !out.contains("NBDT io-error"),
        "I/O errors in the guest:\n{out}"
    );
    assert_eq!(out.lines_with("NBDT errors="), ["0"], "{out}");
    let after = out.lines_with("NBDT-AFTER ");
    let reconnects: u32 = after
        .iter()
        .find_map(|l| l.trim().strip_prefix("reconnects="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reconnects >= 1, "the supervisor reconnected:\n{out}");
    let total: u32 = out.lines_with("NBDROOT-TLS TlsTxSw ")[0]
        .trim()
        .parse()
        .unwrap();
    assert!(total >= 2, "a second kernel-TLS session:\n{out}");
    let current: u32 = out.lines_with("NBDROOT-TLS TlsCurrRxSw ")[0]
        .trim()
        .parse()
        .unwrap();
    assert_eq!(current, 1, "one live session:\n{out}");
    let sums = out.lines_with("NBDT-SUM ");
    assert_eq!(sums.len(), scenario::FILES, "{out}");
    for line in sums {
        let (sum, file) = line.split_once(' ').unwrap();
        let data = debugfs_cat(img, file.trim()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let host = md5_hex(&data).expect("md5");
        assert!(host.starts_with(sum), "{file}: guest {sum}, server {host}");
    }
}

fn nbdkit_certs(dir: &Path, pki: &Path) -> String {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        std::fs::copy(pki.join(f), certs.join(f)).unwrap();
    }
    format!("--tls-certificates={}", certs.display())
}

#[test]
fn server_restart_over_tls_loses_nothing() {
    let dir = scratch("restart");
    let pki = pki(&dir);
    let img = writer_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let tls_dir = nbdkit_certs(&dir, &pki);
    let mut server =
        nbdkit(&["--tls=require", &tls_dir, "file", img.to_str().unwrap()]).expect("nbdkit");
    let port = server.port;
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let out = boot_controlled(
        &initrd,
        &img,
        format!("root=nbd:10.0.2.2:{port}:::tls {IP} rw"),
        |log| {
            let ok = scenario::restart_server(log, &mut server, Duration::from_secs(3));
            restarted.store(ok, std::sync::atomic::Ordering::SeqCst);
            // nbdkit runs with --exit-with-parent, and its parent is now this thread: it
            // stays until the guest is done.
            scenario::wait_for(log, "reboot: Power down", Duration::from_secs(300));
        },
    );
    drop(server);
    assert!(
        restarted.load(std::sync::atomic::Ordering::SeqCst),
        "restarted mid-write"
    );
    assert_writes_survived(&out, &img);
}

/// What the proxy injects into the first connection once armed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inject {
    KeyUpdate,
    Alert,
}

/// A TLS-terminating NBD proxy in front of a plain server: it passes the greeting through,
/// answers NBD_OPT_STARTTLS itself, runs the TLS session with rustls and relays clear text to
/// the server. Once `armed`, its next record towards the client is preceded by a TLS 1.3
/// KeyUpdate or a close_notify alert, once: what a GnuTLS server does after 2^24 records, or
/// a server that says goodbye. Counts the connections it served.
struct TlsProxy {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
    injected: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsProxy {
    fn start(backend: u16, pki: &Path, inject: Inject) -> TlsProxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(pki.join("server-cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join("server-key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        // No tickets: the client's kernel TLS could not take them either.
        config.send_tls13_tickets = 0;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = TlsProxy {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::default(),
            injected: Arc::default(),
            connections: Arc::default(),
        };
        let (armed, injected, count) = (
            Arc::clone(&proxy.armed),
            Arc::clone(&proxy.injected),
            Arc::clone(&proxy.connections),
        );
        thread::spawn(move || {
            for guest in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (config, armed, injected) = (
                    Arc::clone(&config),
                    Arc::clone(&armed),
                    Arc::clone(&injected),
                );
                thread::spawn(move || {
                    let _ = serve(guest, backend, config, inject, armed, injected);
                });
            }
        });
        proxy
    }
}

fn serve(
    mut guest: TcpStream,
    backend: u16,
    config: Arc<rustls::ServerConfig>,
    inject: Inject,
    armed: Arc<std::sync::atomic::AtomicBool>,
    injected: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut server = TcpStream::connect(("127.0.0.1", backend))?;
    // The greeting (fixed newstyle: 18 bytes) and the client flags pass through.
    let mut greeting = [0u8; 18];
    server.read_exact(&mut greeting)?;
    guest.write_all(&greeting)?;
    let mut flags = [0u8; 4];
    guest.read_exact(&mut flags)?;
    server.write_all(&flags)?;
    // NBD_OPT_STARTTLS, answered here with NBD_REP_ACK.
    let mut option = [0u8; 16];
    guest.read_exact(&mut option)?;
    if option != STARTTLS {
        return Ok(());
    }
    let mut ack = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
    ack.extend_from_slice(&5u32.to_be_bytes());
    ack.extend_from_slice(&1u32.to_be_bytes());
    ack.extend_from_slice(&0u32.to_be_bytes());
    guest.write_all(&ack)?;
    let mut conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    // Whatever the server sends is passed on whole, however large.
    conn.set_buffer_limit(None);
    while conn.is_handshaking() {
        conn.complete_io(&mut guest)?;
    }
    let conn = Arc::new(Mutex::new(conn));
    // Client to server: TLS in, clear text out.
    let (mut g_read, mut s_write) = (guest.try_clone()?, server.try_clone()?);
    let up_conn = Arc::clone(&conn);
    let mut g_write = guest.try_clone()?;
    let up = thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = g_read.read(&mut buf).unwrap_or(0);
            if n == 0 {
                // The client is gone (the kernel shuts a dead socket down): so is the session.
                let _ = s_write.shutdown(Shutdown::Both);
                return Ok(());
            }
            let mut clear = Vec::new();
            {
                let mut c = up_conn.lock().unwrap();
                // read_tls takes at most one buffer's worth: feed it all, draining as we go.
                let mut tls = &buf[..n];
                while !tls.is_empty() {
                    c.read_tls(&mut tls)?;
                    c.process_new_packets().map_err(std::io::Error::other)?;
                    let _ = c.reader().read_to_end(&mut clear);
                }
                while c.wants_write() {
                    c.write_tls(&mut g_write)?;
                }
            }
            s_write.write_all(&clear)?;
        }
    });
    // Server to client: clear text in, TLS out, with the injection once armed.
    let mut buf = vec![0u8; 65536];
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut c = conn.lock().unwrap();
        if armed.load(SeqCst) && !injected.swap(true, SeqCst) {
            match inject {
                Inject::KeyUpdate => c.refresh_traffic_keys().map_err(std::io::Error::other)?,
                Inject::Alert => c.send_close_notify(),
            }
            eprintln!(
                "proxy: injected a {}",
                match inject {
                    Inject::KeyUpdate => "KeyUpdate",
                    Inject::Alert => "close_notify alert",
                }
            );
        }
        c.writer().write_all(&buf[..n])?;
        while c.wants_write() {
            c.write_tls(&mut guest)?;
        }
    }
    let _ = guest.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

fn injected_record_is_a_dead_connection_recovered(inject: Inject, name: &str) {
    let dir = scratch(name);
    let pki = pki(&dir);
    let img = writer_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let server = nbdkit(&["file", img.to_str().unwrap()]).expect("nbdkit");
    let proxy = TlsProxy::start(server.port, &pki, inject);
    let out = boot_controlled(
        &initrd,
        &img,
        // A request stuck on the dead socket is requeued when its timeout fires.
        format!("root=nbd:10.0.2.2:{}:::tls,timeout=10 {IP} rw", proxy.port),
        |log| {
            assert!(
                scenario::wait_for(log, "NBDT-WRITING", Duration::from_secs(240)),
                "the guest never started writing"
            );
            thread::sleep(Duration::from_millis(500));
            proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        },
    );
    drop(server);
    assert!(
        proxy.injected.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy injected its record:\n{out}"
    );
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the supervisor came back:\n{out}"
    );
    // nbd reads a reply header without a control-message buffer: kernel TLS fails the
    // record that is not application data with EIO (6.1 says "Receive control failed").
    assert!(
        out.contains("failed (result -5)"),
        "the kernel saw the socket die with EIO:\n{out}"
    );
    assert_writes_survived(&out, &img);
}

#[test]
fn key_update_mid_io_is_recovered_without_io_errors() {
    injected_record_is_a_dead_connection_recovered(Inject::KeyUpdate, "key-update");
}

#[test]
fn alert_mid_io_is_recovered_without_io_errors() {
    injected_record_is_a_dead_connection_recovered(Inject::Alert, "alert");
}

// ---------------------------------------------------------------------------------------------
// Swap over TLS under memory pressure: the case where a userspace TLS proxy can deadlock

#[test]
fn swap_over_tls_carries_three_times_the_ram() {
    let dir = scratch("swap");
    let pki = pki(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    // busybox dd with a 480 MiB block allocates and fills one 480 MiB buffer.
    root.add_probe_step(
        r#"bb=/bin/busybox
while read -r l; do echo "NBDT-SWAPS $l"; done < /proc/swaps
$bb dd if=/dev/zero of=/dev/null bs=480M count=1 2>/dev/null; r=$?
echo "NBDT hog=$r pswpout=$($bb awk '/^pswpout/ {print $2}' /proc/vmstat)"
while read -r k v; do echo "NBDROOT-TLS $k $v"; done < /proc/net/tls_stat"#,
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let tls_dir = nbdkit_certs(&dir, &pki);
    let root_srv =
        nbdkit(&["--tls=require", &tls_dir, "file", img.to_str().unwrap()]).expect("nbdkit");
    let swap_srv = nbdkit(&["--tls=require", &tls_dir, "memory", "768M"]).expect("nbdkit");
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &initrd);
    // Kernel TLS is the subject: the CPU's crypto features, the kernel's self-tests.
    cfg.lean = false;
    cfg.memory_mib = 160;
    cfg.deadline = Duration::from_secs(500);
    cfg.append = format!(
        "root=nbd:10.0.2.2:{}:::tls {IP} rw rd.nbdroot.swap=nbd:10.0.2.2:{}:::mkswap,prio=5,tls",
        root_srv.port, swap_srv.port
    );
    let out = run(&cfg).expect("run QEMU");
    assert!(
        !out.timed_out,
        "the guest did not finish within 500 s:\n{out}"
    );
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    let swaps = out.lines_with("NBDT-SWAPS ");
    assert!(
        swaps.iter().any(|l| l.starts_with("/dev/nbd1 ")),
        "/dev/nbd1 is swap: {swaps:?}\n{out}"
    );
    let line = out
        .log
        .lines()
        .find(|l| l.starts_with("NBDT hog="))
        .expect("hog result");
    assert!(
        line.starts_with("NBDT hog=0 "),
        "the 480 MiB process completed: {line}\n{out}"
    );
    let pswpout: u64 = line
        .rsplit("pswpout=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pswpout > 200 * 256,
        "more than 200 MiB went to swap: {pswpout} pages"
    );
    let current: u32 = out.lines_with("NBDROOT-TLS TlsCurrTxSw ")[0]
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        current, 2,
        "root and swap each on a kernel-TLS socket:\n{out}"
    );
    assert_eq!(
        out.lines_with("NBDROOT-TLS TlsDecryptError "),
        ["0"],
        "{out}"
    );
    eprintln!("{line}");
}

// ---------------------------------------------------------------------------------------------
// Refusals: one line each, and never the root in plain text

/// A server certificate for 10.0.2.2 that expired (its validity ends a day before it begins),
/// signed by `pki`'s CA, with that CA, in a directory nbdkit reads.
fn expired_certs(dir: &Path, pki: &Path) -> String {
    let certs = dir.join("expired");
    std::fs::create_dir_all(&certs).unwrap();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(&certs)
            .output()
            .expect("run openssl");
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
    };
    std::fs::write(
        certs.join("server.ext"),
        "subjectAltName=IP:10.0.2.2\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (ca, ca_key) = (pki.join("ca-cert.pem"), pki.join("ca-key.pem"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=10.0.2.2",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "-1",
        "-extfile",
        "server.ext",
        "-out",
        "server-cert.pem",
    ]);
    std::fs::copy(&ca, certs.join("ca-cert.pem")).unwrap();
    // notBefore is the signing second: past it, the certificate reads as expired.
    thread::sleep(Duration::from_millis(1100));
    format!("--tls-certificates={}", certs.display())
}

/// Each refusal the issue lists that the tests above do not boot, one boot each: the boot
/// ends with exactly one nbdroot line naming the cause, and the root never comes up.
#[test]
fn refusals_end_the_boot_with_one_line_each() {
    let dir = scratch("refusals");
    let pki = pki(&dir);
    let img = root_image(&dir);
    let initrd = tls_initramfs(&dir, &pki);
    let image = img.to_str().unwrap();
    let tls = nbdkit(&["--tls=require", &nbdkit_certs(&dir, &pki), "file", image]).expect("nbdkit");
    let expired =
        nbdkit(&["--tls=require", &expired_certs(&dir, &pki), "file", image]).expect("nbdkit");
    // No tls.ko, no crypto modules: the plain initramfs.
    let plain_initrd = dir.join("initrd-plain.img");
    nbdroot_qemu::nbdroot_initramfs(&boot_kit().kernel, &plain_initrd).expect("mkinitramfs");
    let root = |port: u16, opts: &str| format!("root=nbd:10.0.2.2:{port}:::{opts} {IP} rw");
    let cases: Vec<(&str, &Path, String, &str)> = vec![
        (
            "wrong name",
            &initrd,
            format!(
                "{} rd.nbdroot.tls.hostname=disk.example.net",
                root(tls.port, "tls")
            ),
            "it is not valid for the name \"disk.example.net\"",
        ),
        (
            "expired certificate",
            &initrd,
            root(expired.port, "tls"),
            "it has expired",
        ),
        (
            "a server that requires TLS, TLS not asked",
            &initrd,
            root(tls.port, ""),
            "requires TLS",
        ),
        (
            "no kernel TLS in the initramfs",
            &plain_initrd,
            format!("{} rd.nbdroot.tls.verify=none", root(tls.port, "tls")),
            "the kernel has no TLS support",
        ),
        (
            "unreadable credentials",
            &initrd,
            format!(
                "{} rd.nbdroot.tls.ca=/etc/nbdroot/tls/missing.pem",
                root(tls.port, "tls")
            ),
            "cannot read the TLS CA certificate /etc/nbdroot/tls/missing.pem",
        ),
    ];
    for (name, initrd, append, want) in cases {
        let out = boot(initrd, append);
        let lines: Vec<&str> = out
            .log
            .lines()
            .filter(|l| l.contains("nbdroot: ") && l.contains(want))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: one line with \"{want}\":\n{out}");
        assert!(!out.contains("NBDROOT-PROBE"), "{name}: no root:\n{out}");
        assert!(
            out.contains("Kernel panic - not syncing: Attempted to kill init!"),
            "{name}:\n{out}"
        );
    }
}
