//! The command line table: every documented form, and every error.

use super::*;
use crate::address::Host;
use crate::plan::{FromDhcp, IpConfig, NbdSpec};
use crate::settings::{Keepalive, SocketOptions};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

fn host(s: &str) -> Host {
    match s.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(s.into()),
    }
}

fn nbd(plan: &BootPlan) -> &NbdSpec {
    match &plan.source {
        RootSource::Nbd(s) => s,
        other => panic!("not a given NBD root: {other:?}"),
    }
}

#[test]
fn tokenizer_handles_quotes() {
    let t = tokenize(r#"  root=nbd:a:1 quiet "init=/bin/my init" x="a b"c  "#);
    let want: Vec<(String, Option<String>)> = vec![
        ("root".into(), Some("nbd:a:1".into())),
        ("quiet".into(), None),
        ("init".into(), Some("/bin/my init".into())),
        ("x".into(), Some("a bc".into())),
    ];
    assert_eq!(t, want);
}

#[test]
fn full_plan() {
    let plan = parse(&format!(
        "console=ttyS0 root=nbd:10.0.2.2:10810:ext4:errors=panic,rw,noatime {IP} ro init=/bin/sh rd.nbdroot.timeout=3 rd.nbdroot.retries=0"
    ))
    .unwrap();
    let spec = nbd(&plan);
    assert_eq!(spec.address(), "10.0.2.2:10810");
    let m = plan.mount.resolve(spec);
    assert_eq!(m.fstype.as_deref(), Some("ext4"));
    assert_eq!(m.options, "errors=panic,noatime");
    assert!(m.read_only, "kernel ro overrides rw in the flags field");
    assert_eq!(plan.init.as_deref(), Some("/bin/sh"));
    assert_eq!(plan.connect.attempt_timeout, Duration::from_secs(3));
    assert_eq!(plan.connect.retries, 0);
    assert!(matches!(plan.network.configs[..], [IpConfig::Static(_)]));
    assert_eq!(
        (plan.root.clone(), plan.device, plan.onfail),
        (RootDevice::Whole, None, OnFail::Panic)
    );
}

#[test]
fn defaults_and_fallbacks() {
    let plan = parse(&format!(
        "root=nbd:srv:disk {IP} rootfstype=xfs rootflags=rw,discard"
    ))
    .unwrap();
    let m = plan.mount.resolve(nbd(&plan));
    assert_eq!(nbd(&plan).export, "disk");
    assert_eq!(
        (m.fstype.as_deref(), m.options.as_str(), m.read_only),
        (Some("xfs"), "discard", false)
    );
    assert_eq!(plan.init, None);
    assert_eq!(plan.connect, ConnectPolicy::default());
    assert_eq!(plan.tuning, Tuning::default());

    // No ip=: DHCP on every interface with a link.
    let plan = parse("root=nbd:srv:1 rw").unwrap();
    assert!(plan.network.configs.is_empty());
    assert!(!plan.mount.resolve(nbd(&plan)).read_only);
    let plan = parse("root=nbd:srv:1").unwrap();
    assert!(
        plan.mount.resolve(nbd(&plan)).read_only,
        "read-only unless rw, as the kernel"
    );
    // The last root= wins; arguments after "--" are init's.
    let plan = parse("root=/dev/sda root=nbd:srv:2 -- root=nbd:other:3").unwrap();
    assert_eq!(nbd(&plan).port, 2);
}

#[test]
fn dracut_forms() {
    // From dracut.cmdline(7) and dracut's NBD test.
    /// (command line, host, port, export, fstype, rootflags)
    type Case<'a> = (
        &'a str,
        &'a str,
        u16,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            "root=nbd:192.168.50.1:raw",
            "192.168.50.1",
            10809,
            "raw",
            None,
            None,
        ),
        (
            "root=nbd:192.168.50.1:raw:ext2",
            "192.168.50.1",
            10809,
            "raw",
            Some("ext2"),
            None,
        ),
        (
            "root=nbd:192.168.50.1:raw::errors=panic",
            "192.168.50.1",
            10809,
            "raw",
            None,
            Some("errors=panic"),
        ),
        (
            "root=nbd:192.168.50.1:2000:ext4:ro",
            "192.168.50.1",
            2000,
            "",
            Some("ext4"),
            Some("ro"),
        ),
        (
            "root=nbd:[fe80::1]:myexport:ext4",
            "fe80::1",
            10809,
            "myexport",
            Some("ext4"),
            None,
        ),
        (
            "root=LABEL=dracut netroot=nbd:192.168.50.1:raw",
            "192.168.50.1",
            10809,
            "raw",
            None,
            None,
        ),
        (
            "netroot=nbd:srv:first netroot=nbd:srv:second root=/dev/nbd0",
            "srv",
            10809,
            "first",
            None,
            None,
        ),
    ];
    for (line, h, port, export, fstype, flags) in cases {
        let plan = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let s = nbd(&plan);
        assert_eq!(
            (&s.host, s.port, s.export.as_str()),
            (&host(h), *port, *export),
            "{line}"
        );
        assert_eq!(
            (s.fstype.as_deref(), s.rootflags.as_deref()),
            (*fstype, *flags),
            "{line}"
        );
    }
    assert_eq!(
        parse("root=LABEL=dracut netroot=nbd:s:1").unwrap().root,
        RootDevice::Label("dracut".into())
    );
    assert_eq!(
        parse("root=UUID=1234-ab netroot=nbd:s:1").unwrap().root,
        RootDevice::Uuid("1234-ab".into())
    );
    assert_eq!(
        parse("root=/dev/nbd0p2 netroot=nbd:s:1").unwrap().root,
        RootDevice::Partition(2)
    );
    assert_eq!(
        parse("root=block:/dev/root netroot=nbd:s:1").unwrap().root,
        RootDevice::Whole
    );

    for line in [
        "root=dhcp",
        "netroot=dhcp",
        "root=/dev/root netroot=dhcp",
        "root=dhcp ip=dhcp",
    ] {
        let plan = parse(line).unwrap();
        assert_eq!(
            (plan.source.clone(), plan.root.clone()),
            (RootSource::Dhcp, RootDevice::Whole),
            "{line}"
        );
    }
    // root=nbd: wins over netroot= and nbdroot=, with a warning each.
    let plan = parse("root=nbd:a:1 netroot=nbd:b:2 nbdroot=c,3").unwrap();
    assert_eq!(nbd(&plan).host, host("a"));
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("takes precedence over netroot=nbd:b:2"));
}

