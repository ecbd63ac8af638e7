//! The gzip member the kernel unpacks an initramfs from (RFC 1952): a fixed header, the
//! deflate stream, the CRC-32 and length of the input. The image is built in memory anyway,
//! so one call compresses it; no streaming layer, and a 1 KiB CRC table rather than a
//! 16 KiB one.

/// `data` as a gzip member, at miniz's best ratio.
pub fn compress(data: &[u8]) -> Vec<u8> {
    // ID1 ID2, deflate, no flags, no mtime (reproducible images), best compression, Unix.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 10));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320), one table lookup a byte.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn flate2_reads_back_what_was_written() {
        for data in [
            Vec::new(),
            b"a".to_vec(),
            (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ] {
            let gz = compress(&data);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
