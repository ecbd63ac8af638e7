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

/// The commands users see, each with its own help.
const COMMANDS: [&str; 9] = [
    "connect",
    "disconnect",
    "check",
    "list",
    "info",
    "mkinitramfs",
    "plan",
    "boot",
    "status",
];

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_command_has_help_with_examples_and_exit_codes() {
    for cmd in COMMANDS {
        for args in [vec![cmd, "--help"], vec![cmd, "-h"], vec!["help", cmd]] {
            let o = nbdroot(&args);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
            assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
            let out = stdout(&o);
            for want in [
                &format!("Usage: nbdroot {cmd}")[..],
                "Examples:\n  ",
                "Exit status",
            ] {
                assert!(out.contains(want), "{args:?}: no {want:?} in\n{out}");
            }
        }
    }
}

#[test]
fn top_level_help_lists_the_commands_but_not_the_internal_ones() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let o = nbdroot(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = stdout(&o);
        assert!(out.contains("Usage: nbdroot [OPTIONS] <COMMAND>"), "{out}");
        assert!(out.contains("Examples:"), "{out}");
        for cmd in COMMANDS {
            assert!(
                out.contains(&format!("\n  {cmd} ")),
                "{cmd} missing in\n{out}"
            );
        }
        for hidden in ["serve", "supervise"] {
            assert!(
                !out.contains(&format!("\n  {hidden} ")),
                "{hidden} shown in\n{out}"
            );
        }
    }
    // A bare `nbdroot` is a usage error that shows the help.
    let o = nbdroot(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage: nbdroot"), "{}", stderr(&o));
}

