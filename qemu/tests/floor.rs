//! The harness checks itself: its cpio writer, its image builder, and a real boot of the
//! kernel floor.

use std::path::PathBuf;
use std::process::Command;

use nbdroot::initramfs::cpio::CpioWriter;
use nbdroot_qemu::{
    cache_dir, debian_cloud_kernel, debugfs_cat, e2fsck_clean, floor_initramfs, probe_root, run,
    VmConfig,
};

/// A scratch path under the cache dir, distinct per test.
fn scratch(name: &str) -> PathBuf {
    let dir = cache_dir().expect("cache dir").join("selftest");
    std::fs::create_dir_all(&dir).expect("create selftest dir");
    dir.join(name)
}

/// An independent reader of the format for the round trip: one
/// `"<name> <mode, octal> <rdev major>:<minor> <data>"` line per entry.
fn parse_newc(mut buf: &[u8]) -> Vec<String> {
    let mut entries = Vec::new();
    loop {
        assert_eq!(&buf[..6], b"070701", "magic before {} bytes", buf.len());
        let field = |i: usize| {
            let hex = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap();
            usize::from_str_radix(hex, 16).unwrap()
        };
        let (mode, size, major, minor, namesize) =
            (field(1), field(6), field(9), field(10), field(11));
        let name = String::from_utf8(buf[110..110 + namesize].to_vec()).unwrap();
        let name = name.strip_suffix('\0').expect("name is NUL-terminated");
        let data_at = (110 + namesize).next_multiple_of(4);
        let data = String::from_utf8_lossy(&buf[data_at..data_at + size]);
        let entry = format!("{name} {mode:o} {major}:{minor} {data}");
        buf = &buf[(data_at + size).next_multiple_of(4).min(buf.len())..];
        if name == "TRAILER!!!" {
            assert!(buf.is_empty(), "nothing after the trailer");
            return entries;
        }
        entries.push(entry);
    }
}

#[test]
fn nbdroot_cpio_writer_reads_back_independently() {
    let mut w = CpioWriter::new(Vec::new());
    w.dir("dev", 0o755).unwrap();
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
    w.file("a/odd-length-name", 0o644, b"12345").unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len() % 4, 0);
    let expect = [
        "dev 40755 0:0 ",
        "dev/console 20600 5:1 ",
        "init 100755 0:0 #!/bin/sh\n",
        "a/odd-length-name 100644 0:0 12345",
    ];
    assert_eq!(parse_newc(&bytes), expect);

    // A second opinion: busybox's cpio lists the same names.
    let path = scratch("roundtrip.cpio");
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new("/bin/busybox")
        .args(["cpio", "-tF"])
        .arg(&path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "busybox cpio -t: {out:?}");
    assert_eq!(listing, "dev\ndev/console\ninit\na/odd-length-name\n");
}

#[test]
fn probe_image_has_init() {
    let img =
        probe_root(&scratch("probe-root"), &scratch("probe.ext4"), 16).expect("build probe image");
    let init = debugfs_cat(&img.path, "/sbin/init").expect("read /sbin/init");
    let init = String::from_utf8(init).unwrap();
    assert!(init.starts_with("#!/bin/busybox sh\n"), "{init}");
    assert!(init.contains("NBDROOT-PROBE-DONE"), "{init}");
    assert!(debugfs_cat(&img.path, "/bin/busybox").unwrap().len() > 100_000);
    let missing = debugfs_cat(&img.path, "/no-such-file").unwrap_err();
    let missing = missing.to_string();
    assert!(missing.contains("/no-such-file"), "{missing}");
    e2fsck_clean(&img.path).expect("fresh image is clean");
}

#[test]
fn kernel_floor_boots() {
    let kernel = debian_cloud_kernel().expect("Debian cloud kernel");
    let initrd = scratch("floor.cpio.gz");
    floor_initramfs(&initrd).expect("build floor initramfs");
    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd);
    cfg.net = false;
    let vm = run(&cfg).expect("run QEMU");
    assert!(!vm.timed_out, "the floor powers off by itself\n{vm}");
    assert!(vm.status.success(), "{vm}");
    let uptime = vm.lines_with("NBDROOT-FLOOR uptime=");
    assert_eq!(uptime.len(), 1, "one floor marker\n{vm}");
    let (version, wall) = (kernel.version, vm.elapsed);
    eprintln!(
        "kernel {version} floor: guest uptime {} s, QEMU wall {wall:.2?}",
        uptime[0]
    );
}
