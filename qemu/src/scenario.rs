//! The server-restart scenario, shared by the reconnect VM test and its benchmark: a guest
//! writes and fsyncs files on its NBD root while the host kills the server and starts it
//! again on the same port.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::NbdServer;

/// Files the guest writes, 128 KiB each, 0.2 s apart.
pub const FILES: usize = 30;

/// The guest's side, as probe steps: `NBDT-WRITING` once it starts, `NBDT io-error <n> …`
/// per failed write, then `NBDT max_write_cs=<longest write in centiseconds>`,
/// `NBDT errors=<count>` and one `NBDT-SUM <md5> <file>` per file.
pub fn writer_script() -> String {
    format!(
        r#"bb=/bin/busybox
# A root whose initramfs left /dev behind (the reference stack's) gets its own, so that only
# real I/O errors count.
[ -e /dev/urandom ] || $bb mount -t devtmpfs dev /dev
cs() {{ read up _ < /proc/uptime; echo ${{up%.*}}${{up#*.}}; }}
echo "NBDT-WRITING"
i=0; max=0; errors=0
while [ $i -lt {FILES} ]; do
  t0=$(cs)
  if ! $bb dd if=/dev/urandom of=/data-$i bs=64k count=2 conv=fsync 2>/tmp/err; then
    errors=$((errors+1)); echo "NBDT io-error $i $($bb head -n1 /tmp/err 2>/dev/null)"
  fi
  t1=$(cs); d=$((t1-t0)); [ $d -gt $max ] && max=$d
  i=$((i+1)); $bb sleep 0.2
done
echo "NBDT max_write_cs=$max"
echo "NBDT errors=$errors"
$bb md5sum /data-* 2>/dev/null | while read -r sum f; do echo "NBDT-SUM $sum $f"; done"#
    )
}

/// How long a guest may queue for a VM slot before its console log appears: the test
/// binaries run side by side, and every guest of the suite shares three slots.
const SLOT_QUEUE_BOUND: Duration = Duration::from_secs(40 * 60);

/// Waits until the console log shows `marker`, up to `bound` from the guest's start (QEMU
/// creates the log when it starts, after its VM slot is free; a stale log of an earlier run
/// must be removed first).
pub fn wait_for(log: &Path, marker: &str, bound: Duration) -> bool {
    let queued = Instant::now();
    while !log.exists() {
        if queued.elapsed() >= SLOT_QUEUE_BOUND {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    while start.elapsed() < bound {
        if fs::read_to_string(log).is_ok_and(|l| l.contains(marker)) {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

/// The host's side: once the guest writes, kill the server, keep it down for `down`, start
/// it again. False when the guest never started writing.
pub fn restart_server(log: &Path, server: &mut NbdServer, down: Duration) -> bool {
    if !wait_for(log, "NBDT-WRITING", Duration::from_secs(120)) {
        return false;
    }
    sleep(Duration::from_millis(800));
    server.kill();
    sleep(down);
    server.restart().is_ok()
}
