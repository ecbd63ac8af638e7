//! NBD over TLS against real servers on 127.0.0.1: nbdkit (`--tls=require`), qemu-nbd
//! (x509 credentials, with and without a client certificate) and nbd-server (`force_tls`),
//! with certificates each test makes with openssl. Then every refusal, each one line and none
//! falling back to plain text; and the kernel-TLS hand-off where this host's kernel has TLS.
//!
//! Test names read as a matrix: `<server>_<case>_<outcome>`.
#![cfg(feature = "tls")]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nbdroot::connect::{self, AttemptError, ConnectError, Connection, Peer, Stream};
use nbdroot::proto::{Client, HandshakeError};
use nbdroot::settings::SocketOptions;
use nbdroot::tls::{self, TlsError, TlsSettings, Verify};

mod common;
use common::*;

/// Certificates for one test: a CA, a server certificate for localhost and 127.0.0.1, a
/// client certificate, all signed by the CA; and a second CA that signed nothing here.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf `name` signed by the CA, for `usage` (serverAuth or clientAuth), valid `days`
/// (negative: already expired).
fn leaf(dir: &Path, name: &str, cn: &str, usage: &str, days: i32) {
    let ext = format!("{name}.ext");
    fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            &days.to_string(),
            "-extfile",
            &ext,
        ],
    );
}

impl Pki {
    fn new(scratch: &Scratch) -> Self {
        let dir = scratch.path("pki");
        fs::create_dir_all(&dir).unwrap();
        ca(&dir, "ca", "nbdroot test CA");
        ca(&dir, "other-ca", "another CA");
        leaf(&dir, "server", "localhost", "serverAuth", 30);
        leaf(&dir, "client", "nbdroot-client", "clientAuth", 30);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A directory as nbdkit and qemu-nbd want it: ca-cert.pem, server-cert.pem,
    /// server-key.pem; with the server certificate `server` (a leaf made by `leaf`).
    fn server_dir(&self, server: &str) -> PathBuf {
        let dir = self.dir.join(format!("serve-{server}"));
        fs::create_dir_all(&dir).unwrap();
        fs::copy(self.path("ca-cert.pem"), dir.join("ca-cert.pem")).unwrap();
        fs::copy(
            self.path(&format!("{server}-cert.pem")),
            dir.join("server-cert.pem"),
        )
        .unwrap();
        fs::copy(
            self.path(&format!("{server}-key.pem")),
            dir.join("server-key.pem"),
        )
        .unwrap();
        dir
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            ca: Some(self.path("ca-cert.pem")),
            ..TlsSettings::default()
        }
    }

    fn with_client_cert(&self) -> TlsSettings {
        TlsSettings {
            cert: Some(self.path("client-cert.pem")),
            key: Some(self.path("client-key.pem")),
            ..self.settings()
        }
    }
}

fn peer(server: &Server) -> Peer {
    Peer::Tcp(([127, 0, 0, 1], server.port).into())
}

/// One bounded attempt over TLS to `host` (the name to verify) at `server`.
fn attempt(
    server: &Server,
    settings: &TlsSettings,
    export: &str,
) -> Result<Connection, AttemptError> {
    let client = tls::Client::new(settings, "127.0.0.1").expect("credentials load");
    connect::attempt(
        &peer(server),
        export,
        Duration::from_secs(10),
        &SocketOptions::default(),
        Some(&client),
    )
}

fn fatal(r: Result<Connection, AttemptError>) -> ConnectError {
    match r {
        Err(AttemptError::Fatal(e)) => e,
        Err(AttemptError::Transient(e)) => panic!("transient, not fatal: {e}"),
        Err(AttemptError::Connect(e)) => panic!("connect error, not fatal: {e}"),
        Ok(_) => panic!("connected"),
    }
}

