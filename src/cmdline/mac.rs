//! MAC addresses as boot parameters write them: `52:54:00:12:34:56`, `52-54-00-12-34-56`, and
//! `BOOTIF=01-52-54-00-12-34-56` (PXE's form, with the hardware type first).

use crate::plan::Mac;

/// Six hex bytes separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(Mac(mac))
}

/// `BOOTIF=`: `01-aa-bb-cc-dd-ee-ff` (Ethernet hardware type 01 first), or a plain MAC.
pub fn parse_bootif(s: &str) -> Option<Mac> {
    s.strip_prefix("01-")
        .and_then(parse_mac)
        .or_else(|| parse_mac(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let m = Mac([0x52, 0x54, 0, 0x12, 0x34, 0xab]);
        assert_eq!(parse_mac("52:54:00:12:34:AB"), Some(m));
        assert_eq!(parse_mac("52-54-00-12-34-ab"), Some(m));
        assert_eq!(parse_bootif("01-52-54-00-12-34-ab"), Some(m));
        assert_eq!(parse_bootif("52:54:00:12:34:ab"), Some(m));
        assert_eq!(m.to_string(), "52:54:00:12:34:ab");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:ab:cd",
            "5:54:00:12:34:ab",
            "zz:54:00:12:34:ab",
            "01-52-54",
        ] {
            assert_eq!(parse_bootif(bad), None, "{bad}");
        }
    }
}
