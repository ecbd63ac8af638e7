//! Bringing the network up for the root: interface names, static addresses of either family,
//! DHCPv4, DNS — links, addresses and routes over rtnetlink.

pub mod dhcp;
pub mod iface;
pub mod link;
pub mod rtnl;

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::netlink::NetlinkError;
use crate::plan::{IpConfig, Mac, NetPlan, StaticIp};
use crate::settings::Tuning;
use dhcp::{DhcpError, DhcpPolicy, Lease};
pub use iface::Readiness;
use link::LinkChange;

/// Where DHCP leases are written for the real root's network manager.
pub const LEASE_DIR: &str = "/run/nbdroot";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface appeared within {0} s")]
    NoInterface(u64),
    #[error(
        "udev did not finish with interface {names} within {secs} s (no entry in \
         /run/udev/data, or a rename under way): nbdroot configures only interfaces udev will \
         not rename any more"
    )]
    NotInitialised { names: String, secs: u64 },
    #[error("interface {name} did not appear within {secs} s (interfaces present: {present})")]
    InterfaceMissing {
        name: String,
        secs: u64,
        present: String,
    },
    #[error(
        "no interface has the MAC address {mac} given by {param} (interfaces present: {present})"
    )]
    NoSuchMac {
        param: &'static str,
        mac: Mac,
        present: String,
    },
    #[error("no link on {names} after {secs} s (cable or switch port down?)")]
    NoCarrier { names: String, secs: u64 },
    #[error("{step} on {iface}: {source}")]
    Rtnl {
        step: &'static str,
        iface: String,
        source: NetlinkError,
    },
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    #[error("no DHCP lease on any of {names}: {last}")]
    NoLease { names: String, last: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether the error is about an interface not there (or not ready) yet: one that a wait
    /// begun before the device coldplug ended may meet on a machine slow to load its drivers.
    pub fn interface_not_ready(&self) -> bool {
        matches!(
            self,
            NetError::NoInterface(_)
                | NetError::NotInitialised { .. }
                | NetError::InterfaceMissing { .. }
                | NetError::NoSuchMac { .. }
        )
    }
}

/// The outcome: the interfaces configured, and the DHCP lease the root may come from.
#[derive(Debug, Clone, Default)]
pub struct NetState {
    pub configured: Vec<String>,
    /// The first lease obtained, and its interface.
    pub lease: Option<(String, Lease)>,
}

fn rtnl_err(step: &'static str, iface: &str) -> impl FnOnce(NetlinkError) -> NetError {
    let iface = iface.to_string();
    move |source| NetError::Rtnl {
        step,
        iface,
        source,
    }
}

fn present() -> String {
    iface::list().unwrap_or_default().join(", ")
}

