//! Which export to attach, once the network is up: given on the command line, or read from
//! the DHCP root-path (dracut's `nbd:` form or Debian's), or with Debian's server from DHCP.
//! The grammar is [`cmdline::apply_root_path`]'s, shared with `nbdroot plan --root-path`; this
//! adds the lease and names it in errors.

use crate::address::Host;
use crate::cmdline::{self, CmdlineError};
use crate::net::NetState;
use crate::plan::{BootPlan, NbdSpec};

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
    #[error("DHCP on {iface} (server {server}): {source}")]
    BadRootPath {
        iface: String,
        server: String,
        source: Box<CmdlineError>,
    },
}

/// The plan with its root completed from the lease, and the export to attach.
pub fn resolve(plan: &BootPlan, net: &NetState) -> Result<(BootPlan, NbdSpec), SourceError> {
    let mut plan = plan.clone();
    if let Some(param) = plan.source.dhcp_param() {
        let (iface, lease) = net.lease.as_ref().ok_or(SourceError::NoLease { param })?;
        // Debian: the server is next-server (siaddr) when set, else the DHCP server itself.
        let server = Host::Ip(lease.next_server.unwrap_or(lease.server_id).into());
        cmdline::apply_root_path(&mut plan, lease.root_path.as_deref(), Some(server)).map_err(
            |e| {
                let (iface, server) = (iface.clone(), lease.server_id.to_string());
                match e {
                    CmdlineError::NoRootPath { param } => SourceError::NoRootPath {
                        iface,
                        server,
                        param,
                    },
                    source => SourceError::BadRootPath {
                        iface,
                        server,
                        source: Box::new(source),
                    },
                }
            },
        )?;
    }
    let spec = plan
        .source
        .nbd()
        .expect("the command line or, through apply_root_path, the lease names the server");
    Ok((plan, spec))
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

    fn resolve_line(line: &str, net: &NetState) -> Result<(NbdSpec, Option<u32>), SourceError> {
        let plan = cmdline::parse(line).unwrap();
        resolve(&plan, net).map(|(plan, spec)| (spec, plan.device))
    }

    #[test]
    fn dracut_root_path() {
        let net = lease(Some("nbd:10.0.2.9:root:ext4:noatime"), None);
        let (spec, dev) = resolve_line("root=dhcp", &net).unwrap();
        assert_eq!(
            (spec.address(), spec.export.as_str(), dev),
            ("10.0.2.9:10809".into(), "root", None)
        );
        assert_eq!(spec.rootflags.as_deref(), Some("noatime"));
        let err = resolve_line("root=dhcp", &lease(None, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DHCP on eth0 (server 10.0.2.2) gave no root-path (option 17), which root=dhcp needs"
        );
        let err = resolve_line("root=dhcp", &lease(Some("10.0.2.9:/nfs"), None)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "DHCP on eth0 (server 10.0.2.2): root-path \"10.0.2.9:/nfs\": does not start with \"nbd:\"; expected nbd:"
            ),
            "{err}"
        );
        let err = resolve_line("root=dhcp", &NetState::default()).unwrap_err();
        assert!(matches!(err, SourceError::NoLease { param: "root=dhcp" }));
        // A root given whole needs no lease, and ignores a root-path.
        let (spec, _) = resolve_line("root=nbd:srv:disk", &NetState::default()).unwrap();
        assert_eq!(spec.address(), "srv:10809");
        let (spec, _) = resolve_line("root=nbd:srv:disk", &net).unwrap();
        assert_eq!(spec.address(), "srv:10809");
    }

    #[test]
    fn debian_root_path_and_server() {
        let (spec, dev) =
            resolve_line("nbdroot=dhcp", &lease(Some("10.0.2.9,disk,nbd1"), None)).unwrap();
        assert_eq!(
            (spec.address(), spec.export.as_str(), dev),
            ("10.0.2.9:10809".into(), "disk", Some(1))
        );
        // root=/dev/nbdX wins over the root-path's device.
        let (_, dev) = resolve_line(
            "nbdroot=dhcp root=/dev/nbd0",
            &lease(Some("10.0.2.9,disk,nbd1"), None),
        )
        .unwrap();
        assert_eq!(dev, Some(0));
        let err = resolve_line("nbdroot=dhcp", &lease(Some("dhcp"), None)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DHCP on eth0 (server 10.0.2.2): root-path \"dhcp\": the port or export name is missing; expected <server>,"),
            "{err}"
        );
        // Only the server from DHCP: next-server first, else the server identifier.
        let line = "nbdroot=dhcp,disk root=/dev/nbd0";
        let (spec, _) = resolve_line(line, &lease(None, Some(Ipv4Addr::new(10, 0, 2, 7)))).unwrap();
        assert_eq!(spec.address(), "10.0.2.7:10809");
        let (spec, dev) = resolve_line(line, &lease(None, None)).unwrap();
        assert_eq!((spec.address(), dev), ("10.0.2.2:10809".into(), Some(0)));
        // A Debian form that names its server needs no lease.
        let (spec, dev) = resolve_line("nbdroot=srv,disk,nbd2", &NetState::default()).unwrap();
        assert_eq!((spec.address(), dev), ("srv:10809".into(), Some(2)));
    }
}
