//! VM tests of boot configuration: DHCP from QEMU's user network and from dnsmasq (with
//! root-path) in a private network namespace, Debian's `nbdroot=`, IPv6, labels and
//! partitions on the NBD device.

use std::fs;
use std::path::{Path, PathBuf};

use nbdroot_qemu::netns::{NetNs, HOST_IP, HOST_IP6};
use nbdroot_qemu::{boot_kit, debugfs_cat, free_port, qemu_nbd, run, RootFs, VmConfig, VmOutcome};

const STATIC_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("netboot-tests", name)
}

/// A probe root that also reports the DHCP lease file, the hostname and the resolv.conf
/// nbdroot leaves in /run for the root.
fn probe_image(dir: &Path, label: Option<&str>) -> PathBuf {
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_probe_step(
        r#"for f in /run/nbdroot/dhcp-*.env; do [ -f "$f" ] && while read -r l; do echo "NBDROOT-LEASE $l"; done < "$f"; done
while read -r l; do echo "NBDROOT-RESOLV $l"; done < /run/nbdroot/resolv.conf
echo "NBDROOT-HOSTNAME $(/bin/busybox hostname)""#,
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, label).expect("mkfs.ext4");
    img
}

fn vm(append: &str) -> VmConfig {
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.append = append.to_string();
    cfg
}

fn boot(cfg: &VmConfig) -> VmOutcome {
    let out = run(cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung:\n{out}");
    assert!(
        !out.contains("panicked at"),
        "a Rust panic reached the console:\n{out}"
    );
    out
}

fn assert_booted(out: &VmOutcome, device: &str) {
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the root's init did not finish:\n{out}"
    );
    let root = out.root_mount();
    assert!(root.starts_with(&format!("{device} / ")), "{root}\n{out}");
}

/// The line nbdroot printed before the boot ended in a panic.
fn assert_failed_with(out: &VmOutcome, want: &str) {
    assert!(
        out.log
            .lines()
            .any(|l| l.contains("nbdroot: ") && l.contains(want)),
        "no nbdroot line with {want:?}:\n{out}"
    );
    assert!(
        out.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{out}"
    );
    assert!(!out.contains("NBDROOT-PROBE"), "{out}");
}

#[test]
fn ip_dhcp_from_qemu_user_networking() {
    let dir = scratch("user-dhcp");
    let img = probe_image(&dir, None);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let out = boot(&vm(&format!("root=nbd:10.0.2.2:{} ip=dhcp rw", srv.port)));
    assert_booted(&out, "/dev/nbd0");
    let lease = out.lines_with("NBDROOT-LEASE ").join("\n");
    assert!(
        lease.contains("new_ip_address='10.0.2.15'"),
        "{lease}\n{out}"
    );
    assert!(lease.contains("new_routers='10.0.2.2'"), "{lease}");
    assert!(
        out.lines_with("NBDROOT-RESOLV ")
            .iter()
            .any(|l| l.starts_with("nameserver 10.0.2.3")),
        "{out}"
    );
}

#[test]
fn no_ip_parameter_means_dhcp_on_the_interface_with_a_link() {
    let dir = scratch("no-ip");
    let img = probe_image(&dir, None);
    let srv = qemu_nbd(&img, Some("root"), false).expect("qemu-nbd");
    // Export name through the forward on the default port, and dracut's netroot= with
    // root=/dev/nbd0.
    let mut cfg = vm("root=/dev/nbd0 netroot=nbd:10.0.2.100:root rw");
    cfg.guestfwd.push(("10.0.2.100".into(), 10809, srv.port));
    let out = boot(&cfg);
    assert_booted(&out, "/dev/nbd0");
    assert!(
        out.contains("eth0: 10.0.2.15/24 from DHCP server 10.0.2.2"),
        "{out}"
    );
}

#[test]
fn debian_nbdroot_with_port_and_device() {
    let dir = scratch("debian-static");
    let img = probe_image(&dir, None);
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let out = boot(&vm(&format!(
        "nbdroot=10.0.2.2,{},nbd2 root=/dev/nbd2 {STATIC_IP} rw",
        srv.port
    )));
    assert_booted(&out, "/dev/nbd2");
}

