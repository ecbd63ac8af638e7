//! Which export to attach, once the network is up: given on the command line, or read from
//! the DHCP root-path (dracut's `nbd:` form or Debian's), or with Debian's server from DHCP.

use crate::cmdline::root::{self, DebianSpec, Host, NbdSpec, RootError};
use crate::cmdline::RootSource;
use crate::net::NetState;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{param} needs a DHCP lease, but the network was configured without DHCP (ip= gives a static address)")]
    NoLease { param: &'static str },
    #[error(
        "DHCP on {iface} (server {server}) gave no root-path (option 17), which {param} needs"
    )]
    NoRootPath {
        iface: String,
        server: String,
        param: &'static str,
    },
    #[error("DHCP root-path \"{value}\" from {origin}: {source}; expected {expected}")]
    BadRootPath {
        value: String,
        /// "<server> on <interface>".
        origin: String,
        source: Box<RootError>,
        expected: &'static str,
    },
}

/// The export to attach and the device index asked for.
pub fn resolve(
    source: &RootSource,
    device: Option<u32>,
    net: &NetState,
) -> Result<(NbdSpec, Option<u32>), SourceError> {
    let param = match source {
        RootSource::Nbd(spec) => return Ok((spec.clone(), device)),
        // A Debian spec that names its server needs nothing from DHCP.
        RootSource::Debian(spec @ DebianSpec::Given { host: Some(_), .. }) => {
            let (nbd, own) = spec.to_nbd(None).expect("the spec names its server");
            return Ok((nbd, device.or(own)));
        }
        RootSource::Dhcp => "root=dhcp",
        RootSource::Debian(_) => "nbdroot=dhcp",
    };
    let (iface, lease) = net.lease.as_ref().ok_or(SourceError::NoLease { param })?;
    let server = lease.server_id.to_string();
    let root_path = || {
        lease
            .root_path
            .clone()
            .ok_or_else(|| SourceError::NoRootPath {
                iface: iface.clone(),
                server: server.clone(),
                param,
            })
    };
    let bad = |value: &str, source, expected| SourceError::BadRootPath {
        value: value.to_string(),
        origin: format!("{server} on {iface}"),
        source: Box::new(source),
        expected,
    };
    // Debian: the server is next-server (siaddr) when set, else the DHCP server itself.
    let dhcp_server = Host::Ip(lease.next_server.unwrap_or(lease.server_id).into());
    match source {
        RootSource::Dhcp => {
            let rp = root_path()?;
            let spec = root::parse_nbd(&rp).map_err(|e| bad(&rp, e, root::NBD_ROOT_FORM))?;
            Ok((spec, device))
        }
        RootSource::Debian(spec) => {
            let spec = match spec {
                DebianSpec::FromRootPath => {
                    let rp = root_path()?;
                    match root::parse_debian(&rp) {
                        // "dhcp" sends us back to the root-path itself: it names no export.
                        Ok(DebianSpec::FromRootPath) => Err(RootError::NoPortOrExport),
                        parsed => parsed,
                    }
                    .map_err(|e| bad(&rp, e, root::DEBIAN_FORM))?
                }
                given => given.clone(),
            };
            let own_device = match &spec {
                DebianSpec::Given { device: d, .. } => *d,
                DebianSpec::FromRootPath => None,
            };
            let (nbd, _) = spec
                .to_nbd(Some(dhcp_server))
                .expect("a given Debian spec always yields a server");
            Ok((nbd, device.or(own_device)))
        }
        RootSource::Nbd(_) => unreachable!("returned above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::Lease;
    use std::net::Ipv4Addr;

    fn lease(root_path: Option<&str>, next_server: Option<Ipv4Addr>) -> NetState {
        let l = Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            routers: vec![],
            dns: vec![],
            hostname: None,
            domain: None,
            mtu: None,
            root_path: root_path.map(str::to_string),
            server_id: Ipv4Addr::new(10, 0, 2, 2),
            next_server,
            broadcast: None,
            lease_secs: None,
            classless_routes: vec![],
        };
        NetState {
            configured: vec!["eth0".into()],
            lease: Some(("eth0".into(), l)),
        }
    }

    #[test]
    fn dracut_root_path() {
        let net = lease(Some("nbd:10.0.2.9:root:ext4:noatime"), None);
        let (spec, dev) = resolve(&RootSource::Dhcp, None, &net).unwrap();
        assert_eq!(
            (spec.address(), spec.export.as_str(), dev),
            ("10.0.2.9:10809".into(), "root", None)
        );
        assert_eq!(spec.rootflags.as_deref(), Some("noatime"));
        let err = resolve(&RootSource::Dhcp, None, &lease(None, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DHCP on eth0 (server 10.0.2.2) gave no root-path (option 17), which root=dhcp needs"
        );
        let err =
            resolve(&RootSource::Dhcp, None, &lease(Some("10.0.2.9:/nfs"), None)).unwrap_err();
        assert!(err.to_string().starts_with("DHCP root-path \"10.0.2.9:/nfs\" from 10.0.2.2 on eth0: does not start with \"nbd:\"; expected nbd:"), "{err}");
        let err = resolve(&RootSource::Dhcp, None, &NetState::default()).unwrap_err();
        assert!(matches!(err, SourceError::NoLease { param: "root=dhcp" }));
    }

    /// Found by the `root_path` fuzz target: a root-path of "dhcp" under `nbdroot=dhcp` made
    /// PID 1 panic, so any DHCP server on the segment could stop the boot.
    #[test]
    fn a_root_path_of_dhcp_is_refused() {
        let from_rp = RootSource::Debian(DebianSpec::FromRootPath);
        let err = resolve(&from_rp, None, &lease(Some("dhcp"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "DHCP root-path \"dhcp\" from 10.0.2.2 on eth0: the port or export name is missing; expected {}",
                root::DEBIAN_FORM
            )
        );
    }

    #[test]
    fn debian_root_path_and_server() {
        let from_rp = RootSource::Debian(DebianSpec::FromRootPath);
        let (spec, dev) =
            resolve(&from_rp, None, &lease(Some("10.0.2.9,disk,nbd1"), None)).unwrap();
        assert_eq!(
            (spec.address(), spec.export.as_str(), dev),
            ("10.0.2.9:10809".into(), "disk", Some(1))
        );
        // Only the server from DHCP: next-server first, else the server identifier.
        let partial = RootSource::Debian(root::parse_debian("dhcp,disk").unwrap());
        let (spec, _) = resolve(
            &partial,
            Some(0),
            &lease(None, Some(Ipv4Addr::new(10, 0, 2, 7))),
        )
        .unwrap();
        assert_eq!(spec.address(), "10.0.2.7:10809");
        let (spec, dev) = resolve(&partial, Some(0), &lease(None, None)).unwrap();
        assert_eq!((spec.address(), dev), ("10.0.2.2:10809".into(), Some(0)));
    }
}
