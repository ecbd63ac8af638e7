//! The server recipes of docs/servers.md, started exactly as documented (the commands are
//! read from the document) and checked from the host with nbdroot's own client: many
//! clients on the shared read-only base, per-machine writes that survive a reconnect and a
//! server restart, the base left untouched. Also the documented warning: nbdkit's tmpdisk
//! and nbd-server's copyonwrite drop a client's writes when it reconnects.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nbdroot::proto::consts::TFLAG_CAN_MULTI_CONN;
use nbdroot::proto::Client;
use nbdroot_qemu::recipes::{self, Env};
use nbdroot_qemu::{free_port, nbdkit, scratch, Scratch};

/// Every recipe of the document, each run by a test below.
const RECIPES: [&str; 5] = [
    "shared-base-nbdkit",
    "shared-base-qemu-nbd",
    "machine-roots",
    "machine-uppers",
    "per-machine-qsd",
];

const MIB: u64 = 1024 * 1024;
const GOLD_SIZE: u64 = 16 * MIB;

type Conn = Client<nbdroot::connect::Stream>;

fn connect(port: u16, export: &str) -> Conn {
    Client::connect(&format!("127.0.0.1:{port}"), Some(export))
        .unwrap_or_else(|e| panic!("connect to export {export} on port {port}: {e}"))
}

/// A recipe environment in a fresh directory, with `gold-v1.ext4` holding bytes that differ
/// per 512-byte sector (not a filesystem: the servers do not care). The directory lives as
/// long as the returned scratch.
fn env(name: &str) -> (Scratch, Env) {
    let srv = scratch("server-recipes", name);
    let gold: Vec<u8> = (0..GOLD_SIZE)
        .map(|i| ((i / 512) as u8) ^ (i as u8))
        .collect();
    fs::write(srv.join("gold-v1.ext4"), gold).unwrap();
    let env = Env {
        srv: srv.to_path_buf(),
        port: free_port().unwrap(),
    };
    (srv, env)
}

fn gold_at(srv: &Path, offset: u64, len: usize) -> Vec<u8> {
    fs::read(srv.join("gold-v1.ext4")).unwrap()[offset as usize..][..len].to_vec()
}

fn read(c: &mut Conn, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    c.read(offset, &mut buf).expect("read");
    buf
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn every_recipe_of_the_document_is_run_here() {
    let names: Vec<String> = recipes::all()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, RECIPES, "recipes in {}", recipes::DOC);
}

/// Four clients at once on the shared base: all read the image's bytes, none can write, the
/// file is unchanged.
fn shared_base(recipe: &str) {
    let (_srv, env) = env(recipe);
    let before = sha256(&env.srv.join("gold-v1.ext4"));
    let _server = recipes::get(recipe).unwrap().serve(&env).unwrap();
    let mut clients: Vec<Conn> = (0..4).map(|_| connect(env.port, "gold-v1")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.export().size, GOLD_SIZE);
        assert!(
            c.export().read_only(),
            "client {i}: the export is read-only"
        );
        // The documented conns= (several sockets per device, the kernel's fallback between
        // them) needs this flag.
        assert!(
            c.export().flags & TFLAG_CAN_MULTI_CONN != 0,
            "client {i}: multi-conn"
        );
        for offset in [0, 5 * MIB + 512, GOLD_SIZE - 4096] {
            assert_eq!(
                read(c, offset, 4096),
                gold_at(&env.srv, offset, 4096),
                "client {i} at {offset}"
            );
        }
        assert!(
            c.write(0, &[0x55; 512], false).is_err(),
            "client {i}: a write is refused"
        );
    }
    drop(clients);
    assert_eq!(sha256(&env.srv.join("gold-v1.ext4")), before);
}

#[test]
fn shared_base_nbdkit_serves_many_clients_read_only() {
    shared_base("shared-base-nbdkit");
}

#[test]
fn shared_base_qemu_nbd_serves_many_clients_read_only() {
    shared_base("shared-base-qemu-nbd");
}

fn write_flush(port: u16, export: &str, offset: u64, data: &[u8]) {
    let mut c = connect(port, export);
    assert!(!c.export().read_only(), "{export} is writable");
    c.write(offset, data, false).expect("write");
    c.flush().expect("flush");
    c.disconnect().expect("disconnect");
}

