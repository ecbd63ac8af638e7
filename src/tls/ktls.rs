//! Handing a TLS session to kernel TLS: the session keys of both directions go into the
//! socket (`TCP_ULP "tls"`, then `SOL_TLS` `TLS_TX` and `TLS_RX`), after which plain `read`
//! and `write` on it carry TLS records, and the nbd driver can use it like any TCP socket.
//!
//! It is only sound at a quiet point: nothing rustls holds (unread plaintext, records not yet
//! processed or not yet sent) may be lost, and nothing unread may wait in the socket. NBD has
//! such a point: after the NBD_OPT_GO ACK the server says nothing until the first request.
//! Both are checked, and a stream that fails the check is refused, not handed over.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, StreamOwned};

use super::client::Session;
use super::TlsError;

/// A kernel-TLS cipher: the name in messages and the crypto modules it needs (Linux 6.1, x86-64,
/// in modules.dep order; `src/initramfs` puts them in the image, /init loads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    /// The modules the kernel's `crypto_alloc_aead` asks for, which nothing in an initramfs
    /// without modprobe would load.
    pub fn modules(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => "gcm, ghash, ctr, aesni-intel",
            Cipher::Chacha20Poly1305 => "chacha20poly1305, chacha-x86_64, poly1305-x86_64",
        }
    }
}

/// The kernel's view of one direction: version, cipher, key material, record sequence.
fn crypto_info(
    version: u16,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> Result<(Cipher, sockopt::TlsCryptoInfo), TlsError> {
    let bad = |what: &str| TlsError::Extract {
        reason: format!("unexpected {what} length from rustls"),
    };
    let info = |cipher_type| libc::tls_crypto_info {
        version,
        cipher_type,
    };
    let rec_seq = seq.to_be_bytes();
    match secrets {
        // TLS 1.2 AES-256-GCM comes back as Aes128Gcm with a 32-byte key (rustls#1833): the
        // key length decides.
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let iv = iv.as_ref();
            let (salt, explicit) = iv.split_at(4);
            match key.as_ref().len() {
                16 => Ok((
                    Cipher::Aes128Gcm,
                    sockopt::TlsCryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
                        info: info(libc::TLS_CIPHER_AES_GCM_128),
                        iv: explicit.try_into().map_err(|_| bad("IV"))?,
                        key: key.as_ref().try_into().map_err(|_| bad("key"))?,
                        salt: salt.try_into().map_err(|_| bad("IV"))?,
                        rec_seq,
                    }),
                )),
                32 => Ok((
                    Cipher::Aes256Gcm,
                    sockopt::TlsCryptoInfo::Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256 {
                        info: info(libc::TLS_CIPHER_AES_GCM_256),
                        iv: explicit.try_into().map_err(|_| bad("IV"))?,
                        key: key.as_ref().try_into().map_err(|_| bad("key"))?,
                        salt: salt.try_into().map_err(|_| bad("IV"))?,
                        rec_seq,
                    }),
                )),
                _ => Err(bad("AES key")),
            }
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((
            Cipher::Chacha20Poly1305,
            sockopt::TlsCryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                iv: iv.as_ref().try_into().map_err(|_| bad("IV"))?,
                key: key.as_ref().try_into().map_err(|_| bad("key"))?,
                salt: [],
                rec_seq,
            }),
        )),
        _ => Err(TlsError::Extract {
            reason: "the negotiated cipher has no kernel TLS equivalent".to_string(),
        }),
    }
}

nix::ioctl_read_bad!(fionread, libc::FIONREAD, libc::c_int);