#[test]
fn debian_forms() {
    let plan = parse("ip=dhcp nbdroot=192.168.1.1,mydebian,nbd0 root=/dev/nbd0p1").unwrap();
    assert!(matches!(
        plan.source,
        RootSource::Debian(DebianSpec::Given { .. })
    ));
    assert_eq!(
        (plan.device, plan.root.clone()),
        (Some(0), RootDevice::Partition(1))
    );
    // root=/dev/nbdX takes precedence over the third field.
    let plan = parse("nbdroot=10.0.0.1,disk,nbd2 root=/dev/nbd3").unwrap();
    assert_eq!(plan.device, Some(3));
    let plan = parse("nbdroot=10.0.2.2/myvm root=/dev/nbd0").unwrap();
    assert_eq!(
        (plan.device, plan.root.clone()),
        (Some(0), RootDevice::Whole)
    );
    assert_eq!(
        parse("nbdroot=dhcp").unwrap().source,
        RootSource::Debian(DebianSpec::FromRootPath)
    );
    let plan = parse("nbdroot=dhcp,root,nbd1").unwrap();
    assert_eq!(plan.device, Some(1));
    // LVM or LUKS on the NBD device: the whole device is attached, the root named as given.
    for root in [
        "/dev/mapper/vg-root",
        "/dev/vg/root",
        "/dev/md0",
        "/dev/md/r",
    ] {
        let plan = parse(&format!("nbdroot=10.0.0.1,disk,nbd0 root={root}")).unwrap();
        assert_eq!(
            (plan.device, plan.root.clone()),
            (Some(0), RootDevice::Stacked(root.into())),
            "{root}"
        );
    }
    let plan = parse("netroot=nbd:10.0.0.1:disk root=/dev/mapper/crypt").unwrap();
    assert_eq!(plan.root, RootDevice::Stacked("/dev/mapper/crypt".into()));
    for bad in [
        "/dev/sda1",
        "/dev/mapper",
        "/dev/mapper/",
        "/dev/../x",
        "/dev/disk/by-id",
        "/dev/a/b/c",
        "mapper/vg-root",
    ] {
        let err = parse(&format!("nbdroot=10.0.0.1,disk root={bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("root={bad}: expected ")), "{err}");
        assert!(err.contains("/dev/mapper/<vg>-<lv>"), "{err}");
    }
}

#[test]
fn network_parameters() {
    let plan = parse(
        "root=nbd:s:1 ip=eth0:dhcp ip=10.0.0.5::10.0.0.1:24::eth1:none:1400 BOOTIF=01-52-54-00-12-34-56 \
         ifname=boot0:52:54:00:12:34:56 bootdev=boot0 nameserver=10.0.0.53 nameserver=fd00::53",
    )
    .unwrap();
    let n = &plan.network;
    assert_eq!(n.configs.len(), 2);
    assert_eq!(
        n.bootif.map(|m| m.to_string()).as_deref(),
        Some("52:54:00:12:34:56")
    );
    assert_eq!(n.ifnames[0].0, "boot0");
    assert_eq!(n.bootdev.as_deref(), Some("boot0"));
    assert_eq!(n.nameservers.len(), 2);
}

#[test]
fn knobs() {
    let plan = parse(
        "root=nbd:s:1 rd.nbdroot.connections=4 rd.nbdroot.link_timeout=20 rd.nbdroot.dhcp_timeout=5 \
         rd.nbdroot.keepalive=5,2,4 rd.nbdroot.user_timeout=0 rd.nbdroot.onfail=retry",
    )
    .unwrap();
    assert_eq!(
        plan.tuning,
        Tuning {
            connections: 4,
            link_timeout: Duration::from_secs(20),
            dhcp_timeout: Duration::from_secs(5),
            socket: SocketOptions {
                keepalive: Some(Keepalive {
                    idle: Duration::from_secs(5),
                    interval: Duration::from_secs(2),
                    count: 4,
                }),
                user_timeout: None,
            },
            dead_timeout: Some(Duration::from_secs(120)),
        }
    );
    assert_eq!(plan.onfail, OnFail::Retry);
    let plan = parse(
        "root=nbd:s:1 rd.nbdroot.swap=nbd:s:swap:::mkswap,prio=5 rd.nbdroot.min_free_kbytes=16384",
    )
    .unwrap();
    let swap = plan.swap.unwrap();
    assert_eq!(
        (swap.export.as_str(), swap.opts.mkswap, swap.opts.priority),
        ("swap", true, Some(5))
    );
    assert_eq!(plan.min_free_kbytes, MinFree::KiB(16384));
    assert_eq!(
        parse("root=nbd:s:1 rd.nbdroot.min_free_kbytes=off")
            .unwrap()
            .min_free_kbytes,
        MinFree::Off
    );
    assert_eq!(
        parse("root=nbd:s:1 rd.nbdroot.keepalive=off")
            .unwrap()
            .tuning
            .socket
            .keepalive,
        None
    );
    assert_eq!(
        parse("root=nbd:s:1 rd.nbdroot.onfail=shell")
            .unwrap()
            .onfail,
        OnFail::Shell
    );
}

#[test]
fn errors_name_parameter_value_and_form() {
    let cases = [
        ("quiet", "no NBD root on the kernel command line: expected root=nbd:<server>"),
        ("root=/dev/sda1", "no NBD root on the kernel command line"),
        ("root=/dev/sda1 netroot=nbd:s:1", "root=/dev/sda1: expected nbd:<server>:<port|export>…, /dev/nbdN[pM]"),
        ("root=nbd:srv", "root=nbd:srv: the port or export name is missing; expected root=nbd:<server>:<port|export>"),
        ("netroot=nbd:srv:0", "netroot=nbd:srv:0: port 0 is out of range 1-65535; expected netroot=nbd:"),
        ("root=nbd:srv:1 ip=10.0.0.300", "ip=10.0.0.300: client \"10.0.0.300\" is not an IP address; expected ip="),
        ("root=nbd:srv:1 ip=dhcp6", "ip=dhcp6: \"dhcp6\" (IPv6 autoconfiguration) is not supported"),
        ("root=nbd:srv:1 init=sbin/init", "init=sbin/init: expected an absolute path"),
        ("root=nbd:srv:1 rd.nbdroot.timeout=0", "rd.nbdroot.timeout=0: expected whole seconds from 1 to 3600"),
        ("root=nbd:srv:1 rd.nbdroot.retries=-1", "rd.nbdroot.retries=-1: expected a count"),
        ("root=nbd:srv:1 rd.nbdroot.connections=0", "rd.nbdroot.connections=0: expected a count from 1 to 64"),
        ("root=nbd:srv:1 rd.nbdroot.onfail=reboot", "rd.nbdroot.onfail=reboot: expected panic, retry or shell"),
        ("root=nbd:srv:1 rd.nbdroot.keepalive=5,2", "rd.nbdroot.keepalive=5,2: expected <idle s>,<interval s>,<count>"),
        ("root=nbd:srv:1 rd.nbdroot.user_timeout=x", "rd.nbdroot.user_timeout=x: expected whole seconds from 0"),
        ("root=nbd:srv:1 BOOTIF=01-52-54", "BOOTIF=01-52-54: expected 01-<MAC address with dashes>"),
        ("root=nbd:srv:1 ifname=eth0", "ifname=eth0: expected <name>:<MAC address>"),
        ("root=nbd:srv:1 nameserver=dns", "nameserver=dns: expected an IP address"),
        ("nbdroot=srv,0", "nbdroot=srv,0: port 0 is out of range 1-65535; expected nbdroot=<server>,<port|export>"),
        ("nbdroot=srv,x,sda", "nbdroot=srv,x,sda: \"sda\" is not an nbd device"),
        ("root=nbd:s:1 rd.nbdroot.swap=nbd:s", "rd.nbdroot.swap=nbd:s: the port or export name is missing"),
        ("root=nbd:s:1 rd.nbdroot.swap=nbd:s:1:::prio=x", "rd.nbdroot.swap=nbd:s:1:::prio=x: nbd option \"prio=x\": expected a swap priority"),
        ("root=nbd:s:1 rd.nbdroot.min_free_kbytes=1", "rd.nbdroot.min_free_kbytes=1: expected KiB from 128"),
        ("root=nbd:s:1 rd.nbdroot.overlay=tmpfs:lots", "rd.nbdroot.overlay=tmpfs:lots: expected tmpfs, tmpfs:<size> (512m, 2g, 25%) or nbd:"),
        ("root=nbd:s:1 rd.nbdroot.overlay=nbd:u", "rd.nbdroot.overlay=nbd:u: the port or export name is missing"),
    ];
    for (line, want) in cases {
        let err = parse(line).unwrap_err().to_string();
        assert!(
            err.starts_with(want),
            "{line}\n  got:  {err}\n  want: {want}…"
        );
    }
}

#[test]
fn arguments_after_the_separator_are_inits() {
    let plan = parse(r#"root=nbd:s:1 -- single "x=a b" rd.nbdroot.timout=1"#).unwrap();
    assert_eq!(plan.init_args, ["single", "x=a b", "rd.nbdroot.timout=1"]);
    assert!(plan.warnings.is_empty(), "init's arguments are not ours");
    assert!(parse("root=nbd:s:1 --").unwrap().init_args.is_empty());
}

#[test]
fn unknown_parameters_in_our_namespace_are_warned_about() {
    let plan = parse(
        "root=nbd:s:1 rd.nbdroot.timout=5 rd.nbdroot.frobnicate rd.nbdroot.retry=2 rd.nbdroot.debug rd.other.x=1 nbdroot.timeout=1",
    )
    .unwrap();
    assert_eq!(
        plan.warnings,
        [
            "unknown parameter rd.nbdroot.timout=5: did you mean rd.nbdroot.timeout?",
            "unknown parameter rd.nbdroot.frobnicate: ignored",
            "unknown parameter rd.nbdroot.retry=2: did you mean rd.nbdroot.retries?",
        ]
    );
    // The misspelt knob leaves its default in place.
    assert_eq!(plan.connect, ConnectPolicy::BOOT);
}

#[test]
fn the_parameter_table_agrees_with_the_parser() {
    let base = parse("root=nbd:s:1").unwrap();
    let ours = params::PARAMS
        .iter()
        .filter(|p| p.name.starts_with(params::NAMESPACE));
    for p in ours {
        // Every name in the table is one the parser knows: no warning.
        let plan = parse(&format!("root=nbd:s:1 {}", p.name)).map_err(|e| e.to_string());
        if let Ok(plan) = &plan {
            assert!(plan.warnings.is_empty(), "{}: {:?}", p.name, plan.warnings);
        }
        // The documented default is the parser's.
        if let Some(default) = p.default {
            let explicit = parse(&format!("root=nbd:s:1 {}={default}", p.name)).unwrap();
            assert_eq!(explicit, base, "{}={default}", p.name);
        }
        // And the parser reads it: a nonsense value is refused, naming the parameter (the
        // debug flag is read by the logger, and takes no value).
        if p.name != "rd.nbdroot.debug" {
            let err = parse(&format!("root=nbd:s:1 {}=%", p.name)).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{}=%", p.name)),
                "{err}"
            );
        }
    }
    // Every knob the parser reads is in the table: a line with all of them warns of nothing.
    let plan = parse(
        "root=nbd:s:1 rd.nbdroot.timeout=1 rd.nbdroot.retries=1 rd.nbdroot.connections=1 \
         rd.nbdroot.link_timeout=1 rd.nbdroot.dhcp_timeout=1 rd.nbdroot.keepalive=off \
         rd.nbdroot.user_timeout=1 rd.nbdroot.dead_timeout=1 rd.nbdroot.onfail=retry \
         rd.nbdroot.swap=nbd:s:2 rd.nbdroot.min_free_kbytes=off rd.nbdroot.debug rd.debug \
         rd.nbdroot.tls.ca=/a rd.nbdroot.tls.cert=/b rd.nbdroot.tls.key=/c \
         rd.nbdroot.tls.hostname=h rd.nbdroot.tls.verify=none \
         rd.nbdroot.overlay=tmpfs rd.nbdroot.replicas=t rd.nbdroot.replicas.shared=1",
    )
    .unwrap();
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(
        plan.overlay,
        Some(crate::plan::Overlay::Tmpfs { size: None })
    );
}

#[test]
fn tls_is_on_when_asked_for_anywhere_and_never_silently_off() {
    use crate::tls::{TlsSettings, Verify};
    let spec = |plan: &BootPlan| match &plan.source {
        crate::plan::RootSource::Nbd(spec) => spec.clone(),
        other => panic!("{other:?}"),
    };
    // Plain text: no tls anywhere.
    let plan = parse("root=nbd:s:1").unwrap();
    assert_eq!(plan.tls_for(&spec(&plan)), None);
    // nbdopts `tls` alone: TLS with default settings (which then want a CA).
    let plan = parse("root=nbd:s:1:::tls").unwrap();
    assert_eq!(plan.tls_for(&spec(&plan)), Some(TlsSettings::default()));
    // Any rd.nbdroot.tls.* turns it on, also for Debian's grammar and for swap.
    let plan = parse(
        "nbdroot=10.0.0.1,root rd.nbdroot.tls.ca=/etc/nbdroot/tls/ca.pem \
         rd.nbdroot.tls.hostname=nbd.example rd.nbdroot.swap=nbd:s:swap",
    )
    .unwrap();
    let want = TlsSettings {
        ca: Some("/etc/nbdroot/tls/ca.pem".into()),
        hostname: Some("nbd.example".into()),
        ..TlsSettings::default()
    };
    assert_eq!(
        plan.tls_for(plan.swap.as_ref().unwrap()),
        Some(want.clone())
    );
    assert_eq!(plan.tls, Some(want));
    // Turning verification off must be said by name, and it turns TLS on.
    let plan = parse("root=nbd:s:1 rd.nbdroot.tls.verify=none").unwrap();
    assert_eq!(plan.tls.unwrap().verify, Verify::None);
    for bad in [
        "rd.nbdroot.tls.verify=off",
        "rd.nbdroot.tls.ca=ca.pem",
        "rd.nbdroot.tls.hostname=a/b",
    ] {
        let err = parse(&format!("root=nbd:s:1 {bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(bad), "{err}");
    }
}

/// The plan after a DHCP lease gave `root_path` (and, for Debian's form, `server`).
fn with_lease(line: &str, root_path: Option<&str>, server: Option<&str>) -> BootPlan {
    let mut plan = parse(line).unwrap();
    apply_root_path(&mut plan, root_path, server.map(host)).unwrap();
    plan
}

#[test]
fn a_dhcp_root_path_completes_the_plan() {
    let rp = "nbd:10.0.0.1:root:ext4:noatime:bs=4096";
    let plan = with_lease("root=dhcp", Some(rp), Some("10.0.0.9"));
    let mut want = parse(&format!("root={rp}")).unwrap();
    want.from_dhcp.root_path = Some(rp.into());
    assert_eq!(plan, want);

    // Debian's form in the root-path; root=/dev/nbdX wins over its device.
    let plan = with_lease("nbdroot=dhcp", Some("10.0.0.1,disk,nbd1"), Some("10.0.0.9"));
    assert_eq!(
        (
            nbd(&plan).address(),
            nbd(&plan).export.as_str(),
            plan.device
        ),
        ("10.0.0.1:10809".into(), "disk", Some(1))
    );
    assert_eq!(
        plan.from_dhcp,
        FromDhcp {
            root_path: Some("10.0.0.1,disk,nbd1".into()),
            server: false
        }
    );
    let plan = with_lease(
        "nbdroot=dhcp root=/dev/nbd0p2",
        Some("10.0.0.1,disk,nbd1"),
        None,
    );
    assert_eq!(
        (plan.device, plan.root.clone()),
        (Some(0), RootDevice::Partition(2))
    );

    // Only the server from DHCP, on the command line or in the root-path.
    let plan = with_lease("nbdroot=dhcp,disk,nbd2", None, Some("10.0.0.9"));
    assert_eq!(
        (nbd(&plan).address(), plan.device),
        ("10.0.0.9:10809".into(), Some(2))
    );
    assert_eq!(
        plan.from_dhcp,
        FromDhcp {
            root_path: None,
            server: true
        }
    );
    let plan = with_lease("nbdroot=dhcp", Some("/disk"), Some("10.0.0.9"));
    assert_eq!(nbd(&plan).address(), "10.0.0.9:10809");
    assert_eq!(
        plan.from_dhcp,
        FromDhcp {
            root_path: Some("/disk".into()),
            server: true
        }
    );
    // Without the lease's server (nbdroot plan --root-path), the spec waits for it.
    let plan = with_lease("nbdroot=dhcp", Some("/disk"), None);
    assert!(matches!(
        plan.source,
        RootSource::Debian(DebianSpec::Given { host: None, .. })
    ));

    // A root given whole ignores the root-path; a Debian one naming its server becomes nbd:.
    let plan = with_lease("root=nbd:srv:1", Some("nbd:other:2"), Some("10.0.0.9"));
    assert_eq!(plan, parse("root=nbd:srv:1").unwrap());
    let plan = with_lease("nbdroot=srv,disk", None, None);
    assert_eq!(nbd(&plan).address(), "srv:10809");
    assert_eq!(plan.from_dhcp, FromDhcp::default());
}

#[test]
fn root_path_errors() {
    let cases = [
        ("root=dhcp", None, "the DHCP lease has no root-path (option 17), which root=dhcp needs"),
        ("nbdroot=dhcp", None, "the DHCP lease has no root-path (option 17), which nbdroot=dhcp needs"),
        ("root=dhcp", Some("10.0.0.1:/nfs"), "root-path \"10.0.0.1:/nfs\": does not start with \"nbd:\"; expected nbd:<server>:<port|export>"),
        ("root=dhcp", Some("nbd:srv:1:::frob"), "root-path \"nbd:srv:1:::frob\": nbd option \"frob\": expected"),
        ("nbdroot=dhcp", Some("srv,0"), "root-path \"srv,0\": port 0 is out of range 1-65535; expected <server>,<port|export>"),
        ("nbdroot=dhcp", Some("dhcp"), "root-path \"dhcp\": the port or export name is missing"),
        ("nbdroot=dhcp", Some(""), "root-path \"\": the port or export name is missing"),
    ];
    for (line, rp, want) in cases {
        let mut plan = parse(line).unwrap();
        let before = plan.clone();
        let err = apply_root_path(&mut plan, rp, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(want),
            "{line} {rp:?}\n  got:  {err}\n  want: {want}…"
        );
        assert_eq!(plan, before, "a failed apply changes nothing");
    }
}

#[test]
fn replicas_are_read_with_their_ports() {
    let plan = parse(
        "root=nbd:10.0.0.1:root rd.nbdroot.replicas=10.0.0.2,[fd00::3]:10900,nbd-b.lan:10811",
    )
    .unwrap();
    let servers: Vec<String> = plan
        .replicas
        .servers
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    assert_eq!(
        servers,
        ["10.0.0.2:10809", "[fd00::3]:10900", "nbd-b.lan:10811"]
    );
    assert!(!plan.replicas.shared_storage);
    let plan = parse("root=nbd:s:1 rd.nbdroot.replicas=t rd.nbdroot.replicas.shared=1").unwrap();
    assert!(plan.replicas.shared_storage);
    for bad in ["a,,b", "nbd://a/x", "a:0", "a:b:c", ""] {
        let err = parse(&format!("root=nbd:s:1 rd.nbdroot.replicas={bad}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "rd.nbdroot.replicas={bad}: expected {}",
                super::REPLICAS_FORM
            )
        );
    }
    let err = parse("root=nbd:s:1 rd.nbdroot.replicas.shared=yes").unwrap_err();
    assert_eq!(
        err.to_string(),
        "rd.nbdroot.replicas.shared=yes: expected 0 or 1"
    );
}

/// The overlay's upper export and the swap export take TLS as the root does: `tls` in their
/// own nbdopts, or every connection of the boot once an `rd.nbdroot.tls.*` is given.
#[test]
fn overlay_upper_and_swap_take_tls_like_the_root() {
    let plan = parse(
        "root=nbd:s:gold rd.nbdroot.overlay=nbd:10.0.0.1:upper:ext4::tls \
         rd.nbdroot.swap=nbd:s:swap",
    )
    .unwrap();
    let Some(crate::plan::Overlay::Nbd(upper)) = &plan.overlay else {
        panic!("{:?}", plan.overlay);
    };
    assert!(upper.opts.tls);
    assert!(plan.tls_for(upper).is_some());
    assert!(plan.tls_for(&plan.source.nbd().unwrap()).is_none());
    assert!(plan.tls_for(plan.swap.as_ref().unwrap()).is_none());

    let plan = parse(
        "root=nbd:s:gold rd.nbdroot.overlay=nbd:10.0.0.1:upper rd.nbdroot.swap=nbd:s:swap \
         rd.nbdroot.tls.ca=/ca.pem",
    )
    .unwrap();
    let Some(crate::plan::Overlay::Nbd(upper)) = &plan.overlay else {
        panic!("{:?}", plan.overlay);
    };
    for spec in [upper, plan.swap.as_ref().unwrap()] {
        let t = plan
            .tls_for(spec)
            .expect("TLS for every export of the boot");
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
    }
}
