//! The DHCP client against a real server: dnsmasq in one network namespace, nbdroot's client in
//! another, joined by a veth pair. Nothing outside the two namespaces is touched: the client
//! runs in a re-executed copy of this test binary under `ip netns exec` (which also gives it a
//! /sys for the namespace, where the MAC is read), with its own UTS namespace for the hostname
//! and a tmpfs over /etc for resolv.conf.
//!
//! Needs root, `ip netns` and dnsmasq (Debian: dnsmasq-base); without them the test fails and
//! says so.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use nbdroot::net::dhcp::{self, DhcpPolicy};
use nbdroot::net::iface;

/// Set in the re-executed child: the scratch directory to write the lease file to, and the
/// parent's mount namespace.
const CHILD_ENV: &str = "NBDROOT_DHCP_TEST_DIR";
const PARENT_MNT_ENV: &str = "NBDROOT_DHCP_TEST_PARENT_MNT";
const CLIENT_IF: &str = "dhc0";
const SERVER_IF: &str = "dhs0";
const CLIENT_MAC: &str = "02:77:00:00:00:01";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ROOT_PATH: &str = "nbd:10.77.0.1:root:ext4";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `ip args…`; panics with its error output when it fails.
fn ip(args: &[&str]) -> String {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Two namespaces joined by a veth pair, dnsmasq serving one end. Dropping it (also on a
/// panic) stops dnsmasq and deletes the namespaces, which removes the veth pair.
struct Lab {
    server_ns: String,
    client_ns: String,
    scratch: PathBuf,
    dnsmasq: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let mut lab = Lab {
            server_ns: format!("nbdroot-dhcp-{pid}-srv"),
            client_ns: format!("nbdroot-dhcp-{pid}-cli"),
            scratch: std::env::temp_dir().join(format!("nbdroot-dhcp-{pid}")),
            dnsmasq: None,
        };
        let _ = fs::remove_dir_all(&lab.scratch);
        fs::create_dir_all(&lab.scratch).unwrap();
        for ns in [&lab.server_ns, &lab.client_ns] {
            let out = run(Command::new("ip").args(["netns", "add", ns]));
            assert!(
                out.status.success(),
                "cannot create network namespace {ns} with `ip netns add` (this test needs root \
                 and network namespaces): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let (s, c) = (lab.server_ns.clone(), lab.client_ns.clone());
        // Created inside the client namespace, its peer moved straight into the server's: the
        // host's namespace never sees either end.
        ip(&[
            "-n", &c, "link", "add", CLIENT_IF, "address", CLIENT_MAC, "type", "veth", "peer",
            "name", SERVER_IF, "netns", &s,
        ]);
        ip(&["-n", &s, "addr", "add", "10.77.0.1/24", "dev", SERVER_IF]);
        ip(&["-n", &s, "link", "set", SERVER_IF, "up"]);
        ip(&["-n", &s, "link", "set", "lo", "up"]);
        lab.start_dnsmasq();
        lab
    }

    fn start_dnsmasq(&mut self) {
        let log = fs::File::create(self.scratch.join("dnsmasq.log")).unwrap();
        let leases = self.scratch.join("dnsmasq.leases");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "dnsmasq"])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0", // no DNS
                "--user=root",
                &format!("--pid-file={}", self.scratch.join("dnsmasq.pid").display()),
                &format!("--interface={SERVER_IF}"),
                "--bind-interfaces",
                "--dhcp-range=10.77.0.50,10.77.0.150,255.255.255.0,1h",
                "--dhcp-option=option:router,10.77.0.1",
                "--dhcp-option=option:dns-server,10.77.0.1,10.77.0.53",
                "--dhcp-option=26,1400",
                &format!("--dhcp-option=option:root-path,{ROOT_PATH}"),
                // Option 121 replaces the router option: the default route must follow it.
                "--dhcp-option=121,10.99.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.2",
                "--domain=nbdroot.test",
                &format!("--dhcp-host={CLIENT_MAC},nbdclient"),
                // The next server (siaddr), as Debian's nbdroot=dhcp uses it.
                "--dhcp-boot=pxelinux.0,bootsrv,10.77.0.9",
                &format!("--dhcp-leasefile={}", leases.display()),
                "--log-dhcp",
                "--log-facility=-",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot start `ip netns exec … dnsmasq`: {e}"),
        };
        sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "dnsmasq exited at once ({status}); is it installed (Debian: apt-get install \
                 dnsmasq-base)? Its output:\n{}",
                self.dnsmasq_log()
            );
        }
        self.dnsmasq = Some(child);
    }

    fn dnsmasq_log(&self) -> String {
        fs::read_to_string(self.scratch.join("dnsmasq.log")).unwrap_or_default()
    }
}

fn in_range(a: Ipv4Addr) -> bool {
    (Ipv4Addr::new(10, 77, 0, 50)..=Ipv4Addr::new(10, 77, 0, 150)).contains(&a)
}