/// Bytes waiting unread in the socket's receive queue.
fn unread(tcp: &TcpStream) -> Result<usize, TlsError> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`; the
    // descriptor is open for the life of `tcp`.
    unsafe { fionread(tcp.as_raw_fd(), &mut n) }.map_err(|e| TlsError::Io(e.into()))?;
    Ok(n.max(0) as usize)
}

impl Session {
    /// Installs the session's keys into the socket for both directions and returns it: from
    /// here the kernel encrypts and decrypts, and the socket can go to the nbd driver. Call
    /// only at a quiet point (after NBD_OPT_GO); anything still in flight is an error.
    pub fn into_kernel(self) -> Result<TcpStream, TlsError> {
        let StreamOwned { mut conn, sock } = self.stream;
        let state = conn.process_new_packets().map_err(|e| TlsError::Extract {
            reason: e.to_string(),
        })?;
        let left = state.plaintext_bytes_to_read() + state.tls_bytes_to_write();
        let left = left + unread(&sock)?;
        if left > 0 {
            return Err(TlsError::Leftover { bytes: left });
        }
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => libc::TLS_1_3_VERSION,
            Some(ProtocolVersion::TLSv1_2) => libc::TLS_1_2_VERSION,
            other => {
                return Err(TlsError::Extract {
                    reason: format!("kernel TLS cannot take protocol {other:?}"),
                })
            }
        };
        let secrets = conn
            .dangerous_extract_secrets()
            .map_err(|e| TlsError::Extract {
                reason: e.to_string(),
            })?;
        let (cipher, tx) = crypto_info(version, secrets.tx.0, &secrets.tx.1)?;
        let (_, rx) = crypto_info(version, secrets.rx.0, &secrets.rx.1)?;
        setsockopt(&sock, sockopt::TcpUlp::default(), b"tls")
            .map_err(|errno| TlsError::NoKernelTls { errno })?;
        let no_cipher = |direction| {
            move |errno: Errno| TlsError::NoCipher {
                cipher: cipher.name(),
                direction,
                errno,
                modules: cipher.modules(),
            }
        };
        setsockopt(&sock, sockopt::TcpTlsTx, &tx).map_err(no_cipher("TLS_TX"))?;
        setsockopt(&sock, sockopt::TcpTlsRx, &rx).map_err(no_cipher("TLS_RX"))?;
        log::debug!(
            "kernel TLS: {} {}, sequence tx {} rx {}",
            if version == libc::TLS_1_3_VERSION {
                "TLS 1.3"
            } else {
                "TLS 1.2"
            },
            cipher.name(),
            secrets.tx.0,
            secrets.rx.0
        );
        Ok(sock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn iv() -> Iv {
        Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    }

    #[test]
    fn secrets_map_onto_the_kernel_structs() {
        let key = [0xab; 32];
        // AES-256-GCM: the first 4 bytes of the IV are the salt, the rest the explicit IV; the
        // sequence number is big-endian.
        let s = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from(key),
            iv: iv(),
        };
        let (cipher, info) = crypto_info(libc::TLS_1_3_VERSION, 0x0102, &s).unwrap();
        assert_eq!(cipher, Cipher::Aes256Gcm);
        let sockopt::TlsCryptoInfo::Aes256Gcm(i) = info else {
            panic!("{info:?}")
        };
        assert_eq!((i.info.version, i.info.cipher_type), (0x0304, 52));
        assert_eq!(i.salt, [1, 2, 3, 4]);
        assert_eq!(i.iv, [5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(i.key, key);
        assert_eq!(i.rec_seq, [0, 0, 0, 0, 0, 0, 1, 2]);

        // TLS 1.2 AES-256-GCM arrives as the 128 variant with a 32-byte key (rustls#1833).
        let s = ConnectionTrafficSecrets::Aes128Gcm {
            key: AeadKey::from(key),
            iv: iv(),
        };
        let (cipher, _) = crypto_info(libc::TLS_1_2_VERSION, 1, &s).unwrap();
        assert_eq!(cipher, Cipher::Aes256Gcm);

        // ChaCha20-Poly1305: the whole 12-byte IV, no salt.
        let s = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from(key),
            iv: iv(),
        };
        let (cipher, info) = crypto_info(libc::TLS_1_3_VERSION, 7, &s).unwrap();
        assert_eq!(cipher, Cipher::Chacha20Poly1305);
        let sockopt::TlsCryptoInfo::Chacha20Poly1305(i) = info else {
            panic!("{info:?}")
        };
        assert_eq!(i.info.cipher_type, 54);
        assert_eq!(i.iv, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(i.rec_seq, 7u64.to_be_bytes());
    }
}
