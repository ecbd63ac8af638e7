//! Finding the network interface to configure, and waiting for it (bounded).

use std::fs;
use std::io;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cmdline::mac::parse_mac;
use crate::plan::Mac;

const POLL: Duration = Duration::from_millis(20);

/// udev's database: an interface has its entry (`n<ifindex>`) once udev has processed it.
const UDEV_DATA: &str = "/run/udev/data";
/// The property udev writes into the entry before it renames an interface, and drops when the
/// rename is done: until then the name is about to change.
const RENAMING: &str = "E:ID_RENAMING=1";
/// `name_assign_type` of an interface renamed from user space (the kernel's NET_NAME_RENAMED).
const NAME_RENAMED: &str = "4";

/// Which interfaces are ready to be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every interface the kernel lists: in nbdroot's own initramfs nothing else renames them.
    Present,
    /// Only those udev has finished with: under a generator's udev an interface may still be
    /// renamed, which fails once it is up (and the root's configuration names the new name).
    UdevInitialised,
}

impl Readiness {
    /// Whether the interface `name` (with `index`) is ready.
    pub fn ready(self, name: &str, index: u32) -> bool {
        match self {
            Readiness::Present => true,
            // Renamed already: udev renames an interface once, in its "add" event, so the name
            // is final even while udev still finishes that event (a second or more under load,
            // in which the boot would otherwise wait).
            Readiness::UdevInitialised => {
                renamed(name)
                    || fs::read_to_string(Path::new(UDEV_DATA).join(format!("n{index}")))
                        .is_ok_and(|entry| udev_done(&entry))
            }
        }
    }
}

/// Whether the kernel says user space has renamed `name`.
fn renamed(name: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{name}/name_assign_type"))
        .is_ok_and(|t| t.trim() == NAME_RENAMED)
}

/// Whether udev's database entry `entry` says udev has finished with the interface: it is
/// there, and not in the middle of a rename.
fn udev_done(entry: &str) -> bool {
    !entry.lines().any(|l| l.trim_end() == RENAMING)
}

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

/// The interfaces that are `ready` now, with their indexes, sorted by name.
pub fn ready(ready: Readiness) -> Vec<(String, u32)> {
    list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| index(&n).map(|i| (n, i)))
        .filter(|(n, i)| ready.ready(n, *i))
        .collect()
}

/// Waits until `name` exists and is `ready` (or, with `None`, until any interface is) and
/// returns its name and index. `None` after `bound`.
pub fn wait_for(name: Option<&str>, bound: Duration, ready: Readiness) -> Option<(String, u32)> {
    let start = Instant::now();
    loop {
        let found = match name {
            Some(n) => index(n)
                .filter(|i| ready.ready(n, *i))
                .map(|i| (n.to_string(), i)),
            None => self::ready(ready).into_iter().next(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_being_renamed_is_not_ready() {
        assert!(udev_done(
            "I:38863989\nE:ID_NET_LINK_FILE=/usr/lib/systemd/network/99-default.link\n"
        ));
        assert!(!udev_done(
            "I:38863989\nE:ID_RENAMING=1\nE:ID_NET_NAME=ens2\n"
        ));
        assert!(udev_done("I:1\nE:ID_RENAMING=0\n"));
    }
}
