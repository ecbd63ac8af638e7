//! VM tests of `nbdroot connect/check/disconnect` against the kernel driver: the guest boots
//! its root from NBD as usual, then its init runs the client on a second export and reports
//! `NBDT key=value` lines; the host checks those and the bytes on the server.

use std::fs;
use std::path::Path;

use nbdroot_qemu::{boot_kit, nbdkit, qemu_nbd, run, NbdServer, RootFs, VmConfig, VmOutcome};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";
const DATA_MIB: usize = 16;

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("client-tests", name)
}

/// Shell helpers for the guest: `n` runs the client, `say` reports a value.
const PRELUDE: &str = r#"bb=/bin/busybox
n=/bin/nbdroot
say() { echo "NBDT $*"; }
# Waits up to 5 s for `$n check $1` to return $2.
wait_check() { i=0; while [ $i -lt 50 ]; do $n check $1 >/dev/null 2>&1; [ $? = $2 ] && return 0; $bb sleep 0.1; i=$((i+1)); done; return 1; }"#;

/// Boots a root that has the nbdroot binary and runs `script` in its init.
fn boot_with_script(name: &str, script: &str) -> (VmOutcome, NbdServer) {
    let dir = scratch(name);
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    root.add_probe_step(&format!("{PRELUDE}\n{script}"));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let server = qemu_nbd(&img, None, false).expect("qemu-nbd for the root");
    let s = boot_kit();
    let mut cfg = VmConfig::new(&s.kernel.vmlinuz, &s.initrd);
    cfg.append = format!("root=nbd:10.0.2.2:{} {IP} rw", server.port);
    let out = run(&cfg).expect("run QEMU");
    assert!(!out.timed_out, "the guest hung:\n{out}");
    assert!(
        out.contains("NBDROOT-PROBE-DONE"),
        "the guest's script did not finish:\n{out}"
    );
    (out, server)
}

/// The value reported as `NBDT key=value`.
fn value<'a>(out: &'a VmOutcome, key: &str) -> &'a str {
    let prefix = format!("NBDT {key}=");
    out.log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} reported:\n{out}"))
        .trim_end()
}

fn zeroed_file(path: &Path, mib: usize) {
    fs::write(path, vec![0u8; mib << 20]).expect("data file");
}

/// The first `len` bytes of the guest's /bin/busybox, which the scripts write to devices.
fn busybox_head(len: usize) -> Vec<u8> {
    fs::read("/bin/busybox").expect("busybox")[..len].to_vec()
}

