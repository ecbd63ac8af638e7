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
        "port: 10809",
        "export: \"root\"",
        "read_only: false",
        "prefix_len: 24",
        "\"noatime\"",
    ] {
        assert!(out.contains(want), "missing {want} in\n{out}");
    }
}

#[test]
fn bad_parameters_give_one_line_with_value_and_form() {
    let cases = [
        ("root=nbd:srv", "nbdroot: error: root=nbd:srv: the port or export name is missing; expected root=nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]"),
        ("root=nbd:srv:99999", "nbdroot: error: root=nbd:srv:99999: port 99999 is out of range 1-65535; expected"),
        ("root=nbd:srv:1 ip=10.0.2.15::gw", "nbdroot: error: ip=10.0.2.15::gw: gateway \"gw\" is not an IPv4 address; expected ip="),
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
