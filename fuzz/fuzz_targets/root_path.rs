//! The DHCP root-path (option 17): any DHCP server on the segment writes it. The boot reads it
//! as dracut's `nbd:` string (`root=dhcp`) or as Debian's `nbdroot=` value
//! (`nbdroot=dhcp`), through `boot::source::resolve`.
//!
//! Beyond "no panic": what parses reads back from its canonical spelling, and `resolve` yields
//! exactly the parsed export, with the DHCP server filled in where Debian's form names none.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use nbdroot::address::Host;
use nbdroot::boot::source::{self, SourceError};
use nbdroot::cmdline::{self, root, CmdlineError};
use nbdroot::net::dhcp::Lease;
use nbdroot::net::NetState;
use nbdroot::plan::{BootPlan, DebianSpec};
use nbdroot_fuzz::{check_debian_spec, check_nbd_spec};

const SERVER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const NEXT_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 4);

fuzz_target!(|data: &[u8]| {
    let Ok(rp) = std::str::from_utf8(data) else {
        return;
    };
    let nbd = root::parse_nbd(rp);
    if let Ok(spec) = &nbd {
        check_nbd_spec(spec);
    }
    let debian = root::parse_debian(rp);
    if let Ok(spec) = &debian {
        check_debian_spec(spec);
    }

    for next_server in [Some(NEXT_SERVER), None] {
        let net = net_with_root_path(rp, next_server);
        let dhcp_server = Host::Ip(next_server.unwrap_or(SERVER_ID).into());

        let got = resolve(&plan("root=dhcp"), &net);
        match (&nbd, got) {
            (Ok(want), Ok((spec, device))) => assert_eq!((&spec, device), (want, None)),
            (Err(_), Err(e)) => assert_refused(rp, &e),
            (want, got) => panic!("parse_nbd: {want:?}, resolve: {got:?}"),
        }

        let got = resolve(&plan("nbdroot=dhcp root=/dev/nbd7"), &net);
        match (&debian, got) {
            (
                Ok(DebianSpec::Given {
                    host,
                    port,
                    export,
                    device,
                }),
                Ok((spec, dev)),
            ) => {
                let host = host.clone().unwrap_or(dhcp_server);
                assert_eq!(
                    (&spec.host, spec.port, &spec.export),
                    (&host, *port, export)
                );
                // The command line's device wins over the root-path's.
                assert_eq!(dev, Some(7), "{device:?}");
                assert_eq!((spec.fstype, spec.rootflags), (None, None));
            }
            // `dhcp` (or nothing) cannot stand for itself: the root-path is where the answer
            // should have been.
            (Ok(DebianSpec::FromRootPath) | Err(_), Err(e)) => assert_refused(rp, &e),
            (want, got) => panic!("parse_debian: {want:?}, resolve: {got:?}"),
        }
    }
});

fn plan(line: &str) -> BootPlan {
    cmdline::parse(line).expect("a valid command line")
}

/// The export the boot would attach, and the device it asked for.
fn resolve(
    plan: &BootPlan,
    net: &NetState,
) -> Result<(nbdroot::plan::NbdSpec, Option<u32>), SourceError> {
    source::resolve(plan, net).map(|(plan, spec)| (spec, plan.device))
}

/// A lease as `Lease::from_ack` makes it: an empty root-path is none.
fn net_with_root_path(rp: &str, next_server: Option<Ipv4Addr>) -> NetState {
    let lease = Lease {
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix_len: 24,
        routers: vec![SERVER_ID],
        dns: Vec::new(),
        hostname: None,
        domain: None,
        mtu: None,
        root_path: Some(rp.to_string()).filter(|r| !r.is_empty()),
        server_id: SERVER_ID,
        next_server,
        broadcast: None,
        lease_secs: Some(3600),
        classless_routes: Vec::new(),
    };
    NetState {
        configured: vec!["eth0".into()],
        lease: Some(("eth0".into(), lease)),
    }
}

/// A refused root-path is reported with its value, or as missing when it was empty.
fn assert_refused(rp: &str, e: &SourceError) {
    match e {
        SourceError::BadRootPath { source, .. } => match source.as_ref() {
            CmdlineError::RootPath { value, .. } => assert_eq!(value, rp),
            other => panic!("a refused root-path names it: {other}"),
        },
        SourceError::NoRootPath { .. } => assert!(rp.is_empty(), "{e}"),
        SourceError::NoLease { .. } => panic!("there is a lease: {e}"),
    }
    assert!(!e.to_string().is_empty());
}
