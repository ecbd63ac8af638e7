//! The server's certificate: checked with webpki against the given CA and the name, or not
//! at all when `verify=none` was written. Handshake signatures are checked either way.
//!
//! rustls' `WebPkiServerVerifier` would do the same and also carry certificate revocation
//! lists, which nbdroot has no way to be given; this is the same check without them.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::provider::ALGORITHMS;

/// The CA's trust anchors, or `None`: accept any certificate (`verify=none`).
#[derive(Debug)]
pub(super) struct Verifier(pub(super) Option<Vec<TrustAnchor<'static>>>);

/// webpki's answer in rustls' terms, so that [`super::client`] words every refusal the same.
fn refused(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    rustls::Error::InvalidCertificate(match e {
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::CertNotValidForName(_) => CertificateError::NotValidForName,
        // A validity period that ends before it starts is as good as expired.
        W::CertExpired { .. } | W::InvalidCertValidity => CertificateError::Expired,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        #[allow(deprecated)]
        W::UnsupportedSignatureAlgorithm
        | W::UnsupportedSignatureAlgorithmForPublicKey
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            CertificateError::UnsupportedSignatureAlgorithm
        }
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        other => CertificateError::Other(rustls::OtherError(std::sync::Arc::new(other))),
    })
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.0 else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(refused)?;
        cert.verify_for_usage(
            ALGORITHMS.all,
            roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(refused)?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(refused)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &ALGORITHMS)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &ALGORITHMS)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ALGORITHMS.supported_schemes()
    }
}
