//! PLACEHOLDER written by the owner so the tree compiles while the DHCP client is being
//! written: the API the boot flow calls. The DHCP helper replaces this whole directory.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub root_path: Option<String>,
    pub server_id: Ipv4Addr,
    pub next_server: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

#[derive(Debug, Clone)]
pub struct DhcpPolicy {
    pub total: Duration,
}

impl Default for DhcpPolicy {
    fn default() -> Self {
        Self {
            total: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP on {0}: not implemented yet")]
    Unimplemented(String),
}

pub fn acquire(iface: &str, _index: u32, _policy: &DhcpPolicy) -> Result<Lease, DhcpError> {
    Err(DhcpError::Unimplemented(iface.to_string()))
}

pub fn apply(iface: &str, _index: u32, _lease: &Lease) -> Result<(), DhcpError> {
    Err(DhcpError::Unimplemented(iface.to_string()))
}

pub fn write_lease(_dir: &Path, _iface: &str, _lease: &Lease) -> io::Result<PathBuf> {
    Err(io::Error::other("not implemented"))
}
