//! DHCPv4: get a lease for one interface ([`acquire`]), configure the interface from it
//! ([`apply`]) and record it for the root's scripts ([`write_lease`]).
//!
//! The lease is not renewed: it only has to outlive the boot, after which the root's own
//! network stack takes over (as with the kernel's `ip=dhcp`).

pub mod client;
pub mod lease;
pub mod packet;
pub mod socket;

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use client::{ClientError, DhcpPolicy, Transport};
use lease::parse_mac;
pub use lease::{lease_env, resolv_conf, Lease};
use socket::{DhcpSocket, SocketConfig, SocketError};

use crate::net::link::LinkChange;
use crate::net::rtnl::{self, Rtnl};
use crate::netlink::NetlinkError;

/// The smallest MTU every IPv4 host must handle (RFC 791); a smaller one from the network is
/// ignored rather than breaking the link.
const MIN_MTU: u16 = 576;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP on {iface}: cannot read its MAC address from {path}: {source}")]
    ReadMac {
        iface: String,
        path: String,
        source: io::Error,
    },
    #[error("DHCP on {iface}: MAC address {value:?} is not an Ethernet address")]
    BadMac { iface: String, value: String },
    #[error("DHCP on {iface}: {source}")]
    Socket { iface: String, source: SocketError },
    #[error("DHCP on {iface}: {source}")]
    Exchange { iface: String, source: ClientError },
    #[error("DHCP on {iface}: server {server} sent subnet mask {mask}, which is not a prefix")]
    BadMask {
        iface: String,
        server: Ipv4Addr,
        mask: Ipv4Addr,
    },
    /// `step` names the request and its value, e.g. "adding the address 10.0.2.15/24".
    #[error("DHCP on {iface}: {step}: {source}")]
    Rtnl {
        iface: String,
        step: String,
        source: NetlinkError,
    },
    #[error("DHCP on {iface}: cannot write {path}: {source}")]
    Write {
        iface: String,
        path: String,
        source: io::Error,
    },
}

/// Brings `iface` (ifindex `index`) up and runs DHCP on it until a server acknowledges a
/// lease, within `policy.total`.
pub fn acquire(iface: &str, index: u32, policy: &DhcpPolicy) -> Result<Lease, DhcpError> {
    let mac = read_mac(iface)?;
    Rtnl::open()
        .and_then(|mut r| r.link_up(index))
        .map_err(|source| DhcpError::Rtnl {
            iface: iface.to_string(),
            step: format!("bringing up the link (index {index})"),
            source,
        })?;
    let mut sock =
        DhcpSocket::open(iface, &SocketConfig::default()).map_err(|source| DhcpError::Socket {
            iface: iface.to_string(),
            source,
        })?;
    let ack =
        client::run(&mut sock, mac, policy, seed(&mac)).map_err(|source| DhcpError::Exchange {
            iface: iface.to_string(),
            source,
        })?;
    let lease = Lease::from_ack(&ack).map_err(|mask| DhcpError::BadMask {
        iface: iface.to_string(),
        server: ack.server_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
        mask,
    })?;
    log::info!(
        "{iface}: DHCP lease {}/{} from {}{}",
        lease.address,
        lease.prefix_len,
        lease.server_id,
        lease
            .routers
            .first()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default()
    );
    Ok(lease)
}

/// A different seed per client and per boot: the MAC, the time and std's random keys.
fn seed(mac: &[u8; 6]) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(mac);
    if let Ok(t) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

fn read_mac(iface: &str) -> Result<[u8; 6], DhcpError> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = fs::read_to_string(&path).map_err(|source| DhcpError::ReadMac {
        iface: iface.to_string(),
        path,
        source,
    })?;
    parse_mac(text.trim()).ok_or_else(|| DhcpError::BadMac {
        iface: iface.to_string(),
        value: text.trim().to_string(),
    })
}

