//! Bringing the network up for the root: links, addresses and routes over rtnetlink.

pub mod iface;
pub mod rtnl;

use std::time::Duration;

use crate::cmdline::{IpConfig, StaticIp};
use crate::netlink::NetlinkError;

/// How long a NIC driver may take to register its interface, and a link to come up.
const IFACE_WAIT: Duration = Duration::from_secs(10);
const CARRIER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface appeared within {0} s")]
    NoInterface(u64),
    #[error("interface {name} did not appear within {secs} s (interfaces present: {present})")]
    InterfaceMissing {
        name: String,
        secs: u64,
        present: String,
    },
    #[error("no link on {name} after {secs} s (cable or switch port down?)")]
    NoCarrier { name: String, secs: u64 },
    #[error("{step} on {iface}: {source}")]
    Rtnl {
        step: &'static str,
        iface: String,
        source: NetlinkError,
    },
    #[error("ip={0}: automatic network configuration (DHCP) is not supported by this nbdroot yet; give a static ip=<client>::<gw>:<netmask>::<device>:off")]
    DhcpUnsupported(String),
}

/// A configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub iface: String,
    pub index: u32,
}

/// Applies the `ip=` configuration. `Ok(None)` for `ip=off`.
pub fn bring_up(config: &IpConfig) -> Result<Option<Configured>, NetError> {
    match config {
        IpConfig::Off => Ok(None),
        IpConfig::Auto { device } => Err(NetError::DhcpUnsupported(
            device
                .as_deref()
                .map_or("dhcp".to_string(), |d| format!(":::::{d}:dhcp")),
        )),
        IpConfig::Static(s) => configure_static(s).map(Some),
    }
}

fn configure_static(s: &StaticIp) -> Result<Configured, NetError> {
    let secs = IFACE_WAIT.as_secs();
    let (iface, index) =
        iface::wait_for(s.device.as_deref(), IFACE_WAIT).ok_or_else(|| match &s.device {
            Some(name) => NetError::InterfaceMissing {
                name: name.clone(),
                secs,
                present: iface::list().unwrap_or_default().join(", "),
            },
            None => NetError::NoInterface(secs),
        })?;
    let rtnl_err = |step: &'static str, iface: &str| {
        let iface = iface.to_string();
        move |source| NetError::Rtnl {
            step,
            iface,
            source,
        }
    };
    let mut rtnl = rtnl::Rtnl::open().map_err(rtnl_err("opening rtnetlink", &iface))?;
    if let Some(lo) = iface::index("lo") {
        rtnl.link_up(lo).map_err(rtnl_err("bringing up", "lo"))?;
    }
    rtnl.link_up(index)
        .map_err(rtnl_err("bringing up", &iface))?;
    rtnl.add_address(index, s.client, s.prefix_len)
        .map_err(rtnl_err("adding the address", &iface))?;
    log::debug!("{iface} is up, waiting for its link");
    if !iface::wait_for_carrier(&iface, CARRIER_WAIT) {
        return Err(NetError::NoCarrier {
            name: iface,
            secs: CARRIER_WAIT.as_secs(),
        });
    }
    if let Some(gw) = s.gateway {
        let on_link = rtnl::same_subnet(s.client, s.prefix_len, gw);
        rtnl.add_default_route(index, gw, on_link)
            .map_err(rtnl_err("adding the default route", &iface))?;
    }
    if let Some(name) = &s.hostname {
        if let Err(e) = nix::unistd::sethostname(name) {
            log::warn!("cannot set the hostname to {name}: {e}");
        }
    }
    log::info!(
        "{iface}: {}/{}{}",
        s.client,
        s.prefix_len,
        s.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
    );
    Ok(Configured { iface, index })
}