#[test]
fn lease_from_dnsmasq_is_applied_in_a_namespace() {
    let lab = Lab::new();
    let exe = std::env::current_exe().unwrap();
    let out = run(Command::new("ip")
        .args(["netns", "exec", &lab.client_ns])
        .arg(&exe)
        .args([
            "--exact",
            "client_side",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &lab.scratch)
        .env(PARENT_MNT_ENV, mount_ns()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the client in {} failed ({}):\n{stdout}\n{}\ndnsmasq:\n{}",
        lab.client_ns,
        out.status,
        String::from_utf8_lossy(&out.stderr),
        lab.dnsmasq_log()
    );

    // What the kernel in the client namespace now has.
    let c = &lab.client_ns;
    let env = fs::read_to_string(lab.scratch.join("run/dhcp-dhc0.env")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in the lease file:\n{env}"))
            .trim_matches('\'')
            .to_string()
    };
    let address: Ipv4Addr = var("new_ip_address").parse().unwrap();
    assert!(in_range(address), "{address}");
    let addr = ip(&["-n", c, "-4", "-o", "addr", "show", "dev", CLIENT_IF]);
    assert!(
        addr.contains(&format!("inet {address}/24 brd 10.77.0.255 ")),
        "{addr}"
    );
    let routes = ip(&["-n", c, "-4", "route", "show"]);
    for want in [
        "default via 10.77.0.2 dev dhc0",
        "10.99.0.0/16 via 10.77.0.254 dev dhc0",
        &format!("10.77.0.0/24 dev dhc0 proto kernel scope link src {address}"),
    ] {
        assert!(routes.contains(want), "no route {want:?} in:\n{routes}");
    }
    assert!(
        !routes.contains("via 10.77.0.1"),
        "option 3 must yield to 121:\n{routes}"
    );
    let link = ip(&["-n", c, "link", "show", "dev", CLIENT_IF]);
    assert!(
        link.contains(" mtu 1400 ") && link.contains(",UP"),
        "{link}"
    );

    assert_eq!(var("new_subnet_mask"), "255.255.255.0");
    assert_eq!(var("new_routers"), "10.77.0.1");
    assert_eq!(var("new_domain_name_servers"), "10.77.0.1 10.77.0.53");
    assert_eq!(var("new_host_name"), "nbdclient");
    assert_eq!(var("new_domain_name"), "nbdroot.test");
    assert_eq!(var("new_interface_mtu"), "1400");
    assert_eq!(var("new_root_path"), ROOT_PATH);
    assert_eq!(var("new_next_server"), "10.77.0.9");
    assert_eq!(var("new_dhcp_server_identifier"), SERVER_IP.to_string());
    assert_eq!(var("new_dhcp_lease_time"), "3600");
    // And the server recorded the lease for this MAC.
    let leases = fs::read_to_string(lab.scratch.join("dnsmasq.leases")).unwrap();
    assert!(
        leases.contains(&format!("{CLIENT_MAC} {address} nbdclient")),
        "{leases}"
    );
}

/// The client half, run by the test above inside the client namespace.
#[test]
#[ignore = "runs inside the client namespace, started by lease_from_dnsmasq_is_applied_in_a_namespace"]
fn client_side() {
    let dir = std::env::var_os(CHILD_ENV)
        .map(PathBuf::from)
        .expect("started by lease_from_dnsmasq_is_applied_in_a_namespace");
    nbdroot::logger::init_host(log::LevelFilter::Debug);
    isolate_etc_and_hostname();

    let index = iface::index(CLIENT_IF).expect("the veth end is in this namespace");
    let policy = DhcpPolicy {
        total: Duration::from_secs(20),
        ..DhcpPolicy::default()
    };
    let lease = dhcp::acquire(CLIENT_IF, index, &policy).unwrap();
    assert!(in_range(lease.address), "{lease:?}");
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.routers, [SERVER_IP]);
    assert_eq!(lease.dns, [SERVER_IP, Ipv4Addr::new(10, 77, 0, 53)]);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.root_path.as_deref(), Some(ROOT_PATH));
    assert_eq!(lease.server_id, SERVER_IP);
    assert_eq!(lease.hostname.as_deref(), Some("nbdclient"));
    assert_eq!(lease.domain.as_deref(), Some("nbdroot.test"));
    assert_eq!(lease.next_server, Some(Ipv4Addr::new(10, 77, 0, 9)));
    assert_eq!(lease.broadcast, Some(Ipv4Addr::new(10, 77, 0, 255)));
    assert_eq!(lease.lease_secs, Some(3600));
    assert_eq!(
        lease.classless_routes,
        [
            (
                Ipv4Addr::new(10, 99, 0, 0),
                16,
                Ipv4Addr::new(10, 77, 0, 254)
            ),
            (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 77, 0, 2)),
        ]
    );

    dhcp::apply(CLIENT_IF, index, &lease).unwrap();
    assert_eq!(
        nix::unistd::gethostname().unwrap().to_str(),
        Some("nbdclient")
    );
    assert_eq!(
        fs::read_to_string("/etc/resolv.conf").unwrap(),
        "# from DHCP on dhc0 (server 10.77.0.1)\nsearch nbdroot.test\n\
         nameserver 10.77.0.1\nnameserver 10.77.0.53\n"
    );
    let path = dhcp::write_lease(&dir.join("run"), CLIENT_IF, &lease).unwrap();
    assert_eq!(path, dir.join("run/dhcp-dhc0.env"));
}

fn mount_ns() -> PathBuf {
    fs::read_link("/proc/self/ns/mnt").unwrap()
}

/// A UTS namespace for this thread (sethostname) and a tmpfs over /etc in the mount
/// namespace `ip netns exec` made, so that `apply` changes nothing on the host.
fn isolate_etc_and_hostname() {
    let parent = std::env::var_os(PARENT_MNT_ENV).expect("the parent's mount namespace");
    assert_ne!(
        mount_ns(),
        parent,
        "not in a private mount namespace: refusing to mount over /etc"
    );
    // SAFETY: unshare(2) with a flag only; it affects the calling thread, which is the one
    // that calls apply() and gethostname().
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWUTS): {}",
        std::io::Error::last_os_error()
    );
    nix::mount::mount(
        Some("tmpfs"),
        Path::new("/etc"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=755"),
    )
    .expect("mounting a tmpfs over /etc in the private mount namespace");
    assert!(!Path::new("/etc/resolv.conf").exists());
}
