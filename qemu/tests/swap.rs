//! VM test of swap over NBD: a guest with 160 MiB of RAM swaps to an NBD export while one
//! process touches three times that.

use std::fs;
use std::time::Duration;

use nbdroot_qemu::{boot_kit, cache_dir, nbdkit, qemu_nbd, run, RootFs, VmConfig};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

#[test]
fn swap_on_nbd_carries_three_times_the_ram() {
    let dir = cache_dir().expect("cache dir").join("swap-test");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    // busybox dd with a 480 MiB block allocates and fills one 480 MiB buffer.
    root.add_probe_step(
        r#"bb=/bin/busybox
cs() { read up _ < /proc/uptime; echo ${up%.*}${up#*.}; }
while read -r l; do echo "NBDT-SWAPS $l"; done < /proc/swaps
echo "NBDT min_free_kbytes=$($bb cat /proc/sys/vm/min_free_kbytes)"
echo "NBDT memtotal_kib=$($bb awk '/MemTotal/ {print $2}' /proc/meminfo)"
t0=$(cs)
$bb dd if=/dev/zero of=/dev/null bs=480M count=1 2>/dev/null; r=$?
t1=$(cs)
echo "NBDT hog=$r cs=$((t1-t0)) pswpout=$($bb awk '/^pswpout/ {print $2}' /proc/vmstat)""#,
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 64, None).expect("mkfs.ext4");
    let root_srv = qemu_nbd(&img, None, false).expect("qemu-nbd");
    let swap_srv = nbdkit(&["memory", "768M"]).expect("nbdkit");
    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.memory_mib = 160;
    cfg.deadline = Duration::from_secs(400);
    cfg.append = format!(
        "root=nbd:10.0.2.2:{} {IP} rw rd.nbdroot.swap=nbd:10.0.2.2:{}:::mkswap,prio=5",
        root_srv.port, swap_srv.port
    );
    let out = run(&cfg).expect("run QEMU");
    assert!(
        !out.timed_out,
        "the guest did not finish within 400 s:\n{out}"
    );
    assert!(out.contains("NBDROOT-PROBE-DONE"), "{out}");
    let swaps = out.lines_with("NBDT-SWAPS ");
    assert!(
        swaps
            .iter()
            .any(|l| l.starts_with("/dev/nbd1 ") && l.split_whitespace().last() == Some("5")),
        "/dev/nbd1 is swap with priority 5: {swaps:?}\n{out}"
    );
    let line = out
        .log
        .lines()
        .find(|l| l.starts_with("NBDT hog="))
        .expect("hog result");
    assert!(
        line.starts_with("NBDT hog=0 "),
        "the 480 MiB process completed: {line}\n{out}"
    );
    let pswpout: u64 = line
        .rsplit("pswpout=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pswpout > 200 * 256,
        "more than 200 MiB went to swap: {pswpout} pages"
    );
    let min_free: u64 = out
        .log
        .lines()
        .find_map(|l| l.strip_prefix("NBDT min_free_kbytes="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(min_free >= 8192, "vm.min_free_kbytes raised: {min_free}");
    eprintln!("{line}; min_free_kbytes={min_free}");
}