#[test]
fn netlink_attach_check_write_readonly_disconnect() {
    let dir = scratch("netlink-data");
    let data = dir.join("data.raw");
    zeroed_file(&data, DATA_MIB);
    let ro_img = dir.join("ro.raw");
    zeroed_file(&ro_img, 4);
    let data_srv = qemu_nbd(&data, Some("data"), false).expect("qemu-nbd data");
    let ro_srv = qemu_nbd(&ro_img, None, true).expect("qemu-nbd read-only");
    let script = format!(
        r#"$n check /dev/nbd1 >/dev/null 2>&1; say check-before=$?
dev=$($n connect nbd://10.0.2.2:{data}/data /dev/nbd1); say connect=$? dev=$dev
$n check /dev/nbd1 >/dev/null; say check-after=$?
say size=$($bb blockdev --getsize64 /dev/nbd1)
$bb dd if=/bin/busybox of=/dev/nbd1 bs=4096 count=64 conv=fsync 2>/dev/null; say dd=$?
auto=$($n connect 10.0.2.2:{ro}); say auto-dev=$auto
say ro-sysfs=$($bb cat /sys/block/${{auto#/dev/}}/ro)
$bb dd if=/bin/busybox of=$auto bs=4096 count=1 conv=fsync 2>/tmp/ro-err; say ro-dd=$?
say ro-err=$($bb head -n1 /tmp/ro-err)
dev3=$($n connect 10.0.2.2:{data} -N data --readonly /dev/nbd3); say forced-ro=$($bb cat /sys/block/nbd3/ro)
$bb dd if=/bin/busybox of=/dev/nbd3 bs=4096 count=1 conv=fsync 2>/dev/null; say forced-ro-dd=$?
$n disconnect /dev/nbd1; say disconnect=$?
wait_check /dev/nbd1 1; say check-end=$?
$n check /dev/nbd99 >/dev/null 2>&1; say check-missing=$?
$n connect 10.0.2.2:{data} -N data /dev/nbd5 --persist >/dev/null; say persist=$?
say persist-state=$($n status | $bb grep -A5 '^nbd5:' | $bb grep state= | $bb tr -d ' ')
$n disconnect /dev/nbd5
i=0; while [ $i -lt 100 ] && ! $n status | $bb grep -A5 '^nbd5:' | $bb grep -q state=gone; do $bb sleep 0.1; i=$((i+1)); done
say persist-after=$($n status | $bb grep -A5 '^nbd5:' | $bb grep state= | $bb tr -d ' ')
$n connect 10.0.2.2:{data} -N nosuch /dev/nbd4 2>/tmp/err; say bad-export=$?
say bad-export-err=$($bb cat /tmp/err)"#,
        data = data_srv.port,
        ro = ro_srv.port
    );
    let (out, _root) = boot_with_script("netlink", &script);
    assert_eq!(value(&out, "check-before"), "1", "{out}");
    assert_eq!(value(&out, "connect"), "0 dev=/dev/nbd1", "{out}");
    assert_eq!(value(&out, "check-after"), "0");
    assert_eq!(value(&out, "size"), (DATA_MIB << 20).to_string());
    assert_eq!(value(&out, "dd"), "0");
    // The kernel picked a free device for the read-only export; writes fail there.
    assert!(value(&out, "auto-dev").starts_with("/dev/nbd"), "{out}");
    assert_ne!(value(&out, "auto-dev"), "/dev/nbd1");
    assert_eq!(value(&out, "ro-sysfs"), "1");
    assert_ne!(
        value(&out, "ro-dd"),
        "0",
        "a write to a read-only export must fail"
    );
    let ro_err = value(&out, "ro-err");
    assert!(
        ro_err.contains("Operation not permitted") || ro_err.contains("Read-only"),
        "{ro_err}"
    );
    assert_eq!(value(&out, "forced-ro"), "1");
    assert_ne!(value(&out, "forced-ro-dd"), "0");
    assert_eq!(value(&out, "disconnect"), "0");
    assert_eq!(
        value(&out, "check-end"),
        "0",
        "check reports not connected after disconnect"
    );
    assert_eq!(value(&out, "check-missing"), "2");
    assert_eq!(value(&out, "persist"), "0", "{out}");
    assert_eq!(value(&out, "persist-state"), "state=connected", "{out}");
    assert_eq!(
        value(&out, "persist-after"),
        "state=gone",
        "the supervisor noticed the disconnect:\n{out}"
    );
    assert_eq!(value(&out, "bad-export"), "1");
    assert!(
        value(&out, "bad-export-err").starts_with(&format!(
            "nbdroot: error: export \"nosuch\" not found on 10.0.2.2:{}",
            data_srv.port
        )),
        "{out}"
    );
    drop((data_srv, ro_srv));
    let written = fs::read(&data).unwrap();
    assert_eq!(
        written[..64 * 4096],
        busybox_head(64 * 4096)[..],
        "bytes on the server"
    );
    assert!(
        fs::read(&ro_img).unwrap().iter().all(|&b| b == 0),
        "nothing reached the read-only export"
    );
}

/// An MBR with one Linux partition from sector 2048 to the end of a `mib` MiB disk.
fn mbr_disk(path: &Path, mib: usize) {
    let mut disk = vec![0u8; mib << 20];
    let sectors = ((mib << 20) / 512) as u32;
    let entry = &mut disk[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors - 2048).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    fs::write(path, disk).unwrap();
}

#[test]
fn ioctl_attach_rescans_partitions_and_serves_until_disconnect() {
    let dir = scratch("ioctl-data");
    let data = dir.join("disk.raw");
    mbr_disk(&data, DATA_MIB);
    let srv = qemu_nbd(&data, None, false).expect("qemu-nbd");
    let script = format!(
        r#"dev=$($n connect 10.0.2.2:{port} /dev/nbd2 --ioctl); say connect=$? dev=$dev
say check=$($n check /dev/nbd2)
pid=$($n check /dev/nbd2); say daemon-argv0=$($bb tr '\0' ' ' < /proc/$pid/cmdline | $bb cut -d' ' -f1)
say daemon-oom=$($bb cat /proc/$pid/oom_score_adj) daemon-$($bb grep VmLck /proc/$pid/status | $bb tr -d ' \t')
i=0; while [ ! -b /dev/nbd2p1 ] && [ $i -lt 50 ]; do $bb sleep 0.1; i=$((i+1)); done
[ -b /dev/nbd2p1 ]; say partition=$?
$bb dd if=/bin/busybox of=/dev/nbd2p1 bs=4096 count=16 conv=fsync 2>/dev/null; say dd=$?
$n disconnect /dev/nbd2; say disconnect=$?
wait_check /dev/nbd2 1; say check-end=$?"#,
        port = srv.port
    );
    let (out, _root) = boot_with_script("ioctl", &script);
    assert_eq!(value(&out, "connect"), "0 dev=/dev/nbd2", "{out}");
    let pid = value(&out, "check");
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 1),
        "check prints the serving pid: {pid}\n{out}"
    );
    assert_eq!(
        value(&out, "partition"),
        "0",
        "/dev/nbd2p1 appeared:\n{out}"
    );
    assert_eq!(value(&out, "dd"), "0");
    assert_eq!(value(&out, "disconnect"), "0");
    assert_eq!(value(&out, "check-end"), "0", "{out}");
    drop(srv);
    let disk = fs::read(&data).unwrap();
    assert_eq!(
        disk[1 << 20..(1 << 20) + 16 * 4096],
        busybox_head(16 * 4096)[..]
    );
}

#[test]
fn four_connections_when_the_server_allows_multi_conn() {
    let dir = scratch("multi-data");
    let data = dir.join("data.raw");
    zeroed_file(&data, DATA_MIB);
    let log = dir.join("nbdkit-connections.log");
    let srv = nbdkit(&[
        "--filter=log",
        "file",
        data.to_str().unwrap(),
        &format!("logfile={}", log.display()),
    ])
    .expect("nbdkit");
    let script = format!(
        r#"dev=$($n connect 10.0.2.2:{port} /dev/nbd1 -C 4); say connect=$? dev=$dev
$bb dd if=/bin/busybox of=/dev/nbd1 bs=65536 count=16 conv=fsync 2>/dev/null; say dd=$?
echo 3 > /proc/sys/vm/drop_caches
$bb dd if=/dev/nbd1 of=/tmp/back bs=65536 count=16 2>/dev/null
$bb head -c 1048576 /bin/busybox > /tmp/want
$bb cmp /tmp/want /tmp/back; say readback=$?
$n disconnect /dev/nbd1; say disconnect=$?"#,
        port = srv.port
    );
    let (out, _root) = boot_with_script("multi", &script);
    assert_eq!(value(&out, "connect"), "0 dev=/dev/nbd1", "{out}");
    assert_eq!(value(&out, "dd"), "0");
    assert_eq!(
        value(&out, "readback"),
        "0",
        "data read back through 4 sockets matches"
    );
    assert_eq!(value(&out, "disconnect"), "0");
    drop(srv);
    let log = fs::read_to_string(&log).expect("nbdkit log");
    let connects = log.lines().filter(|l| l.contains("Connect")).count();
    assert_eq!(connects, 4, "the server saw four connections:\n{log}");
    assert_eq!(
        fs::read(&data).unwrap()[..1 << 20],
        busybox_head(1 << 20)[..]
    );
}
