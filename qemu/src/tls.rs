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