/// Configures the network as the plan says: renames, then each `ip=` (or DHCP on the
/// interfaces that get a link when there is none), then `nameserver=`.
pub fn bring_up(plan: &NetPlan, tuning: &Tuning, ready: Readiness) -> Result<NetState, NetError> {
    if iface::wait_for(None, tuning.link_timeout, ready).is_none() {
        return Err(not_ready(None, tuning.link_timeout, ready));
    }
    let mut rtnl = rtnl::Rtnl::open().map_err(rtnl_err("opening rtnetlink", "-"))?;
    if let Some(lo) = iface::index("lo") {
        rtnl.link_up(lo).map_err(rtnl_err("bringing up", "lo"))?;
    }
    for (name, mac) in &plan.ifnames {
        rename(&mut rtnl, name, *mac)?;
    }
    // The boot interface, when BOOTIF= or bootdev= names one.
    let boot_iface = match (&plan.bootdev, plan.bootif) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(mac)) => Some(iface::by_mac(mac).ok_or_else(|| NetError::NoSuchMac {
            param: "BOOTIF",
            mac,
            present: present(),
        })?),
        (None, None) => None,
    };

    let default = [IpConfig::Dhcp {
        device: None,
        mtu: None,
        mac: None,
    }];
    let configs = if plan.configs.is_empty() {
        &default[..]
    } else {
        &plan.configs[..]
    };
    let mut state = NetState::default();
    for config in configs {
        match config {
            IpConfig::Off => {}
            IpConfig::Static(s) => {
                let name = s.device.clone().or_else(|| boot_iface.clone());
                let (iface, index) = wait_iface(name.as_deref(), tuning.link_timeout, ready)?;
                configure_static(&mut rtnl, &iface, index, s, tuning.link_timeout)?;
                state.configured.push(iface);
            }
            IpConfig::Dhcp { device, mtu, mac } => {
                let name = device.clone().or_else(|| boot_iface.clone());
                let candidates = match name {
                    Some(n) => vec![wait_iface(Some(&n), tuning.link_timeout, ready)?],
                    None => iface::ready(ready),
                };
                let (iface, lease) = dhcp_any(&mut rtnl, &candidates, *mtu, *mac, tuning)?;
                state.configured.push(iface.clone());
                if state.lease.is_none() {
                    state.lease = Some((iface, lease));
                }
            }
        }
    }
    if !plan.nameservers.is_empty() {
        write_resolv_conf(&plan.nameservers, None)?;
    }
    // The root's own /etc is not ours to change: leave a copy in /run, which moves into the
    // root, for its network configuration to take over.
    if let Ok(text) = fs::read_to_string("/etc/resolv.conf") {
        let path = Path::new(LEASE_DIR).join("resolv.conf");
        let written = fs::create_dir_all(LEASE_DIR).and_then(|_| fs::write(&path, text));
        if let Err(e) = written {
            log::warn!("cannot write {}: {e}", path.display());
        }
    }
    Ok(state)
}

fn wait_iface(
    name: Option<&str>,
    bound: Duration,
    ready: Readiness,
) -> Result<(String, u32), NetError> {
    iface::wait_for(name, bound, ready).ok_or_else(|| not_ready(name, bound, ready))
}

/// The error for `name` (or any interface) not ready within `bound`.
fn not_ready(name: Option<&str>, bound: Duration, ready: Readiness) -> NetError {
    let secs = bound.as_secs();
    let exists = match name {
        Some(n) => iface::index(n).is_some(),
        None => !iface::list().unwrap_or_default().is_empty(),
    };
    match (name, exists && ready == Readiness::UdevInitialised) {
        (_, true) => NetError::NotInitialised {
            names: name.map_or_else(present, str::to_string),
            secs,
        },
        (Some(n), false) => NetError::InterfaceMissing {
            name: n.to_string(),
            secs,
            present: present(),
        },
        (None, false) => NetError::NoInterface(secs),
    }
}

/// `ifname=<name>:<mac>`: the interface with that MAC gets that name.
fn rename(rtnl: &mut rtnl::Rtnl, name: &str, mac: Mac) -> Result<(), NetError> {
    let current = iface::by_mac(mac).ok_or_else(|| NetError::NoSuchMac {
        param: "ifname",
        mac,
        present: present(),
    })?;
    if current == name {
        return Ok(());
    }
    let index = iface::index(&current).unwrap_or(0);
    let change = LinkChange {
        name: Some(name),
        up: Some(false),
        ..LinkChange::default()
    };
    rtnl.set_link(index, &change)
        .map_err(rtnl_err("renaming", &current))?;
    log::info!("{current} renamed to {name} ({mac})");
    Ok(())
}

/// MTU and MAC first (some drivers only take them while down), then up.
fn link_up(
    rtnl: &mut rtnl::Rtnl,
    iface: &str,
    index: u32,
    mtu: Option<u16>,
    mac: Option<Mac>,
) -> Result<(), NetError> {
    if mtu.is_some() || mac.is_some() {
        let change = LinkChange {
            mtu,
            mac,
            ..LinkChange::default()
        };
        rtnl.set_link(index, &change)
            .map_err(rtnl_err("setting MTU/MAC", iface))?;
    }
    rtnl.link_up(index).map_err(rtnl_err("bringing up", iface))
}