/// A namespace with dnsmasq sending `options`, and qemu-nbd (`args`, then the image) serving
/// on the host side on a free port.
fn private_net(
    tag: &str,
    img: &Path,
    dnsmasq: impl FnOnce(u16) -> Vec<String>,
    args: &[&str],
) -> (NetNs, u16) {
    let port = free_port().expect("free port");
    let mut ns = NetNs::new(tag).expect("network namespace");
    ns.dnsmasq(&dnsmasq(port)).expect("dnsmasq");
    let (port_s, img_s) = (port.to_string(), img.display().to_string());
    let mut argv = vec![
        "qemu-nbd",
        "-f",
        "raw",
        "--persistent",
        "--shared=4",
        "-p",
        &port_s,
    ];
    argv.extend(args);
    argv.push(&img_s);
    ns.spawn("start qemu-nbd in the namespace", &argv)
        .expect("qemu-nbd");
    let bound = args
        .iter()
        .skip_while(|a| **a != "-b")
        .nth(1)
        .copied()
        .unwrap_or(HOST_IP);
    ns.wait_listening(bound, port).expect("qemu-nbd listening");
    (ns, port)
}

fn in_ns(ns: &NetNs, append: &str) -> VmConfig {
    let mut cfg = vm(append);
    cfg.netns = Some(ns.name.clone());
    cfg
}

#[test]
fn dhcp_root_path_with_netroot_dhcp() {
    let dir = scratch("rootpath-netroot");
    let img = probe_image(&dir, None);
    // The root-path names the port (the server's is random), the fstype and the flags.
    let (ns, port) = private_net(
        "rp1",
        &img,
        |port| {
            vec![
                format!("dhcp-option=option:root-path,nbd:{HOST_IP}:{port}:ext4:noatime"),
                "dhcp-option=option:domain-name,example.test".into(),
                "dhcp-option=12,guest7".into(),
            ]
        },
        &["-b", HOST_IP],
    );
    let out = boot(&in_ns(&ns, "root=/dev/root netroot=dhcp rw"));
    assert_booted(&out, "/dev/nbd0");
    let root = out.root_mount();
    assert!(root.starts_with("/dev/nbd0 / ext4 rw,noatime"), "{root}");
    let lease = out.lines_with("NBDROOT-LEASE ").join("\n");
    assert!(
        lease.contains(&format!(
            "new_root_path='nbd:{HOST_IP}:{port}:ext4:noatime'"
        )),
        "{lease}\n{out}"
    );
    assert_eq!(out.lines_with("NBDROOT-HOSTNAME "), ["guest7"], "{out}");
    assert!(
        out.lines_with("NBDROOT-RESOLV ")
            .iter()
            .any(|l| l.contains("example.test")),
        "{out}"
    );
    drop(ns);
    assert!(
        String::from_utf8(debugfs_cat(&img, "/probe-result").unwrap())
            .unwrap()
            .starts_with("ok")
    );
}

#[test]
fn dhcp_root_path_with_root_dhcp_and_export_name() {
    let dir = scratch("rootpath-root-dhcp");
    let img = probe_image(&dir, None);
    let (ns, _) = private_net(
        "rp2",
        &img,
        |port| {
            vec![format!(
                "dhcp-option=option:root-path,nbd:{HOST_IP}:{port}:::export=rootfs"
            )]
        },
        &["-b", HOST_IP, "-x", "rootfs"],
    );
    let out = boot(&in_ns(&ns, "root=dhcp ro"));
    assert_booted(&out, "/dev/nbd0");
    assert!(out.root_mount().starts_with("/dev/nbd0 / ext4 ro"), "{out}");
}

#[test]
fn debian_nbdroot_dhcp_from_root_path() {
    let dir = scratch("debian-dhcp");
    let img = probe_image(&dir, None);
    let (ns, port) = private_net(
        "deb",
        &img,
        |port| {
            vec![format!(
                "dhcp-option=option:root-path,{HOST_IP},{port},nbd1"
            )]
        },
        &["-b", HOST_IP],
    );
    let out = boot(&in_ns(&ns, "nbdroot=dhcp rw"));
    assert_booted(&out, "/dev/nbd1");
    // Only the server from DHCP (its identifier: dnsmasq sends no next-server here).
    let out = boot(&in_ns(&ns, &format!("ip=dhcp nbdroot=dhcp,{port} rw")));
    assert_booted(&out, "/dev/nbd0");
}

