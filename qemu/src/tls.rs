//! TLS fixtures for the VM tests and benchmarks: a small PKI made with openssl, whose server
//! certificate names the host as the guest sees it (10.0.2.2) and 127.0.0.1, and an nbdroot
//! initramfs with kernel TLS.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Context;
use crate::{command, nbdroot_binary, Kernel, Result};

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    command::run(&format!("openssl {} (package openssl)", args[0]), &mut cmd).map(drop)
}

/// Makes `dir/pki`: `ca-cert.pem`, and `server-*.pem` and `client-*.pem` signed by it. The
/// directory also serves as nbdkit's `--tls-certificates` and qemu-nbd's x509 `dir`.
pub fn pki(dir: &Path) -> Result<PathBuf> {
    let dir = dir.join("pki");
    fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca-cert.pem",
            "-days",
            "30",
            "-subj",
            "/CN=nbdroot VM test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = dir.join(format!("{name}.ext"));
        fs::write(
            &ext,
            format!(
                "subjectAltName=IP:10.0.2.2,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            ),
        )
        .step(|| format!("write {}", ext.display()))?;
        openssl(
            &dir,
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
                &format!("/CN={name}"),
            ],
        )?;
        openssl(
            &dir,
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
                "30",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    Ok(dir)
}

/// `nbdroot mkinitramfs` with kernel TLS, and with the credentials of `pki` when given.
pub fn tls_initramfs(kernel: &Kernel, out: &Path, pki: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new(nbdroot_binary()?);
    cmd.arg("mkinitramfs")
        .arg("-o")
        .arg(out)
        .args(["--kver", &kernel.version])
        .arg("--kmoddir")
        .arg(&kernel.moddir)
        .arg("--tls");
    if let Some(pki) = pki {
        cmd.arg("--tls-ca")
            .arg(pki.join("ca-cert.pem"))
            .arg("--tls-cert")
            .arg(pki.join("client-cert.pem"))
            .arg("--tls-key")
            .arg(pki.join("client-key.pem"));
    }
    command::run(&format!("build TLS initramfs {}", out.display()), &mut cmd).map(drop)
}

/// The credentials an image builder's hook is given, in the layout it reads
/// (`/etc/nbdroot/tls`): `ca.pem`, `client-cert.pem` and `client-key.pem`, each holding its own
/// name. The key is world-readable here, so that a 0600 key in the image is the hook's doing.
pub fn hook_credentials(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let tls = dir.join("host-tls");
    fs::create_dir_all(&tls).step(|| format!("create {}", tls.display()))?;
    for f in HOOK_FILES {
        let path = tls.join(f);
        fs::write(&path, f).step(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .step(|| format!("chmod {}", path.display()))?;
    }
    Ok(tls)
}

/// The files of [`hook_credentials`].
pub const HOOK_FILES: [&str; 3] = ["ca.pem", "client-cert.pem", "client-key.pem"];

/// What an unpacked image (`root`) must hold when its hook was given [`hook_credentials`]:
/// the three files with their content under `etc/nbdroot/tls` (mode 0700), the key 0600 and
/// the certificates 0644; and the kernel TLS modules. Panics naming what is wrong.
pub fn assert_hook_credentials(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    let dir = root.join("etc/nbdroot/tls");
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for f in HOOK_FILES {
        let path = dir.join(f);
        let want = if f == "client-key.pem" { 0o600 } else { 0o644 };
        assert_eq!(mode(&path), want, "{}", path.display());
        assert_eq!(fs::read_to_string(&path).unwrap(), f, "{}", path.display());
    }
    let mut stack = vec![root.to_path_buf()];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if name.starts_with("tls.ko") || name.starts_with("chacha20poly1305.ko") {
                found.push(name);
            }
        }
    }
    for want in ["tls.ko", "chacha20poly1305.ko"] {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "no {want} under {}",
            root.display()
        );
    }
}
