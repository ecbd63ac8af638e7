//! nbd device names, and what sysfs says about them.

use std::fs;
use std::path::Path;

/// `3` from `/dev/nbd3`, `nbd3` or `3`. Partitions (`nbd3p1`) are not devices.
pub fn parse_index(name: &str) -> Option<u32> {
    let n = name.strip_prefix("/dev/").unwrap_or(name);
    let n = n.strip_prefix("nbd").unwrap_or(n);
    n.parse().ok()
}

/// Whether /dev/nbd<index> is attached: the driver publishes `pid` while it is.
/// `None` when there is no such device.
pub fn is_connected(index: u32) -> Option<bool> {
    let dir = format!("/sys/block/nbd{index}");
    if !Path::new(&dir).exists() {
        return None;
    }
    Some(Path::new(&format!("{dir}/pid")).exists())
}

/// The lowest-numbered nbd device that is neither attached nor sized.
pub fn find_free() -> Option<u32> {
    fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("nbd")?.parse().ok())
        })
        .filter(|&i| {
            is_connected(i) == Some(false)
                && fs::read_to_string(format!("/sys/block/nbd{i}/size"))
                    .is_ok_and(|s| s.trim() == "0")
        })
        // The least, without sorting: a sort would be code of its own for a dozen devices.
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes() {
        assert_eq!(parse_index("/dev/nbd3"), Some(3));
        assert_eq!(parse_index("nbd12"), Some(12));
        assert_eq!(parse_index("7"), Some(7));
        assert_eq!(parse_index("/dev/nbd0p1"), None);
        assert_eq!(parse_index("/dev/sda"), None);
    }
}