#[test]
fn version_prints_the_crate_version() {
    for flag in ["-V", "--version"] {
        let o = nbdroot(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(
            stdout(&o),
            format!("nbdroot {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// A usage error: exit 2, nothing on stdout, one `error:` line (clap adds the usage when the
/// command line's shape is wrong, not for a bad value), and the pointer to the help; `want`
/// in the message.
fn assert_usage_error(args: &[&str], want: &str) {
    let o = nbdroot(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{args:?}: {err}"
    );
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    let message = err.split("\nUsage: nbdroot").next().unwrap_or_default();
    assert!(message.contains(want), "{args:?}: no {want:?} in\n{err}");
    assert!(
        err.ends_with("\nFor more information, try '--help'.\n"),
        "{args:?}: {err}"
    );
}

#[test]
fn bad_arguments_name_the_argument_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["frob"], "unrecognized subcommand 'frob'"),
        (&["help", "frob"], "'frob'"),
        (&["conect", "srv"], "'connect'"),
        (&["connect"], "<SERVER>"),
        (&["connect", "srv", "/dev/nbd0", "extra"], "'extra'"),
        (&["connect", "srv", "-Z"], "'-Z'"),
        (&["connect", "srv", "--frob"], "'--frob'"),
        (&["connect", "srv", "-N"], "'--name <EXPORT>'"),
        (&["-N", "root", "connect", "srv"], "'-N'"),
        (
            &["connect", "srv", "-b", "3"],
            "invalid value '3' for '--block-size <BYTES>': expected 512, 1024, 2048 or 4096",
        ),
        (
            &["connect", "srv", "--connections", "65"],
            "'65' for '--connections <N>': expected a count from 1 to 64",
        ),
        (&["connect", "srv", "-C", "0"], "'--connections <N>'"),
        (
            &["connect", "srv", "-t", "0"],
            "'0' for '--timeout <SECS>': expected whole seconds, at least 1",
        ),
        (
            &["connect", "srv", "--dead-timeout", "1.5"],
            "'1.5' for '--dead-timeout <SECS>': expected whole seconds",
        ),
        (&["connect", "srv", "--dead-timeout", "-1"], "'-1'"),
        (
            &["connect", "srv", "--priority", "32768"],
            "'--priority <N>': expected a swap priority from 0 to 32767",
        ),
        (
            &["connect", "srv", "--keepalive", "10,5"],
            "'10,5' for '--keepalive <IDLE,INTERVAL,COUNT|off>': expected",
        ),
        (&["connect", "srv", "--keepalive", "0,5,3"], "'0,5,3'"),
        (
            &["connect", "srv", "--tcp-user-timeout", "x"],
            "'--tcp-user-timeout <SECS>'",
        ),
        (&["connect", "srv", "--foreground"], "--ioctl"),
        (&["connect", "srv", "-L", "--persist"], "'--persist'"),
        (&["connect", "srv", "--nonetlink", "--swap"], "'--swap'"),
        (&["connect", "srv", "-L", "--mkswap"], "'--mkswap'"),
        (
            &["connect", "srv", "-L", "-i", "root"],
            "'--identifier <ID>'",
        ),
        (&["disconnect"], "<DEVICE>"),
        (&["check"], "<DEVICE>"),
        (&["check", "nbd0", "nbd1"], "'nbd1'"),
        (&["list"], "<SERVER>"),
        (&["list", "srv", "-N", "x"], "'-N'"),
        (
            &["list", "srv", "--retries", "1001"],
            "'1001' for '--retries <N>': expected a count from 0 to 1000",
        ),
        (
            &["info", "srv", "--connect-timeout", "0"],
            "'0' for '--connect-timeout <SECS>': expected whole seconds from 1 to 3600",
        ),
        (&["info", "srv", "-N"], "'--name <EXPORT>'"),
        (&["mkinitramfs", "-o"], "'--output <FILE>'"),
        (&["mkinitramfs", "--kver", "6.1"], "--output <FILE>"),
        (
            &["mkinitramfs", "-o", "x", "--nic-modules", ","],
            "',' for '--nic-modules <SET>': expected default, none or a comma-separated list",
        ),
        (&["plan", "root=dhcp", "rw"], "'rw'"),
        (&["plan", "--root-path"], "'--root-path <STRING>'"),
        (&["status", "extra"], "'extra'"),
        (&["boot", "--now"], "'--now'"),
    ];
    for (args, want) in cases {
        assert_usage_error(args, want);
    }
}

#[test]
fn no_input_makes_it_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let odd: &[&[&str]] = &[
        &["--"],
        &["-"],
        &[""],
        &["-v"],
        &["-vvv", "-V"],
        &["--help=x"],
        &["connect", "--block-size="],
        &["connect", "-C=", "srv"],
        &["connect", "--", "-srv"],
        &["connect", "srv", "--keepalive", ",,,"],
        &["connect", "srv", "--retries", "99999999999999999999999"],
        &["plan", "--", "--root-path"],
        &["plan", "root=dhcp", "--root-path", ""],
        &["mkinitramfs", "-o", ""],
        &["help", "help", "help"],
        &["serve"],
        &["supervise"],
        &["supervise", "", "x"],
    ];
    for args in odd {
        let o = nbdroot(args);
        let err = stderr(&o);
        assert!(matches!(o.status.code(), Some(0..=2)), "{args:?}: {o:?}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{args:?}: {err}"
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_nbdroot"))
        .args([OsStr::new("plan"), OsStr::from_bytes(b"root=nbd:\xff:1")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn verbose_is_accepted_before_and_after_the_command() {
    let line = "root=nbd:10.0.2.2:root";
    for args in [
        ["-v", "plan", line],
        ["plan", "-v", line],
        ["plan", line, "--verbose"],
    ] {
        let o = nbdroot(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn plan_with_a_root_path_shows_the_export_dhcp_would_give() {
    let o = nbdroot(&[
        "plan",
        "root=dhcp ip=dhcp",
        "--root-path",
        "nbd:10.0.2.2:root:ext4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("export:           \"root\""), "{out}");
    assert!(out.contains("type:             ext4"), "{out}");

    let o = nbdroot(&["plan", "root=dhcp", "--root-path", "nbd:srv"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("nbdroot: error: root-path \"nbd:srv\": "),
        "{err}"
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
    let tmp = Scratch::new("cli-dyn");
    let dir = tmp.0.clone();
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
    let tmp = Scratch::new("cli-missing");
    let dir = tmp.0.clone();
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

/// `connect` with `env` set, as a user would run it.
fn nbdroot_env(args: &[&str], env: (&str, &Path)) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbdroot"))
        .args(args)
        .env(env.0, env.1)
        .output()
        .expect("run nbdroot")
}

#[test]
fn connect_with_a_lone_device_attaches_its_nbdtab_entry() {
    let tmp = Scratch::new("cli-nbdtab");
    let dir = tmp.0.clone();
    let table = dir.join("nbdtab");
    fs::write(
        &table,
        "# nbd-client's format\n\
         nbd1 10.9.9.9 other\n\
         nbd3 127.0.0.1 data port=10900,bs=4096,frob,_local\n",
    )
    .unwrap();
    let table_arg = table.to_str().unwrap();
    // The host has no nbd driver: the lookup is seen in the log, then the attach fails.
    for args in [
        vec!["connect", "nbd3", "--nbdtab", table_arg, "-v"],
        vec!["connect", "/dev/nbd3", "--verbose", "--nbdtab", table_arg],
    ] {
        let o = nbdroot(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        for want in [
            format!("nbdroot: warning: {table_arg}: line 3: unknown option \"frob\" ignored (prefix local options with \"_\")\n"),
            format!("nbdroot: {table_arg}: line 3: nbd3 is 127.0.0.1:10900 export \"data\"\n"),
            "nbdroot: error: /dev/nbd3 does not exist".to_string(),
        ] {
            assert!(err.contains(&want), "{args:?}: missing {want} in\n{err}");
        }
        assert!(!err.contains("_local"), "{err}");
    }
    // $NBDROOT_NBDTAB names the table when --nbdtab does not.
    let o = nbdroot_env(&["connect", "nbd1", "-v"], ("NBDROOT_NBDTAB", &table));
    assert!(
        stderr(&o).contains("line 2: nbd1 is 10.9.9.9:10809 export \"other\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn connect_names_what_is_wrong_with_the_nbdtab_in_one_line() {
    let tmp = Scratch::new("cli-nbdtab-bad");
    let dir = tmp.0.clone();
    let table = dir.join("nbdtab");
    let t = table.to_str().unwrap();
    let cases = [
        ("nbd0 srv x certfile=/etc/c.pem\n", "nbd0", format!("nbdroot: error: {t}: line 1: \"certfile=\" and \"keyfile=\" go together; give both or neither")),
        // nbdtab's TLS options are connect's: the CA is read before any connection.
        ("nbd0 srv x cacertfile=/nonexistent/ca.pem\n", "nbd0", "nbdroot: error: TLS with srv:10809: cannot read the TLS CA certificate /nonexistent/ca.pem: No such file or directory (os error 2)".to_string()),
        ("nbd0 srv x tls\n", "nbd0", "nbdroot: error: TLS with srv:10809: TLS needs the CA certificate that signed the server's (--tls-ca, rd.nbdroot.tls.ca=); to skip verifying the server, say so with --tls-verify=none or rd.nbdroot.tls.verify=none".to_string()),
        ("nbd0 srv x\n", "nbd2", format!("nbdroot: error: {t}: no entry for nbd2")),
        ("nbd0 srv x bs=3\n", "nbd0", format!("nbdroot: error: {t}: line 1: option \"bs=3\": expected 512, 1024, 2048 or 4096")),
        ("nbd0 srv x persist,nonetlink\n", "nbd0", format!("nbdroot: error: {t}: line 1: \"persist\" needs the netlink interface, and \"nonetlink\" asks for ioctls")),
    ];
    for (text, device, want) in cases {
        fs::write(&table, text).unwrap();
        let o = nbdroot(&["connect", device, "--nbdtab", t]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{text}: {err}");
        assert_eq!(err.trim_end(), want, "{text}");
    }
    let missing = dir.join("none");
    let o = nbdroot(&["connect", "nbd0", "--nbdtab", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "nbdroot: error: {}: cannot read it (No such file or directory (os error 2)); \"nbd0\" alone names a device listed there, or give a server",
            missing.display()
        )
    );
}

#[test]
fn a_malformed_replica_is_refused_with_the_form() {
    let o = nbdroot(&["connect", "10.0.0.1", "--replica", "nbd://10.0.0.2/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("invalid value 'nbd://10.0.0.2/x' for '--replica <HOST[:PORT]>'")
            && err.contains("expected <host>[:<port>] or [<IPv6>]:<port>"),
        "{err}"
    );
    // --replicas-shared means nothing without replicas.
    let o = nbdroot(&["connect", "10.0.0.1", "--replicas-shared"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