/// Writes a pattern through a TLS session, reads it back, and checks the backing file.
fn round_trip(c: Connection, file: Option<&Path>) {
    assert!(matches!(c.stream, Stream::Tls(_)), "not a TLS session");
    let mut client = Client::new(c.stream, c.export);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    client.write(8192, &data, false).unwrap();
    client.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    client.read(8192, &mut back).unwrap();
    assert!(back == data, "read back differs");
    if let Some(file) = file {
        let disk = fs::read(file).unwrap();
        assert!(
            disk[8192..8192 + data.len()] == data[..],
            "backing file differs"
        );
    }
    client.disconnect().unwrap();
}

fn nbdkit_tls(scratch: &Scratch, pki: &Pki, file: &Path) -> Server {
    let dir = pki.server_dir("server");
    nbdkit(
        scratch,
        &[
            "--tls=require",
            &format!("--tls-certificates={}", dir.display()),
            "file",
            file.to_str().unwrap(),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Sessions that work

#[test]
fn nbdkit_require_round_trips_and_lists() {
    let scratch = Scratch::new("tls-nbdkit");
    let pki = Pki::new(&scratch);
    let file = scratch.file("disk.img", 4 * MIB, 0);
    let server = nbdkit_tls(&scratch, &pki, &file);
    let c = attempt(&server, &pki.settings(), "").unwrap();
    assert_eq!(c.export.size, 4 * MIB);
    round_trip(c, Some(&file));

    let target = format!("nbds://127.0.0.1:{}", server.port);
    let settings = pki.settings();
    let policy = nbdroot::settings::ConnectPolicy::COMMAND;
    let list = nbdroot::cli::commands::list(&target, &policy, Some(&settings)).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let info = nbdroot::cli::commands::info(&target, None, &policy, Some(&settings)).unwrap();
    assert!(
        info.contains(&format!("export-size: {}", 4 * MIB)),
        "{info}"
    );
}

#[test]
fn qemu_nbd_x509_with_and_without_client_certificate() {
    let scratch = Scratch::new("tls-qemu");
    let pki = Pki::new(&scratch);
    let file = scratch.file("disk.img", 4 * MIB, 0);
    let dir = pki.server_dir("server");
    // verify-peer defaults to on: a client certificate is required.
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=server,dir={}",
        dir.display()
    );
    let server = qemu_nbd(
        &scratch,
        &["--object", &object, "--tls-creds", "tls0"],
        &file,
    );
    round_trip(
        attempt(&server, &pki.with_client_cert(), "").unwrap(),
        Some(&file),
    );
    // Without one, the server ends the handshake, and the line says what may be missing.
    let err = fatal(attempt(&server, &pki.settings(), "")).to_string();
    assert!(err.contains("client certificate"), "{err}");
    drop(server);

    let object = format!("{object},verify-peer=off");
    let server = qemu_nbd(
        &scratch,
        &["--object", &object, "--tls-creds", "tls0"],
        &file,
    );
    round_trip(attempt(&server, &pki.settings(), "").unwrap(), Some(&file));
}

/// nbdroot offers ChaCha20-Poly1305 only (every other test here negotiates it): a server whose
/// priorities leave it out is refused in one line that says what to allow.
#[test]
fn server_without_chacha20_is_refused_by_name() {
    let scratch = Scratch::new("tls-suites");
    let pki = Pki::new(&scratch);
    let file = scratch.file("disk.img", MIB, 0);
    let object = |priority: &str| {
        format!(
            "tls-creds-x509,id=tls0,endpoint=server,dir={},verify-peer=off,priority={priority}",
            pki.server_dir("server").display()
        )
    };
    let without = object("NORMAL:-CHACHA20-POLY1305");
    let server = qemu_nbd(
        &scratch,
        &["--object", &without, "--tls-creds", "tls0"],
        &file,
    );
    let err = fatal(attempt(&server, &pki.settings(), "")).to_string();
    assert!(
        err.contains("accepts none of its cipher suites")
            && err.contains("allow CHACHA20-POLY1305"),
        "{err}"
    );
}

#[test]
fn nbd_server_force_tls_round_trips() {
    let scratch = Scratch::new("tls-nbd-server");
    let pki = Pki::new(&scratch);
    let alpha = scratch.file("alpha.img", MIB, 0);
    let config = scratch.path("nbd-server.conf");
    let pidfile = scratch.path("nbd-server.pid");
    let (c, p, a) = (config.clone(), pidfile.clone(), alpha.clone());
    let pki_dir = pki.dir.clone();
    let server = Server::start(&scratch, "nbd-server", Some(pidfile), move |port| {
        let _ = fs::remove_file(&p);
        fs::write(
            &c,
            format!(
                "[generic]\nlistenaddr = 127.0.0.1\nport = {port}\nforce_tls = true\n\
                 certfile = {d}/server-cert.pem\nkeyfile = {d}/server-key.pem\n\
                 cacertfile = {d}/ca-cert.pem\n[alpha]\nexportname = {}\nflush = true\n",
                a.display(),
                d = pki_dir.display()
            ),
        )
        .unwrap();
        strings(&["-C", c.to_str().unwrap(), "-p", p.to_str().unwrap()])
    });
    round_trip(
        attempt(&server, &pki.with_client_cert(), "alpha").unwrap(),
        Some(&alpha),
    );
    // TLS forced: a plain negotiation is refused with one line that says how to ask.
    let err = server.negotiate_err("alpha");
    assert!(matches!(err, HandshakeError::TlsRequired { .. }), "{err}");
    assert!(err.to_string().contains("--tls"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Refusals: one line each, never plain text

#[test]
fn plain_server_is_refused_when_tls_is_asked() {
    let scratch = Scratch::new("tls-plain-server");
    let pki = Pki::new(&scratch);
    let server = nbdkit(&scratch, &["memory", "1M"]);
    let err = fatal(attempt(&server, &pki.settings(), ""));
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            ConnectError::Handshake {
                source: HandshakeError::TlsRefused { .. },
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("does not offer TLS"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn nbdkit_refusals_name_the_cause() {
    let scratch = Scratch::new("tls-refusals");
    let pki = Pki::new(&scratch);
    let file = scratch.file("disk.img", MIB, 0);
    let server = nbdkit_tls(&scratch, &pki, &file);

    // Wrong CA.
    let wrong_ca = TlsSettings {
        ca: Some(pki.path("other-ca-cert.pem")),
        ..TlsSettings::default()
    };
    let err = fatal(attempt(&server, &wrong_ca, "")).to_string();
    assert!(
        err.contains("not signed by the given CA (unknown issuer)"),
        "{err}"
    );

    // Wrong name.
    let wrong_name = TlsSettings {
        hostname: Some("nbd.example.net".into()),
        ..pki.settings()
    };
    let err = fatal(attempt(&server, &wrong_name, "")).to_string();
    assert!(
        err.contains("not valid for the name \"nbd.example.net\""),
        "{err}"
    );

    // Verification off, said by name: the same server is accepted with the wrong CA.
    let none = TlsSettings {
        verify: Verify::None,
        ..wrong_ca
    };
    round_trip(attempt(&server, &none, "").unwrap(), Some(&file));

    // TLS required, not asked for.
    let err = server.negotiate_err("");
    assert!(matches!(err, HandshakeError::TlsRequired { .. }), "{err}");
}

#[test]
fn nbdkit_expired_certificate_is_refused() {
    let scratch = Scratch::new("tls-expired");
    let pki = Pki::new(&scratch);
    leaf(&pki.dir, "expired", "localhost", "serverAuth", -1);
    // notBefore is the signing second and notAfter a day before it: past that second, the
    // certificate reads as expired, not as not yet valid.
    std::thread::sleep(Duration::from_millis(1100));
    let dir = pki.server_dir("expired");
    let server = nbdkit(
        &scratch,
        &[
            "--tls=require",
            &format!("--tls-certificates={}", dir.display()),
            "memory",
            "1M",
        ],
    );
    let err = fatal(attempt(&server, &pki.settings(), "")).to_string();
    assert!(err.contains("has expired"), "{err}");
}

#[test]
fn credentials_are_checked_before_connecting() {
    let scratch = Scratch::new("tls-credentials");
    let pki = Pki::new(&scratch);
    let new = |s: TlsSettings| tls::Client::new(&s, "127.0.0.1").unwrap_err();
    let err = new(TlsSettings::default());
    assert!(matches!(err, TlsError::NoCa), "{err}");
    assert!(err.to_string().contains("--tls-verify=none"), "{err}");

    let missing = scratch.path("absent.pem");
    let err = new(TlsSettings {
        ca: Some(missing.clone()),
        ..TlsSettings::default()
    });
    assert!(
        err.to_string().starts_with(&format!(
            "cannot read the TLS CA certificate {}",
            missing.display()
        )),
        "{err}"
    );

    let garbage = scratch.path("garbage.pem");
    fs::write(&garbage, "not a certificate\n").unwrap();
    let err = new(TlsSettings {
        ca: Some(garbage),
        ..TlsSettings::default()
    });
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let err = new(TlsSettings {
        cert: Some(pki.path("client-cert.pem")),
        ..pki.settings()
    });
    assert!(matches!(err, TlsError::CertWithoutKey), "{err}");

    // A key that does not belong to the certificate.
    let err = new(TlsSettings {
        cert: Some(pki.path("client-cert.pem")),
        key: Some(pki.path("server-key.pem")),
        ..pki.settings()
    });
    assert!(err.to_string().contains("client key"), "{err}");

    let err = tls::Client::new(&pki.settings(), "bad name!").unwrap_err();
    assert!(matches!(err, TlsError::BadName { .. }), "{err}");
}

#[test]
fn cli_refuses_in_one_line() {
    let scratch = Scratch::new("tls-cli");
    let server = nbdkit(&scratch, &["memory", "1M"]);
    // nbds:// without a CA: refused before connecting.
    let out = Command::new(env!("CARGO_BIN_EXE_nbdroot"))
        .args(["list", &format!("nbds://127.0.0.1:{}", server.port)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("TLS needs the CA certificate"), "{err}");
    // A plain server with TLS asked (no verification): refused, no plain-text listing.
    let out = Command::new(env!("CARGO_BIN_EXE_nbdroot"))
        .args([
            "list",
            "--tls-verify=none",
            &format!("127.0.0.1:{}", server.port),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does not offer TLS"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The kernel-TLS hand-off

/// After NBD_OPT_GO inside TLS, the keys go into the socket: plain reads and writes on it
/// then carry NBD in TLS records. Where this kernel has no TLS (no `tls` module), the hand-off
/// must fail with the line that says so, never hand on a plain socket.
#[test]
fn nbdkit_kernel_tls_hand_off_round_trips_or_says_why_not() {
    let scratch = Scratch::new("tls-ktls");
    let pki = Pki::new(&scratch);
    let file = scratch.file("disk.img", MIB, 0);
    let server = nbdkit_tls(&scratch, &pki, &file);
    let c = attempt(&server, &pki.settings(), "").unwrap();
    match c.stream.into_kernel(&c.peer) {
        Ok(Stream::Tcp(tcp)) => {
            let export = c.export;
            let mut client: Client<TcpStream> = Client::new(tcp, export);
            let data = vec![0x5a; 4096];
            client.write(0, &data, true).unwrap();
            let mut back = vec![0; 4096];
            client.read(0, &mut back).unwrap();
            assert_eq!(back, data);
            assert_eq!(&fs::read(&file).unwrap()[..4096], &data[..]);
            let stat = fs::read_to_string("/proc/net/tls_stat").unwrap();
            assert!(stat.contains("TlsTxSw"), "{stat}");
            eprintln!("kernel TLS round trip done");
        }
        Ok(other) => panic!("not a TCP socket after the hand-off: {other:?}"),
        Err(AttemptError::Fatal(ConnectError::Tls { source, .. })) => {
            assert!(
                !Path::new("/proc/net/tls_stat").exists(),
                "the kernel has TLS, yet: {source}"
            );
            assert!(matches!(source, TlsError::NoKernelTls { .. }), "{source}");
            assert!(
                source.to_string().contains("load the tls module"),
                "{source}"
            );
            eprintln!("no kernel TLS on this host: {source}");
        }
        Err(e) => panic!("{e:?}"),
    }
}
