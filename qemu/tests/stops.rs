//! Every way a server goes away, per server: one boot runs the stop kinds one after another
//! while the root reads a known file (page cache dropped each round) and writes fsync'd files.
//! The console log is split at each stop, so every I/O error, wrong read and stall is counted
//! against the stop that caused it; the fsync'd files are checked on the server at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nbdroot_qemu::netns::NetNs;
use nbdroot_qemu::scenario::wait_for;
use nbdroot_qemu::{
    boot_kit, debugfs_cat, e2fsck_clean, md5_hex, run, NbdServer, RootFs, VmConfig,
};

const ADDR: &str = "10.77.0.1";
const IP: &str = "ip=10.77.0.2::10.77.0.1:255.255.255.0::eth0:off";
/// The file the guest reads over and over, and its size.
const REF_MIB: usize = 2;
/// The port the guest polls to learn that the host is done.
const DONE_PORT: &str = "7";

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("stops-tests", name)
}

/// The guest: a reader and a writer until the host opens [`DONE_PORT`] (or 10 minutes).
/// Lines: `NBDT-RUNNING`; per event `NBDT wrong-read …`, `NBDT io-error …`,
/// `NBDT stall read|write <cs>` (a round over 0.5 s) and `NBDT round` per read round;
/// at the end `NBDT-OK <file>` per fsync'd file and `NBDT-DMESG <kernel line>` per nbd
/// or I/O error line of the kernel.
fn guest_script(want: &str, write: bool) -> String {
    let write = if write { "dd" } else { "true" };
    format!(
        r#"bb=/bin/busybox
cs() {{ read up _ < /proc/uptime; echo ${{up%.*}}${{up#*.}}; }}
# The reader's and writer's scratch files, also on a read-only root.
$bb mount -t tmpfs tmp /tmp
done_yet() {{ $bb nc -w 1 {ADDR} {DONE_PORT} </dev/null >/dev/null 2>&1; }}
end=$(( $(cs) + 60000 ))
echo "NBDT-RUNNING"
(
  while [ $(cs) -lt $end ] && [ ! -e /tmp/done ]; do
    echo 1 > /proc/sys/vm/drop_caches
    t0=$(cs); s=$($bb md5sum /ref 2>&1); rc=$?; d=$(( $(cs) - t0 ))
    case "$s" in "{want} "*) ;; *) echo "NBDT wrong-read rc=$rc $s";; esac
    [ $d -ge 50 ] && echo "NBDT stall read $d"
    echo "NBDT round"
  done
) &
reader=$!
i=0; last=$(cs)
while [ $(cs) -lt $end ]; do
  t0=$(cs)
  if [ {write} = true ]; then :
  elif $bb dd if=/dev/urandom of=/w-$i bs=64k count=1 conv=fsync 2>/tmp/err; then
    echo "/w-$i" >> /tmp/ok
  else
    echo "NBDT io-error write $i $($bb head -n1 /tmp/err)"
  fi
  d=$(( $(cs) - t0 )); [ $d -ge 50 ] && echo "NBDT stall write $d"
  i=$((i+1))
  if [ $(( $(cs) - last )) -ge 200 ]; then last=$(cs); done_yet && break; fi
  $bb sleep 0.1
done
touch /tmp/done; wait $reader; touch /tmp/ok
echo "NBDT writes=$i"
while read -r f; do echo "NBDT-OK $f $($bb md5sum < $f | $bb cut -d' ' -f1)"; done < /tmp/ok
$bb dmesg | $bb grep -E 'nbd|I/O error|EXT4-fs error|Buffer I/O' | while read -r l; do echo "NBDT-DMESG $l"; done
/bin/nbdroot status | while read -r l; do echo "NBDT-ST $l"; done
echo "NBDT-END""#
    )
}

/// A way of stopping the server, and how long it stays away.
#[derive(Clone, Copy, Debug)]
enum Way {
    Signal(&'static str),
    /// The server host's link goes down for this long; the server keeps running.
    NetworkGone(Duration),
}

impl Way {
    fn name(self) -> String {
        match self {
            Way::Signal(s) => format!("SIG{}", &s[1..]),
            Way::NetworkGone(d) => format!("network gone {} s", d.as_secs()),
        }
    }
}

/// What one stop cost the guest.
#[derive(Debug, Default)]
struct Cost {
    way: String,
    kernel_errors: usize,
    io_errors: usize,
    wrong_reads: usize,
    failed_writes: usize,
    /// The longest read round or fsync'd write, seconds.
    stall: f64,
    /// How long the server was away, seconds.
    outage: f64,
}

/// Starts a server in the namespace, serving an image as the export "root".
type Start = fn(&NetNs, &Path) -> NbdServer;

/// `argv` (with `@ADDR@` and `@PORT@`) in the namespace; its log beside the image.
fn serve(ns: &NetNs, img: &Path, argv: &[&str]) -> NbdServer {
    let log = img.with_extension(format!("{}.log", argv[0]));
    NbdServer::in_netns(&ns.name, ADDR, argv, log).expect("start the server")
}

fn nbd_server(ns: &NetNs, img: &Path) -> NbdServer {
    nbdroot_qemu::nbd_server_in(&ns.name, ADDR, &[("root", img)]).expect("start nbd-server")
}

fn qemu_nbd(ns: &NetNs, img: &Path) -> NbdServer {
    let file = img.display().to_string();
    let argv = [
        "qemu-nbd",
        "-f",
        "raw",
        "--persistent",
        "--shared=0",
        "-x",
        "root",
        "-b",
        "@ADDR@",
        "-p",
        "@PORT@",
        &file,
    ];
    serve(ns, img, &argv)
}

fn nbdkit(ns: &NetNs, img: &Path) -> NbdServer {
    let file = img.display().to_string();
    let argv = [
        "nbdkit",
        "--foreground",
        "-i",
        "@ADDR@",
        "-p",
        "@PORT@",
        "file",
        &file,
    ];
    serve(ns, img, &argv)
}

fn qsd(ns: &NetNs, img: &Path) -> NbdServer {
    let file = format!("driver=file,node-name=f,filename={}", img.display());
    let argv = [
        "qemu-storage-daemon",
        "--blockdev",
        &file,
        "--blockdev",
        "driver=raw,node-name=r,file=f",
        "--nbd-server",
        "addr.type=inet,addr.host=@ADDR@,addr.port=@PORT@",
        "--export",
        "type=nbd,id=e,node-name=r,name=root,writable=on",
    ];
    serve(ns, img, &argv)
}

/// The guest's console split at each stop, the costs counted per part.
fn costs(log: &str, marks: &[(String, usize, f64)]) -> Vec<Cost> {
    let mut out = Vec::new();
    for (n, (way, start, outage)) in marks.iter().enumerate() {
        let end = marks.get(n + 1).map_or(log.len(), |m| m.1);
        let part = &log[*start..end.max(*start)];
        // The guest's summary (its kernel log again among it) is not a stop's cost.
        let end_of_run = part.find("NBDT writes=").unwrap_or(part.len());
        let part = &part[..end_of_run];
        let mut c = Cost {
            way: way.clone(),
            outage: *outage,
            ..Cost::default()
        };
        for l in part.lines() {
            if l.contains("Other side returned error") {
                c.kernel_errors += 1;
            }
            if l.contains("I/O error") && !l.contains("NBDT") {
                c.io_errors += 1;
            }
            if l.contains("NBDT wrong-read") {
                c.wrong_reads += 1;
            }
            if l.contains("NBDT io-error write") {
                c.failed_writes += 1;
            }
            if let Some(cs) = l.split("NBDT stall ").nth(1) {
                let cs: f64 = cs
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
                c.stall = c.stall.max(cs / 100.0);
            }
        }
        out.push(c);
    }
    out
}

/// Boots from the server `start` starts (`name` names the scratch directory), runs `ways` one
/// after another once the guest reads (and, with `write`, writes), and returns the console log,
/// each way's cost, the image and its directory.
fn run_stops(
    write: bool,
    name: &str,
    start: Start,
    ways: &[Way],
) -> (String, Vec<Cost>, PathBuf, nbdroot_qemu::Scratch) {
    let dir = scratch(name);
    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_nbdroot().expect("add nbdroot");
    let data: Vec<u8> = (0..REF_MIB << 20)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    root.add_file("ref", &data, 0o644).expect("ref file");
    let want = md5_hex(&data).expect("md5");
    root.add_probe_step(&guest_script(&want, write));
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 96, None).expect("mkfs.ext4");

    let mut ns = NetNs::new(&format!("stop-{name}")).expect("network namespace");
    let mut server = start(&ns, &img);

    let kit = boot_kit();
    let mut cfg = VmConfig::new(&kit.kernel.vmlinuz, &kit.initrd);
    cfg.netns = Some(ns.name.clone());
    let mode = if write { "rw" } else { "ro" };
    cfg.append = format!("root=nbd:{ADDR}:root {IP} {mode} rd.nbdroot.dead_timeout=60");
    cfg.deadline = Duration::from_secs(900);
    let console = dir.join("console.log");
    let _ = fs::remove_file(&console);
    cfg.log_path = Some(console.clone());

    // nbdkit quits (orderly) when the thread that started it ends: the control thread, which
    // restarts the servers, lives until the guest has ended.
    let ended = AtomicBool::new(false);
    let marks = std::thread::scope(|s| {
        let server = &mut server;
        let ns = &mut ns;
        let console = &console;
        let ended = &ended;
        let ctl = s.spawn(move || {
            let mut marks = Vec::new();
            assert!(
                wait_for(console, "NBDT-RUNNING", Duration::from_secs(300)),
                "the guest never started"
            );
            std::thread::sleep(Duration::from_secs(3));
            for way in ways {
                let at = fs::metadata(console).map_or(0, |m| m.len() as usize);
                let t = Instant::now();
                match way {
                    Way::Signal(sig) => {
                        server
                            .stop(sig)
                            .unwrap_or_else(|e| panic!("{}: {e}", way.name()));
                        std::thread::sleep(Duration::from_secs(2));
                        server.start_again().expect("start the server again");
                    }
                    Way::NetworkGone(d) => {
                        ns.exec("link down", &["ip", "link", "set", "tap0", "down"])
                            .expect("link down");
                        std::thread::sleep(*d);
                        ns.exec("link up", &["ip", "link", "set", "tap0", "up"])
                            .expect("link up");
                    }
                }
                let outage = t.elapsed().as_secs_f64();
                marks.push((way.name(), at, outage));
                // Recovered: two read rounds after the server came back, then a pause.
                let seen = rounds(console);
                let waited = Instant::now();
                while rounds(console) < seen + 2 && waited.elapsed() < Duration::from_secs(90) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                std::thread::sleep(Duration::from_secs(3));
            }
            ns.spawn("the done port", &["busybox", "nc", "-l", "-p", DONE_PORT])
                .expect("done port");
            while !ended.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            marks
        });
        let out = run(&cfg);
        ended.store(true, Ordering::Relaxed);
        let out = out.expect("run QEMU");
        let marks = ctl.join().expect("control thread");
        assert!(!out.timed_out, "the guest hung:\n{out}");
        marks
    });
    drop(server);
    let log = fs::read_to_string(&console).expect("console log");
    assert!(log.contains("NBDT-END"), "the guest did not finish:\n{log}");
    let costs = costs(&log, &marks);
    (log, costs, img, dir)
}

fn rounds(console: &Path) -> usize {
    fs::read_to_string(console).map_or(0, |l| l.matches("NBDT round").count())
}

/// Every file the guest fsync'd is on the server as the guest wrote it.
fn lost_writes(log: &str, img: &Path) -> Vec<String> {
    let mut lost = Vec::new();
    for l in log.lines() {
        let Some(rest) = l.split("NBDT-OK ").nth(1) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(file), Some(sum)) = (it.next(), it.next()) else {
            continue;
        };
        match debugfs_cat(img, file) {
            Ok(data) if md5_hex(&data).is_ok_and(|m| m == sum) => {}
            _ => lost.push(file.to_string()),
        }
    }
    lost
}

fn report(kind: &str, costs: &[Cost], lost: &[String]) {
    for c in costs {
        eprintln!(
            "STOP {kind:<20} {:<22} kernel-errors={} io-errors={} wrong-reads={} failed-writes={} stall={:.1}s outage={:.1}s",
            c.way, c.kernel_errors, c.io_errors, c.wrong_reads, c.failed_writes, c.stall, c.outage
        );
    }
    eprintln!("STOP {kind:<20} lost fsync'd writes: {}", lost.len());
}

const ALL: [Way; 4] = [
    Way::Signal("-TERM"),
    Way::Signal("-INT"),
    Way::Signal("-KILL"),
    Way::NetworkGone(Duration::from_secs(10)),
];

/// nbdkit's stops that cost nothing (its orderly ones fail requests).
const NBDKIT: [Way; 2] = [
    Way::Signal("-KILL"),
    Way::NetworkGone(Duration::from_secs(10)),
];

/// Boots from `kind`, runs `ways`, prints the table rows; checks that no fsync'd write was
/// lost, that the filesystem is clean and that every way in `clean` cost no I/O error, no
/// wrong read and no failed write. Returns the costs and the console log.
fn measure(name: &str, start: Start, ways: &[Way], clean: &[Way]) -> (Vec<Cost>, String) {
    let (log, costs, img, _dir) = run_stops(true, name, start, ways);
    let lost = lost_writes(&log, &img);
    report(name, &costs, &lost);
    assert!(lost.is_empty(), "fsync'd files lost or changed: {lost:?}");
    e2fsck_clean(&img).expect("clean filesystem");
    for c in costs
        .iter()
        .filter(|c| clean.iter().any(|w| w.name() == c.way))
    {
        assert!(
            c.kernel_errors + c.io_errors + c.wrong_reads + c.failed_writes == 0,
            "{}, {}: {c:?}\n{log}",
            name,
            c.way
        );
    }
    // Every stop was a reconnect the supervisor made.
    let reconnects = status(&log, "reconnects").parse::<usize>().unwrap_or(0);
    assert!(reconnects >= ways.len(), "reconnects={reconnects}\n{log}");
    (costs, log)
}

/// A key of the supervisor's status at the end of the run.
fn status<'a>(log: &'a str, key: &str) -> &'a str {
    let prefix = format!("NBDT-ST {key}=");
    log.lines()
        .find_map(|l| l.split(prefix.as_str()).nth(1))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in the status:\n{log}"))
}