fn configure_static(
    rtnl: &mut rtnl::Rtnl,
    iface: &str,
    index: u32,
    s: &StaticIp,
    link_timeout: Duration,
) -> Result<(), NetError> {
    link_up(rtnl, iface, index, s.mtu, s.mac)?;
    rtnl.add_ip(index, s.client, s.prefix_len)
        .map_err(rtnl_err("adding the address", iface))?;
    log::debug!("{iface} is up, waiting for its link");
    if !iface::wait_for_carrier(iface, link_timeout) {
        return Err(NetError::NoCarrier {
            names: iface.to_string(),
            secs: link_timeout.as_secs(),
        });
    }
    match (s.client, s.gateway) {
        (IpAddr::V4(c), Some(IpAddr::V4(gw))) => rtnl
            .add_default_route(index, gw, rtnl::same_subnet(c, s.prefix_len, gw))
            .map_err(rtnl_err("adding the default route", iface))?,
        (_, Some(IpAddr::V6(gw))) => rtnl
            .add_default_route6(index, gw)
            .map_err(rtnl_err("adding the default route", iface))?,
        _ => {}
    }
    if let Some(name) = &s.hostname {
        if let Err(e) = nix::unistd::sethostname(name) {
            log::warn!("cannot set the hostname to {name}: {e}");
        }
    }
    if !s.dns.is_empty() {
        write_resolv_conf(&s.dns, None)?;
    }
    log::info!(
        "{iface}: {}/{}{}",
        s.client,
        s.prefix_len,
        s.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
    );
    Ok(())
}

/// Brings the candidates up, waits for links, and asks for a lease on each interface with a
/// link in turn; the first lease wins.
fn dhcp_any(
    rtnl: &mut rtnl::Rtnl,
    candidates: &[(String, u32)],
    mtu: Option<u16>,
    mac: Option<Mac>,
    tuning: &Tuning,
) -> Result<(String, Lease), NetError> {
    for (iface, index) in candidates {
        link_up(rtnl, iface, *index, mtu, mac)?;
    }
    let names = candidates
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let start = Instant::now();
    let mut linked: Vec<&(String, u32)> = Vec::new();
    while linked.is_empty() {
        linked = candidates
            .iter()
            .filter(|(n, _)| iface::has_carrier(n))
            .collect();
        if linked.is_empty() {
            if start.elapsed() >= tuning.link_timeout {
                return Err(NetError::NoCarrier {
                    names,
                    secs: tuning.link_timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let policy = DhcpPolicy {
        total: tuning.dhcp_timeout,
        ..DhcpPolicy::default()
    };
    let mut last = None;
    for (iface, index) in linked {
        match dhcp::acquire(iface, *index, &policy) {
            Ok(mut lease) => {
                if mtu.is_some() {
                    // An MTU on the command line wins over the server's.
                    lease.mtu = None;
                }
                dhcp::apply(iface, *index, &lease)?;
                let path = Path::new(LEASE_DIR);
                if let Err(e) = dhcp::write_lease(path, iface, &lease) {
                    log::warn!("cannot write the lease of {iface} to {LEASE_DIR}: {e}");
                }
                log::info!(
                    "{iface}: {}/{} from DHCP server {}",
                    lease.address,
                    lease.prefix_len,
                    lease.server_id
                );
                return Ok((iface.clone(), lease));
            }
            Err(e) => {
                log::warn!("{e}");
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) if candidates.len() == 1 => Err(e.into()),
        last => Err(NetError::NoLease {
            names,
            last: last.map(|e| e.to_string()).unwrap_or_default(),
        }),
    }
}

/// Writes (or extends) /etc/resolv.conf.
pub fn write_resolv_conf(servers: &[IpAddr], search: Option<&str>) -> Result<(), NetError> {
    let path = "/etc/resolv.conf";
    let err = |source| NetError::Write {
        path: path.to_string(),
        source,
    };
    fs::create_dir_all("/etc").map_err(err)?;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let mut text = String::new();
    if let Some(s) = search {
        text.push_str(&format!("search {s}\n"));
    }
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    f.write_all(text.as_bytes()).map_err(err)
}
