//! Finding the network interface to configure, and waiting for it (bounded).

use std::fs;
use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cmdline::mac::parse_mac;
use crate::plan::Mac;

const POLL: Duration = Duration::from_millis(20);

/// The interfaces the kernel knows, loopback excluded, sorted by name.
pub fn list() -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    Ok(names)
}

/// The ifindex of `name`, if it exists. Any failure (no such interface, a name with a NUL
/// byte) means "not there (yet)": the callers poll until a bound.
pub fn index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Waits until `name` exists (or, with `None`, until any interface does) and returns its name
/// and index. `None` after `bound`.
pub fn wait_for(name: Option<&str>, bound: Duration) -> Option<(String, u32)> {
    let start = Instant::now();
    loop {
        let found = match name {
            Some(n) => index(n).map(|i| (n.to_string(), i)),
            None => list()
                .unwrap_or_default()
                .into_iter()
                .find_map(|n| index(&n).map(|i| (n, i))),
        };
        if found.is_some() || start.elapsed() >= bound {
            return found;
        }
        sleep(POLL);
    }
}

/// The interface whose hardware address is `mac`.
pub fn by_mac(mac: Mac) -> Option<String> {
    list().ok()?.into_iter().find(|n| {
        fs::read_to_string(format!("/sys/class/net/{n}/address"))
            .ok()
            .and_then(|a| parse_mac(a.trim()))
            == Some(mac)
    })
}

/// Whether `name` has a link now.
pub fn has_carrier(name: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|s| s.trim() == "1")
}

/// Waits until `name` reports a carrier. False after `bound`.
pub fn wait_for_carrier(name: &str, bound: Duration) -> bool {
    let start = Instant::now();
    loop {
        if has_carrier(name) {
            return true;
        }
        if start.elapsed() >= bound {
            return false;
        }
        sleep(POLL);
    }
}
