//! DHCP messages from the network: anyone on the segment can send them. The input is one UDP
//! payload, parsed as `Packet`, decoded as the `Reply` to its own transaction and client (so
//! that the typed decoding runs, not only the xid/MAC checks), made into a `Lease`, and
//! written out as the lease file and resolv.conf.
//!
//! Beyond "no panic": a parsed packet encodes to one that parses back the same and decodes to
//! the same reply; decoded values are within bounds; the lease file gives every value back
//! verbatim to a shell, and resolv.conf gets no line the lease did not ask for.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use nbdroot::net::dhcp::lease::{lease_env, resolv_conf, Lease};
use nbdroot::net::dhcp::packet::{Packet, Reply, OPT_END, OPT_PAD};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    assert!(packet
        .options
        .iter()
        .all(|(code, _)| *code != OPT_PAD && *code != OPT_END));
    let wire = packet.encode();
    assert!(wire.len() >= 300);
    let back = Packet::parse(&wire).expect("an encoded packet parses");
    // The name fields are cut to fit with their NUL: longer text does not come back whole.
    let fits = |text: &Option<String>, width: usize| text.as_ref().is_none_or(|t| t.len() < width);
    if fits(&packet.sname, 64) && fits(&packet.file, 128) {
        assert_eq!(back, packet);
    } else {
        assert_eq!(back.options, packet.options);
    }

    let reply = Reply::decode(data, packet.xid, packet.chaddr);
    if back == packet {
        assert_eq!(Reply::decode(&wire, packet.xid, packet.chaddr), reply);
    }
    let Ok(reply) = reply else {
        return;
    };
    assert_eq!(Some(reply.kind), packet.message_type());
    assert_eq!((reply.yiaddr, reply.siaddr), (packet.yiaddr, packet.siaddr));
    for &(dst, width, _) in &reply.classless_routes {
        assert!(width <= 32);
        assert_eq!(
            u32::from(dst) & !mask(width),
            0,
            "{dst}/{width} has host bits"
        );
    }
    let Ok(lease) = Lease::from_ack(&reply) else {
        let mask = u32::from(reply.subnet_mask.expect("only a bad mask fails"));
        assert!(
            mask.leading_ones() + mask.trailing_zeros() < 32,
            "{mask:#x} is a prefix"
        );
        return;
    };
    assert!(lease.prefix_len <= 32);
    assert_eq!(u32::from(lease.netmask()), mask(lease.prefix_len));
    assert!(lease.root_path.as_deref().is_none_or(|r| !r.is_empty()));
    for (_, width, _) in lease.routes() {
        assert!(width <= 32);
    }
    check_lease_env(&lease);
    for line in resolv_conf("eth0", &lease).lines() {
        assert!(
            line.starts_with("# from DHCP on eth0 ")
                || line.starts_with("search ")
                || line.starts_with("nameserver "),
            "{line:?}"
        );
    }
});

fn mask(width: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0)
}

/// Every line is `name='value'` as sh reads it, and the values are the lease's.
fn check_lease_env(lease: &Lease) {
    let env = lease_env(lease);
    let mut vars = Vec::new();
    let mut rest = env.as_str();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').expect("name=");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name:?}"
        );
        let (value, after) = sh_single_quoted(after);
        rest = after.strip_prefix('\n').expect("one assignment a line");
        vars.push((name, value));
    }
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("new_ip_address"),
        Some(lease.address.to_string().as_str())
    );
    assert_eq!(get("new_host_name"), lease.hostname.as_deref());
    assert_eq!(get("new_domain_name"), lease.domain.as_deref());
    assert_eq!(get("new_root_path"), lease.root_path.as_deref());
    let routers = lease.routers.iter().map(Ipv4Addr::to_string);
    let routers = routers.collect::<Vec<_>>().join(" ");
    assert_eq!(
        get("new_routers"),
        Some(routers.as_str()).filter(|r| !r.is_empty())
    );
}

/// Reads one shell word made of single-quoted strings and `\'`, as sh does; returns it and
/// what follows.
fn sh_single_quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut rest = s;
    loop {
        if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').expect("an unclosed quote");
            value.push_str(&quoted[..end]);
            rest = &quoted[end + 1..];
        } else if let Some(after) = rest.strip_prefix("\\'") {
            value.push('\'');
            rest = after;
        } else {
            return (value, rest);
        }
    }
}