#[test]
fn per_machine_qsd_keeps_each_machines_writes_across_reconnects_and_restarts() {
    let (_srv, env) = env("per-machine-qsd");
    let gold_file = env.srv.join("gold-v1.ext4");
    let before = sha256(&gold_file);
    recipes::get("machine-roots").unwrap().run(&env).unwrap();
    recipes::get("machine-uppers").unwrap().run(&env).unwrap();
    for f in [
        "root-m1.qcow2",
        "root-m2.qcow2",
        "upper-m1.qcow2",
        "upper-m2.qcow2",
    ] {
        assert!(env.srv.join(f).is_file(), "{f} created");
    }
    let mut server = recipes::get("per-machine-qsd")
        .unwrap()
        .serve(&env)
        .unwrap();

    let root_data = vec![0xa5; 64 * 1024];
    let upper_data = vec![0x3c; 64 * 1024];
    write_flush(env.port, "root-m1", MIB, &root_data);
    write_flush(env.port, "upper-m1", 4 * MIB, &upper_data);

    let check = |when: &str| {
        let mut root = connect(env.port, "root-m1");
        assert_eq!(root.export().size, GOLD_SIZE, "{when}: the base's size");
        assert_eq!(
            read(&mut root, MIB, 64 * 1024),
            root_data,
            "{when}: m1's write"
        );
        assert_eq!(
            read(&mut root, 2 * MIB, 4096),
            gold_at(&env.srv, 2 * MIB, 4096),
            "{when}: untouched blocks come from the base"
        );
        let mut upper = connect(env.port, "upper-m1");
        assert_eq!(upper.export().size, 1024 * MIB, "{when}: the blank's size");
        assert_eq!(read(&mut upper, 4 * MIB, 64 * 1024), upper_data, "{when}");
        let mut other = connect(env.port, "upper-m2");
        assert_ne!(
            read(&mut other, 4 * MIB, 64 * 1024),
            upper_data,
            "{when}: m2 does not see m1's writes"
        );
        let mut gold = connect(env.port, "gold-v1");
        assert!(gold.export().read_only(), "{when}: the base is read-only");
        assert_eq!(
            read(&mut gold, MIB, 4096),
            gold_at(&env.srv, MIB, 4096),
            "{when}: the base is unchanged"
        );
    };
    check("after a reconnect");
    server.restart().unwrap();
    check("after a server restart (SIGKILL)");
    drop(server);
    assert_eq!(sha256(&gold_file), before, "the base file is unchanged");
}

/// The documented warning, shown: a write, read back on the same connection, is gone after
/// the client reconnects.
fn assert_reconnect_drops_write(port: u16, export: &str) {
    let data = vec![0x77; 4096];
    let mut c = connect(port, export);
    c.write(8 * MIB, &data, false).expect("write");
    c.flush().expect("flush");
    assert_eq!(
        read(&mut c, 8 * MIB, 4096),
        data,
        "read back before reconnecting"
    );
    c.disconnect().expect("disconnect");
    let mut c = connect(port, export);
    assert_ne!(
        read(&mut c, 8 * MIB, 4096),
        data,
        "the write is gone after the reconnect"
    );
}

#[test]
fn nbdkit_tmpdisk_drops_writes_on_reconnect() {
    let server = nbdkit(&["tmpdisk", "16M"]).expect("nbdkit tmpdisk");
    assert_reconnect_drops_write(server.port, "");
}

/// nbd-server daemonizes; this kills it by its pid file.
struct NbdServerDaemon(PathBuf);

impl Drop for NbdServerDaemon {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

#[test]
fn nbd_server_copyonwrite_drops_writes_on_reconnect() {
    let (_srv, env) = env("nbd-server-cow");
    let conf = env.srv.join("nbd-server.conf");
    let pidfile = env.srv.join("nbd-server.pid");
    fs::write(
        &conf,
        format!(
            "[generic]\nlistenaddr = 127.0.0.1\nport = {}\n[cow]\nexportname = {}\ncopyonwrite = true\nflush = true\n",
            env.port,
            env.srv.join("gold-v1.ext4").display()
        ),
    )
    .unwrap();
    let before = sha256(&env.srv.join("gold-v1.ext4"));
    let status = Command::new("nbd-server")
        .arg("-C")
        .arg(&conf)
        .arg("-p")
        .arg(&pidfile)
        .status()
        .expect("start nbd-server");
    assert!(status.success(), "nbd-server: {status}");
    let _guard = NbdServerDaemon(pidfile);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nbd-server listens"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_reconnect_drops_write(env.port, "cow");
    assert_eq!(sha256(&env.srv.join("gold-v1.ext4")), before);
}
