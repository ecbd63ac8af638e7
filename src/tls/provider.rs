//! The crypto nbdroot offers, spelled out instead of rustls' `default_provider()`, which
//! names every suite ring has and so keeps all of their code in the binary whatever a config
//! then picks. Everything here is what a kernel-TLS socket of Linux 6.1 can carry.

use rustls::crypto::ring::{cipher_suite, kx_group, sign};
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use std::sync::Arc;
use webpki::ring as alg;

/// The cipher suites, in the order offered. A record that is not application data (a TLS 1.3
/// KeyUpdate, an alert) kills a kernel-TLS socket held by nbd, and GnuTLS servers (nbdkit,
/// qemu-nbd, nbd-server) send a KeyUpdate by themselves after about 2^24 records in TLS 1.3,
/// except with ChaCha20-Poly1305, which GnuTLS never rekeys. So ChaCha20 comes first; AES-GCM
/// follows for servers that choose themselves (nbd-server's %SERVER_PRECEDENCE) or have no
/// ChaCha20, and a connection killed by a KeyUpdate is replaced by the supervisor like any
/// dead connection. TLS 1.2 (no KeyUpdate at all) remains for servers without 1.3.
pub(super) fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        // X25519 is what GnuTLS and OpenSSL pick first; P-256 for servers restricted to the
        // NIST curves. P-384 key exchange is left out: every GnuTLS and OpenSSL server takes
        // one of these two (P-384 certificates still verify, below).
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        signature_verification_algorithms: ALGORITHMS,
        secure_random: &Random,
        key_provider: &Keys,
    }
}

/// Certificate and handshake signatures: ECDSA on P-256 and P-384, Ed25519, RSA (PKCS#1 v1.5
/// and PSS, 2048 to 8192 bits), which covers what certtool, openssl and the usual CAs make.
pub(super) static ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
    ],
    mapping: &[
        // TLS 1.2 does not tie the curve to the scheme; TLS 1.3 does.
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (SignatureScheme::ED25519, &[alg::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[alg::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[alg::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[alg::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// Randomness from the kernel (getrandom(2); it blocks only before the pool is first
/// seeded, which an initramfs that reached the network is long past).
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, mut buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        while !buf.is_empty() {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
            let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
            match n {
                n if n > 0 => buf = &mut buf[n as usize..],
                _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
                _ => return Err(GetRandomFailed),
            }
        }
        Ok(())
    }
}

/// Client keys: RSA, ECDSA (P-256, P-384) and Ed25519, in PKCS#8, PKCS#1 or SEC1 form.
#[derive(Debug)]
struct Keys;

impl KeyProvider for Keys {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        sign::any_supported_type(&key)
    }
}
