//! Just enough ELF to tell whether a binary can run as /init: a static executable has no
//! PT_INTERP program header.

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

/// `None`: not a 64-bit little-endian x86-64 ELF file. `Some(None)`: static.
/// `Some(Some(path))`: dynamically linked against the interpreter `path`.
pub fn interpreter(file: &[u8]) -> Option<Option<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(file.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(file.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(file.get(o..o + 8)?.try_into().ok()?));
    if file.get(..6)? != b"\x7fELF\x02\x01" || u16_at(18)? != EM_X86_64 {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == PT_INTERP {
            let off = usize::try_from(u64_at(ph + 8)?).ok()?;
            let len = usize::try_from(u64_at(ph + 32)?).ok()?;
            let raw = file.get(off..off.checked_add(len)?)?;
            let path = raw.split(|&b| b == 0).next().unwrap_or(raw);
            return Some(Some(String::from_utf8_lossy(path).into_owned()));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic() {
        let dynamic = std::fs::read("/bin/true").unwrap();
        let interp = interpreter(&dynamic).unwrap().unwrap();
        assert!(interp.contains("ld-linux"), "{interp}");
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(interpreter(&[]), None);
        let mut fake_static = vec![0u8; 64];
        fake_static[..6].copy_from_slice(b"\x7fELF\x02\x01");
        fake_static[18] = 62;
        assert_eq!(interpreter(&fake_static), Some(None));
    }
}