#[test]
fn qemu_nbd_every_stop_costs_nothing() {
    let (_, log) = measure("qemu-nbd", qemu_nbd, &ALL, &ALL);
    assert_eq!(status(&log, "server_errors"), "0");
}

#[test]
fn qemu_storage_daemon_every_stop_costs_nothing() {
    measure("qemu-storage-daemon", qsd, &ALL, &ALL);
}

#[test]
fn nbd_server_every_stop_costs_nothing() {
    measure("nbd-server", nbd_server, &ALL, &ALL);
}

/// nbdkit stopped by SIGKILL (docs/servers.md's stop for it) costs nothing.
#[test]
fn nbdkit_killed_costs_nothing() {
    measure("nbdkit", nbdkit, &NBDKIT, &NBDKIT);
}

/// nbdkit's orderly stop (SIGTERM, SIGINT) refuses the requests it is reading with
/// NBD_ESHUTDOWN, and the kernel fails them: the supervisor says so once per connection and
/// counts them. (A read-only root: failed writes would abort the journal and end the test.)
#[test]
fn nbdkit_orderly_stop_fails_requests_and_is_named() {
    let ways = [Way::Signal("-TERM"), Way::Signal("-INT")];
    let (log, costs, _img, _dir) = run_stops(false, "nbdkit-orderly", nbdkit, &ways);
    report("nbdkit-orderly", &costs, &[]);
    let orderly: usize = costs.iter().map(|c| c.kernel_errors).sum();
    let errors: usize = status(&log, "server_errors").parse().expect("a count");
    // The count covers what the kernel logged (the console may drop lines under load).
    assert!(
        orderly > 0 && errors >= orderly,
        "{orderly} {errors}\n{log}"
    );
    let line = "/dev/nbd0: server 10.77.0.1:10809 is shutting down: it refuses requests \
                (NBD_ESHUTDOWN), and the kernel fails each one with an I/O error";
    let said = log
        .lines()
        .filter(|l| l.contains(line) && !l.contains("NBDT-DMESG"));
    assert_eq!(said.count(), 2, "one line per stop:\n{log}");
}
