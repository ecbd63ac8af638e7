//! NBD over TLS. The handshake runs in userspace (rustls on ring); a connection meant for the
//! kernel then gets the session keys installed with kernel TLS (`ktls.rs`) and goes to the nbd
//! driver, so the data path stays in the kernel, encrypted, with no process in it.
//!
//! What is configured ([`TlsSettings`]) is plain data, present in every build, so a build
//! without the `tls` feature still parses a TLS configuration and refuses it with one line
//! ([`TlsError::NotBuilt`]) rather than connecting in plain text.
//!
//! Verification is on unless switched off by name ([`Verify::None`]): the server's certificate
//! must chain to the given CA and name the server (the host as written, or `hostname`).

use std::io;
use std::path::PathBuf;

#[cfg(feature = "tls")]
mod client;
#[cfg(feature = "tls")]
mod ktls;
#[cfg(not(feature = "tls"))]
mod none;
#[cfg(feature = "tls")]
mod provider;
#[cfg(feature = "tls")]
mod verify;

#[cfg(feature = "tls")]
pub use client::{Client, Session};
#[cfg(feature = "tls")]
pub use ktls::Cipher;
#[cfg(not(feature = "tls"))]
pub use none::{Client, Session};

/// Every module kernel TLS needs for the suites nbdroot offers (ChaCha20-Poly1305; Linux 6.1,
/// x86-64, in modules.dep order), for image builders: the kernel asks for the crypto templates with
/// request_module, which an initramfs without modprobe cannot answer.
pub const MODULES: &[&str] = &[
    "tls",
    "libchacha",
    "chacha-x86_64",
    "poly1305-x86_64",
    "chacha20poly1305",
];

/// Whether this build speaks TLS.
pub const BUILT: bool = cfg!(feature = "tls");

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// Against the CA and the server name (the default).
    #[default]
    Full,
    /// Not at all: encryption without authentication, only when asked for by name.
    None,
}

impl Verify {
    /// The textual form used on the command line and the kernel command line.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(Self::Full),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::None => "none",
        }
    }
}

/// A TLS configuration as the user gave it: paths, not yet read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificates that may sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry; default: the server as written.
    pub hostname: Option<String>,
    pub verify: Verify,
}

/// Why TLS could not be set up, or a TLS session refused. Each is one line, and none leads to
/// plain text.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS was asked for, but this nbdroot was built without TLS")]
    NotBuilt,
    #[error("TLS needs the CA certificate that signed the server's (--tls-ca, rd.nbdroot.tls.ca=); to skip verifying the server, say so with --tls-verify=none or rd.nbdroot.tls.verify=none")]
    NoCa,
    #[error("a TLS client certificate needs its key too (--tls-key, rd.nbdroot.tls.key=)")]
    CertWithoutKey,
    #[error("a TLS client key needs its certificate too (--tls-cert, rd.nbdroot.tls.cert=)")]
    KeyWithoutCert,
    #[error("cannot read the TLS {what} {}: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the TLS {what} {} is unusable: {reason}", .path.display())]
    Credential {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("\"{name}\" is not a name or address a TLS certificate can be checked against")]
    BadName { name: String },
    #[error("TLS over a Unix socket is not supported")]
    NotTcp,
    #[error("the server's TLS certificate was refused: {reason}")]
    Certificate { reason: String },
    #[error("TLS handshake failed: {reason}")]
    Handshake { reason: String },
    #[error("the server refused nbdroot's TLS offer before answering it: it accepts none of its cipher suites (ChaCha20-Poly1305 with TLS 1.3 or 1.2, ECDHE on X25519 or P-256); allow CHACHA20-POLY1305 in its TLS priorities")]
    NoSharedSuite,
    #[error("the server closed the connection right after the TLS handshake: it probably wants a client certificate (--tls-cert and --tls-key, rd.nbdroot.tls.cert= and .key=)")]
    ClosedWithoutClientCert,
    #[error("TLS connection failed: {0}")]
    Io(io::Error),
    #[error("{bytes} bytes of TLS data arrived after the handshake and before the kernel took the socket; not handing over a broken stream")]
    Leftover { bytes: usize },
    #[error("the kernel has no TLS support (setting TCP_ULP \"tls\": {errno}): load the tls module (CONFIG_TLS)")]
    NoKernelTls { errno: nix::errno::Errno },
    #[error("the kernel cannot use {cipher} for kernel TLS ({direction}: {errno}): load its crypto modules ({modules})")]
    NoCipher {
        cipher: &'static str,
        direction: &'static str,
        errno: nix::errno::Errno,
        modules: &'static str,
    },
    #[error("cannot hand the TLS session to the kernel: {reason}")]
    Extract { reason: String },
}

impl TlsError {
    /// Whether trying again could help: the network, not the configuration or the server's
    /// answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, TlsError::Io(_))
    }
}

/// The server name a session verifies: the `hostname` setting, else the host as written.
pub fn server_name<'a>(settings: &'a TlsSettings, host: &'a str) -> &'a str {
    settings.hostname.as_deref().unwrap_or(host)
}

/// Whether `name` could be a DNS name or an IP address (brackets allowed around IPv6): a
/// syntax check for the command line, before the TLS library's own.
pub fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_has_two_written_forms() {
        for v in [Verify::Full, Verify::None] {
            assert_eq!(Verify::parse(v.as_str()), Some(v));
        }
        assert_eq!(Verify::parse("off"), None);
        assert_eq!(Verify::default(), Verify::Full);
    }

    #[test]
    fn names_are_checked_for_syntax() {
        for ok in ["nbd.example.net", "10.0.2.2", "[fd00::1]", "fd00::1", "a_b"] {
            assert!(plausible_name(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "%", "é"] {
            assert!(!plausible_name(bad), "{bad}");
        }
    }

    /// A build without the feature refuses every TLS configuration with the one line.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_is_refused() {
        let err = Client::new(&TlsSettings::default(), "srv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "TLS was asked for, but this nbdroot was built without TLS"
        );
    }
}
