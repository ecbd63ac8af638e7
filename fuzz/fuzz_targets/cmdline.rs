//! The kernel command line: whatever the bootloader (or a user at its prompt) passes.
//!
//! Beyond "no panic": tokens quoted back the kernel's way give the same plan; every spec in a
//! plan reads back from its canonical spelling; every number is within its documented range.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nbdroot::cmdline::{self, mac};
use nbdroot::plan::{IpConfig, RootSource};
use nbdroot_fuzz::{check_debian_spec, check_nbd_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let tokens = cmdline::tokenize(line);
    for (key, _) in &tokens {
        assert!(!key.contains('=') && !key.contains('"'), "{key:?}");
    }
    // Each token quoted whole, as a bootloader writes a parameter with spaces.
    let requoted = tokens
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("\"{k}={v}\""),
            None => format!("\"{k}\""),
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(cmdline::tokenize(&requoted), tokens, "{requoted}");

    let plan = cmdline::parse(line);
    assert_eq!(cmdline::parse(&requoted), plan, "{requoted}");
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    match &plan.source {
        RootSource::Nbd(spec) => {
            check_nbd_spec(spec);
            let mount = plan.mount.resolve(spec);
            let opts: Vec<&str> = mount.options.split(',').collect();
            assert!(
                mount.options.is_empty() || opts.iter().all(|o| !matches!(*o, "" | "ro" | "rw")),
                "{mount:?}"
            );
        }
        RootSource::Debian(spec) => check_debian_spec(spec),
        RootSource::Dhcp => {}
    }
    if let Some(swap) = &plan.swap {
        check_nbd_spec(swap);
    }
    let secs = |d: Duration| d.as_secs();
    assert!((1..=3600).contains(&secs(plan.connect.attempt_timeout)));
    assert!(plan.connect.retries <= 1000);
    let t = &plan.tuning;
    assert!((1..=64).contains(&t.connections));
    assert!((1..=3600).contains(&secs(t.link_timeout)));
    assert!((1..=3600).contains(&secs(t.dhcp_timeout)));
    if let Some(k) = t.socket.keepalive {
        assert!(k.idle.as_secs() > 0 && k.interval.as_secs() > 0 && k.count > 0);
    }
    assert!(plan.init.as_deref().is_none_or(|i| i.starts_with('/')));
    for config in &plan.network.configs {
        check_ip(config);
    }
    for (name, mac) in &plan.network.ifnames {
        assert!(!name.is_empty());
        assert_eq!(mac::parse_mac(&mac.to_string()), Some(*mac));
    }
    assert!(plan
        .network
        .bootdev
        .as_deref()
        .is_none_or(|d| !d.is_empty()));
});

fn check_ip(config: &IpConfig) {
    match config {
        IpConfig::Off => {}
        IpConfig::Dhcp { device, mtu, .. } => {
            assert!(device.as_deref().is_none_or(|d| !d.is_empty()));
            assert!(mtu.is_none_or(|m| m >= 68));
        }
        IpConfig::Static(s) => {
            let max = if s.client.is_ipv4() { 32 } else { 128 };
            assert!(s.prefix_len <= max, "{s:?}");
            if let Some(gw) = s.gateway {
                assert_eq!(gw.is_ipv4(), s.client.is_ipv4(), "{s:?}");
            }
            assert!(s.mtu.is_none_or(|m| m >= 68));
            assert!(s.device.as_deref().is_none_or(|d| !d.is_empty()));
            assert!(s.hostname.as_deref().is_none_or(|h| !h.is_empty()));
        }
    }
}
