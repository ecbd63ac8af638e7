//! The "kernel floor": an initramfs whose `/init` reports the uptime and powers off at once.
//! Booting it measures what the kernel alone costs, the baseline every initramfs is compared to.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::command;
use crate::error::{Context, Error, Result};
use nbdroot::initramfs::cpio::CpioWriter;

/// The statically linked busybox that runs every shell script the harness puts in a guest.
pub const BUSYBOX: &str = "/bin/busybox";

/// The floor's `/init`; shell built-ins only after the one mount, so it adds almost nothing.
const FLOOR_INIT: &str = r#"#!/bin/busybox sh
# nbdroot kernel floor: report how long the kernel took to reach /init, then power off.
/bin/busybox mount -t proc proc /proc
read up _ < /proc/uptime
echo "NBDROOT-FLOOR uptime=$up"
/bin/busybox poweroff -f
"#;

/// Writes the floor initramfs (gzip-compressed newc cpio) to `out`.
pub fn floor_initramfs(out: &Path) -> Result<()> {
    let busybox = std::fs::read(BUSYBOX).step(|| format!("read {BUSYBOX}"))?;
    let step = || format!("write the floor cpio for {}", out.display());
    let mut cpio = CpioWriter::new(Vec::new());
    for d in ["bin", "dev", "proc", "sys"] {
        cpio.dir(d, 0o755).step(step)?;
    }
    // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    cpio.char_device("dev/console", 0o600, 5, 1).step(step)?;
    cpio.file("bin/busybox", 0o755, &busybox).step(step)?;
    cpio.file("init", 0o755, FLOOR_INIT.as_bytes()).step(step)?;
    gzip_to(&cpio.finish().step(step)?, out)
}

/// Compresses `data` into `out` with the system's `gzip -n` (no name or time in the header,
/// so equal inputs give equal files).
pub fn gzip_to(data: &[u8], out: &Path) -> Result<()> {
    let step = format!("compress {}", out.display());
    let file = File::create(out).step(|| format!("{step}: create"))?;
    let mut cmd = Command::new("gzip");
    cmd.args(["-n", "-c"]).stdin(Stdio::piped()).stdout(file);
    let mut child = cmd.spawn().step(|| format!("{step}: start gzip"))?;
    // gzip's output goes to the file, not to us, so writing all input first cannot deadlock.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(data)
        .step(|| format!("{step}: feed gzip"))?;
    drop(stdin);
    let status = child.wait().step(|| format!("{step}: wait for gzip"))?;
    if !status.success() {
        return Err(Error::unexpected(
            step,
            format!("`{}` exited with {status}", command::describe(&cmd)),
        ));
    }
    Ok(())
}