#[test]
fn dhcp_without_root_path_names_interface_and_server() {
    let mut ns = NetNs::new("norp").expect("namespace");
    ns.dnsmasq(&[]).expect("dnsmasq");
    let out = boot(&in_ns(&ns, "root=dhcp"));
    assert_failed_with(
        &out,
        &format!(
            "DHCP on eth0 (server {HOST_IP}) gave no root-path (option 17), which root=dhcp needs"
        ),
    );
}

#[test]
fn ipv6_static_address_and_server() {
    let dir = scratch("ipv6");
    let img = probe_image(&dir, None);
    let (ns, port) = private_net("v6", &img, |_| vec![], &["-b", HOST_IP6]);
    let out = boot(&in_ns(
        &ns,
        &format!("root=nbd:[{HOST_IP6}]:{port} ip=[fd77::15]::[{HOST_IP6}]:64::eth0:none rw"),
    ));
    assert_booted(&out, "/dev/nbd0");
    assert!(out.contains("eth0: fd77::15/64 via fd77::1"), "{out}");
}

/// A disk image: an MBR with one partition at 1 MiB holding `fs`.
fn partitioned(fs_img: &Path, out: &Path) {
    let fs_bytes = fs::read(fs_img).unwrap();
    let mut disk = vec![0u8; 1 << 20];
    let sectors = (fs_bytes.len() / 512) as u32;
    let e = &mut disk[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(&fs_bytes);
    fs::write(out, disk).unwrap();
}

#[test]
fn root_by_label_and_by_partition() {
    let dir = scratch("label");
    let img = probe_image(&dir, Some("nbdrootfs"));
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let out = boot(&vm(&format!(
        "root=LABEL=nbdrootfs netroot=nbd:10.0.2.2:{} {STATIC_IP} rw",
        srv.port
    )));
    assert_booted(&out, "/dev/nbd0");
    let out = boot(&vm(&format!(
        "root=LABEL=other netroot=nbd:10.0.2.2:{} {STATIC_IP} rd.nbdroot.link_timeout=2",
        srv.port
    )));
    assert_failed_with(&out, "root=LABEL=other: no filesystem with that label on /dev/nbd0 after 2 s (found: /dev/nbd0 ext4 LABEL=nbdrootfs UUID=");
    drop(srv);

    let disk = dir.join("disk.raw");
    partitioned(&img, &disk);
    let srv = qemu_nbd(&disk, None, false).expect("qemu-nbd");
    let out = boot(&vm(&format!(
        "root=/dev/nbd0p1 netroot=nbd:10.0.2.2:{} {STATIC_IP} rw",
        srv.port
    )));
    assert_booted(&out, "/dev/nbd0p1");
    let out = boot(&vm(&format!(
        "root=LABEL=nbdrootfs netroot=nbd:10.0.2.2:{} {STATIC_IP} rw",
        srv.port
    )));
    assert_booted(&out, "/dev/nbd0p1");
}

#[test]
fn ifname_mtu_mac_and_nameserver_are_applied() {
    let dir = scratch("ifname");
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_probe_step(
        r#"n=/sys/class/net/boot0
echo "NBDROOT-NET mtu=$(/bin/busybox cat $n/mtu) mac=$(/bin/busybox cat $n/address)"
while read -r l; do echo "NBDROOT-RESOLV $l"; done < /run/nbdroot/resolv.conf"#,
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let mut cfg = vm(&format!(
        "root=nbd:10.0.2.2:{} ifname=boot0:52:54:00:12:34:56 \
         ip=10.0.2.15::10.0.2.2:24::boot0:none:1400:52:54:00:ab:cd:ef nameserver=10.0.2.3 rw",
        srv.port
    ));
    cfg.nic = "virtio-net-pci,mac=52:54:00:12:34:56".into();
    let out = boot(&cfg);
    assert_booted(&out, "/dev/nbd0");
    assert_eq!(
        out.lines_with("NBDROOT-NET "),
        ["mtu=1400 mac=52:54:00:ab:cd:ef"],
        "renamed by MAC, then MTU and MAC from ip=:\n{out}"
    );
    assert!(
        out.lines_with("NBDROOT-RESOLV ")
            .contains(&"nameserver 10.0.2.3"),
        "{out}"
    );
}
