//! The TLS client: credentials read once (before switch_root takes the initramfs away), then
//! a session per connection over a plain TCP stream, after NBD_OPT_STARTTLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, StreamOwned};

use super::provider::provider;
use super::verify::Verifier;
use super::{TlsError, TlsSettings, Verify};

/// A loaded TLS configuration for one server name.
#[derive(Debug, Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// What it was made from, with the name to verify filled in (for the supervisor, which
    /// reads the credentials again in its own process before the initramfs goes).
    settings: TlsSettings,
}

/// A TLS session over TCP, in userspace (list, info, `Client`), until
/// [`into_kernel`](Session::into_kernel) hands it to kernel TLS.
#[derive(Debug)]
pub struct Session {
    pub(super) stream: StreamOwned<ClientConnection, TcpStream>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn unusable(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Credential {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(what, path, e))?;
    if certs.is_empty() {
        return Err(unusable(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl Client {
    /// Reads the credentials and builds the configuration for a server written as `host`.
    pub fn new(settings: &TlsSettings, host: &str) -> Result<Self, TlsError> {
        let name = super::server_name(settings, host);
        let resolved = TlsSettings {
            hostname: Some(name.to_string()),
            ..settings.clone()
        };
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| TlsError::BadName {
                name: name.to_string(),
            })?
            .to_owned();
        let roots = match (settings.verify, &settings.ca) {
            (Verify::Full, None) => return Err(TlsError::NoCa),
            (Verify::Full, Some(ca)) => Some(
                certificates("CA certificate", ca)?
                    .iter()
                    .map(|c| {
                        webpki::anchor_from_trusted_cert(c)
                            .map(|a| a.to_owned())
                            .map_err(|e| unusable("CA certificate", ca, e))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            (Verify::None, _) => None,
        };
        let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Handshake {
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier(roots)));
        let mut config = match (&settings.cert, &settings.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(TlsError::CertWithoutKey),
            (None, Some(_)) => return Err(TlsError::KeyWithoutCert),
            (Some(cert), Some(key)) => {
                let chain = certificates("client certificate", cert)?;
                let pem = read("client key", key)?;
                let der = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| unusable("client key", key, e))?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| unusable("client key", key, e))?
            }
        };
        // Kernel TLS takes the keys, and nothing after the handshake may be a record rustls
        // would have to handle: no resumption tickets to keep.
        config.enable_secret_extraction = true;
        config.resumption = Resumption::disabled();
        Ok(Client {
            config: Arc::new(config),
            name,
            settings: resolved,
        })
    }

    /// The settings it was made from, the name to verify included.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Runs the TLS handshake over `tcp` (just after the server ACKed NBD_OPT_STARTTLS). The
    /// socket's timeouts bound it.
    pub fn handshake(&self, mut tcp: TcpStream) -> Result<Session, TlsError> {
        let mut conn =
            ClientConnection::new(self.config.clone(), self.name.clone()).map_err(|e| {
                TlsError::Handshake {
                    reason: e.to_string(),
                }
            })?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                let hello = conn.negotiated_cipher_suite().is_some();
                return Err(handshake_error(e, &self.name, hello));
            }
        }
        // TLS 1.2: the client's Finished may still be queued.
        while conn.wants_write() {
            conn.write_tls(&mut tcp).map_err(TlsError::Io)?;
        }
        Ok(Session {
            stream: StreamOwned::new(conn, tcp),
        })
    }
}

/// One line for a failed handshake: what was wrong with the certificate, or what the server
/// said, or the network. `hello`: the server had answered with its ServerHello, so a refusal
/// is about the client's certificate, not about the cipher suites.
fn handshake_error(e: io::Error, name: &ServerName<'_>, hello: bool) -> TlsError {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        // GnuTLS servers (qemu-nbd) hang up on a ClientHello they share no suite with.
        if e.kind() == io::ErrorKind::UnexpectedEof && !hello {
            return TlsError::NoSharedSuite;
        }
        return TlsError::Io(e);
    };
    let name = name.to_str();
    let certificate = |reason: String| TlsError::Certificate { reason };
    match inner {
        rustls::Error::InvalidCertificate(c) => certificate(match c {
            CertificateError::UnknownIssuer => {
                "it is not signed by the given CA (unknown issuer)".to_string()
            }
            CertificateError::BadSignature => {
                "it is not signed by the given CA (its signature does not verify)".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("it is not valid for the name \"{name}\" (set the name to verify with --tls-hostname or rd.nbdroot.tls.hostname=)")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired (or this machine's clock is wrong)".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet (or this machine's clock is wrong)".to_string()
            }
            other => format!("{other:?}"),
        }),
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity,
        ) if !hello => TlsError::NoSharedSuite,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
        | rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) => {
            TlsError::Handshake {
                reason: format!(
                    "the server refused the session ({inner}); it may want a client certificate (--tls-cert and --tls-key, rd.nbdroot.tls.cert= and .key=)"
                ),
            }
        }
        other => TlsError::Handshake {
            reason: other.to_string(),
        },
    }
}

impl Session {
    /// The TCP socket under the session.
    pub fn tcp(&self) -> &TcpStream {
        &self.stream.sock
    }
}

impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl AsRawFd for Session {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.sock.as_raw_fd()
    }
}