/// Configures `iface` (ifindex `index`) from `lease`: MTU, address, routes, hostname, and
/// name servers appended to /etc/resolv.conf.
pub fn apply(iface: &str, index: u32, lease: &Lease) -> Result<(), DhcpError> {
    let err = |step: String| {
        move |source| DhcpError::Rtnl {
            iface: iface.to_string(),
            step,
            source,
        }
    };
    let mut rtnl = Rtnl::open().map_err(err("opening rtnetlink".into()))?;
    match lease.mtu {
        Some(mtu) if mtu >= MIN_MTU => {
            let change = LinkChange {
                mtu: Some(mtu),
                ..LinkChange::default()
            };
            rtnl.set_link(index, &change)
                .map_err(err(format!("setting the MTU to {mtu}")))?
        }
        Some(mtu) => log::warn!("{iface}: ignoring the DHCP MTU {mtu} (below {MIN_MTU})"),
        None => {}
    }
    let (addr, len) = (lease.address, lease.prefix_len);
    match lease.broadcast {
        Some(brd) => rtnl.add_address_with_broadcast(index, addr, len, brd),
        None => rtnl.add_address(index, addr, len),
    }
    .map_err(err(format!("adding the address {addr}/{len}")))?;
    for (dst, plen, gw) in lease.routes() {
        let on_link = gw.is_none_or(|g| rtnl::same_subnet(addr, len, g));
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        rtnl.add_route(index, dst, plen, gw, on_link)
            .map_err(err(format!("adding the route {dst}/{plen}{via}")))?;
    }
    if let Some(name) = &lease.hostname {
        if let Err(e) = nix::unistd::sethostname(name) {
            log::warn!("cannot set the hostname to {name:?} from DHCP: {e}");
        }
    }
    if !lease.dns.is_empty() || lease.domain.is_some() {
        let path = Path::new("/etc/resolv.conf");
        // Appended, like net::write_resolv_conf: other interfaces and nameserver= add theirs.
        fs::create_dir_all("/etc")
            .and_then(|()| fs::OpenOptions::new().create(true).append(true).open(path))
            .and_then(|mut f| f.write_all(resolv_conf(iface, lease).as_bytes()))
            .map_err(|source| DhcpError::Write {
                iface: iface.to_string(),
                path: path.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Writes `dir/dhcp-<iface>.env` (see [`lease_env`]), creating `dir`; returns its path.
pub fn write_lease(dir: &Path, iface: &str, lease: &Lease) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("dhcp-{iface}.env"));
    // Readers never see half a file.
    let tmp = dir.join(format!(".dhcp-{iface}.env.tmp"));
    fs::write(&tmp, lease_env(lease))?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A hostile root-path must come back from `. file` byte for byte, and run nothing.
    #[test]
    fn hostile_values_cannot_break_out_of_the_quotes() {
        let dir = std::env::temp_dir().join(format!("nbdroot-dhcp-env-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let canary = dir.join("pwned");
        let evil = format!(
            "nbd:x:y'; touch {c}; '$(touch {c})`touch {c}`\nnew_ip_address=6.6.6.6\n'\\''\"\\",
            c = canary.display()
        );
        let l = Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            routers: vec![],
            dns: vec![],
            hostname: Some("it's".into()),
            domain: None,
            mtu: None,
            root_path: Some(evil.clone()),
            server_id: Ipv4Addr::new(10, 0, 2, 2),
            next_server: None,
            broadcast: None,
            lease_secs: None,
            classless_routes: vec![],
        };
        let path = write_lease(&dir.join("run"), "eth0", &l).unwrap();
        assert_eq!(path, dir.join("run/dhcp-eth0.env"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#". "$1" && printf '%s\0%s\0%s' "$new_root_path" "$new_ip_address" "$new_host_name""#)
            .arg("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = got.split('\0').collect();
        assert_eq!(fields, [evil.as_str(), "10.0.2.15", "it's"]);
        assert!(!canary.exists(), "a command in the value ran");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_interface_the_step_and_the_value() {
        let e = DhcpError::Exchange {
            iface: "eth0".into(),
            source: ClientError::NoOffer {
                tries: 4,
                secs: 15.0,
            },
        };
        assert_eq!(
            e.to_string(),
            "DHCP on eth0: no offer after 4 tries in 15.0 s"
        );
        let e = DhcpError::Exchange {
            iface: "eth0".into(),
            source: ClientError::Nak {
                server: Ipv4Addr::new(10, 0, 2, 2),
                message: "address not available".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "DHCP on eth0: server 10.0.2.2 declined (NAK): address not available"
        );
        let e = acquire("nosuch0", 999, &DhcpPolicy::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DHCP on nosuch0: cannot read its MAC address from /sys/class/net/nosuch0/address: \
             No such file or directory (os error 2)"
        );
    }
}
