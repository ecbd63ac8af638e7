//! The `nbdroot` command on the host: exit codes and the one-line errors users see.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nbdroot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbdroot"))
        .args(args)
        .output()
        .expect("run nbdroot")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nbdroot-cli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plan_accepts_a_full_command_line() {
    let o = nbdroot(&[
        "plan",
        "root=nbd:10.0.2.2:root:ext4:noatime ip=10.0.2.15::10.0.2.2:24::eth0:off rw",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "  eth0:             static 10.0.2.15/24, gateway 10.0.2.2\n",
        "  address:          10.0.2.2:10809\n",
        "  export:           \"root\"\n",
        "  type:             ext4\n",
        "  options:          noatime\n",
        "  mode:             read-write (rw on the kernel command line)\n",
    ] {
        assert!(out.contains(want), "missing {want} in\n{out}");
    }
}

#[test]
fn bad_parameters_give_one_line_with_value_and_form() {
    let cases = [
        ("root=nbd:srv", "nbdroot: error: root=nbd:srv: the port or export name is missing; expected root=nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]"),
        ("root=nbd:srv:99999", "nbdroot: error: root=nbd:srv:99999: port 99999 is out of range 1-65535; expected"),
        ("root=nbd:srv:1 ip=10.0.2.15::gw", "nbdroot: error: ip=10.0.2.15::gw: gateway \"gw\" is not an IP address; expected ip="),
        ("root=/dev/sda1", "nbdroot: error: no NBD root on the kernel command line"),
        ("root=nbd:srv:1:::bs=3", "nbdroot: error: root=nbd:srv:1:::bs=3: nbd option \"bs=3\": expected a block size"),
    ];
    for (line, want) in cases {
        let o = nbdroot(&["plan", line]);
        assert_eq!(o.status.code(), Some(1), "{line}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{line}: {err}");
        assert!(err.starts_with(want), "{line}\n  got:  {err}  want: {want}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = nbdroot(&["mkinitramfs"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--output"));
}

#[test]
fn boot_refuses_to_run_outside_pid_1() {
    let o = nbdroot(&["boot"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "nbdroot: error: boot runs only as PID 1 (the /init of an initramfs)"
    );
}

fn fake_kernel(dir: &Path) {
    let k = dir.join("modules/6.1.0-test/kernel");
    fs::create_dir_all(&k).unwrap();
    fs::write(k.join("nbd.ko"), "nbd").unwrap();
    fs::write(
        dir.join("modules/6.1.0-test/modules.dep"),
        "kernel/nbd.ko:\n",
    )
    .unwrap();
}

#[test]
fn mkinitramfs_refuses_a_dynamic_binary_and_leaves_nothing() {
    let dir = scratch("dyn");
    fake_kernel(&dir);
    let out = dir.join("initrd.img");
    let o = nbdroot(&[
        "mkinitramfs",
        "-o",
        out.to_str().unwrap(),
        "--kver",
        "6.1.0-test",
        "--kmoddir",
        dir.join("modules").to_str().unwrap(),
        "--modules",
        "nbd",
        "--binary",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("/bin/true is dynamically linked"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "only the fake kernel dir remains"
    );
}

/// The smallest file that passes for a static x86-64 executable.
fn static_elf(dir: &Path) -> PathBuf {
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[18] = 62;
    let path = dir.join("static-elf");
    fs::write(&path, elf).unwrap();
    path
}

#[test]
fn mkinitramfs_names_a_missing_module() {
    let dir = scratch("missing");
    fake_kernel(&dir);
    let out = dir.join("initrd.img");
    let o = nbdroot(&[
        "mkinitramfs",
        "-o",
        out.to_str().unwrap(),
        "--kver",
        "6.1.0-test",
        "--kmoddir",
        dir.join("modules").to_str().unwrap(),
        "--modules",
        "nbd,e1000e",
        "--binary",
        static_elf(&dir).to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "modules.dep: module \"e1000e\" is neither in modules.dep nor built into the kernel"
        ),
        "{err}"
    );
    assert!(!out.exists());
}

mod common;
use common::{nbd_server, qemu_nbd, Scratch};

#[test]
fn info_names_an_unreachable_server_and_its_attempts() {
    let port = common::free_port();
    let o = nbdroot(&["info", &format!("127.0.0.1:{port}"), "--retries", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "nbdroot: error: cannot reach 127.0.0.1:{port}: connection refused (after "
        )),
        "{err}"
    );
    assert!(last.ends_with(", 2 attempts)"), "{err}");
}

#[test]
fn list_and_info_print_what_the_server_says() {
    let scratch = Scratch::new("cli-info");
    let file = scratch.file("disk.img", 3 << 20, 0);
    let srv = qemu_nbd(&scratch, &["-x", "disk", "-D", "the test disk"], &file);
    let o = nbdroot(&["list", &format!("127.0.0.1:{}", srv.port)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "disk\tthe test disk\n");

    let o = nbdroot(&["info", &format!("nbd://127.0.0.1:{}/disk", srv.port)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "export=\"disk\":\n",
        "\texport-size: 3145728\n",
        "\tdescription: the test disk\n",
        "\tprotocol: newstyle-fixed\n",
        "\tis_read_only: false\n",
        "\tcan_flush: true\n",
        "\tblock_size_minimum: 1\n",
        "\tblock_size_preferred: 4096\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let o = nbdroot(&["info", &format!("127.0.0.1:{}", srv.port), "-N", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("export \"nosuch\" not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn info_shows_the_real_size_where_nbd_opt_info_says_zero() {
    let scratch = Scratch::new("cli-nbd-server");
    let (srv, _alpha, _beta) = nbd_server(&scratch, true);
    let o = nbdroot(&["info", &format!("127.0.0.1:{}", srv.port), "-N", "alpha"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\texport-size: 1048576\n"), "{out}");
    let o = nbdroot(&["list", &format!("127.0.0.1:{}", srv.port)]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alpha\nbeta\n");
}

#[test]
fn check_and_disconnect_report_bad_devices() {
    let o = nbdroot(&["check", "/dev/nbd99"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/dev/nbd99 does not exist"),
        "{}",
        stderr(&o)
    );
    let o = nbdroot(&["disconnect", "/dev/sda"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "nbdroot: error: \"/dev/sda\" is not an nbd device; expected /dev/nbdN, nbdN or N"
    );
    let o = nbdroot(&["connect", "http://srv/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("server \"http://srv/x\": unknown URI scheme; expected"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn connect_without_the_nbd_module_says_so() {
    // The host kernel has no nbd driver: neither interface is there.
    assert!(
        !std::path::Path::new("/sys/block/nbd0").exists(),
        "this test needs a host without nbd"
    );
    let o = nbdroot(&["connect", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        "nbdroot: error: no nbd devices: the nbd module is not loaded (modprobe nbd)",
        "{err}"
    );
}
