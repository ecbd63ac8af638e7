//! The TLS client: credentials read once (before switch_root takes the initramfs away), then
//! a session per connection over a plain TCP stream, after NBD_OPT_STARTTLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    RootCertStore, SignatureScheme, StreamOwned,
};

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

/// The cipher suites, in the order offered. A record that is not application data (a TLS 1.3
/// KeyUpdate, an alert) kills a kernel-TLS socket held by nbd, and GnuTLS servers (nbdkit,
/// qemu-nbd, nbd-server) send a KeyUpdate by themselves after about 2^24 records in TLS 1.3,
/// except with ChaCha20-Poly1305, which GnuTLS never rekeys. So TLS 1.3 ChaCha20 comes
/// first; the AES-GCM suites follow for servers that choose themselves (nbd-server's
/// %SERVER_PRECEDENCE), and a connection killed by a KeyUpdate is replaced by the supervisor
/// like any dead connection. TLS 1.2 (no KeyUpdate at all) remains for servers without 1.3.
/// Every suite here maps onto a kernel-TLS cipher of Linux 6.1.
fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..default_provider()
    }
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
        let provider = Arc::new(provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Handshake {
                reason: e.to_string(),
            })?;
        let builder = match (settings.verify, &settings.ca) {
            (Verify::Full, None) => return Err(TlsError::NoCa),
            (Verify::Full, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates("CA certificate", ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| unusable("CA certificate", ca, e))?;
                }
                let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| unusable("CA certificate", ca, e))?;
                builder.with_webpki_verifier(verifier)
            }
            (Verify::None, _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        };
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
                return Err(handshake_error(e, &self.name));
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
/// said, or the network.
fn handshake_error(e: io::Error, name: &ServerName<'_>) -> TlsError {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
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

/// Accepts any certificate: only with `verify=none`, which the user must write. The
/// signatures of the handshake are still checked, so the session is encrypted, just not
/// authenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
