//! Logging through `log`: to stderr on a host; in the initramfs, to /dev/kmsg and to the
//! console, each line exactly once on the console.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

struct Logger {
    /// PID 1 in an initramfs: also write to /dev/kmsg.
    kmsg: AtomicBool,
    /// The kernel prints kmsg records whose level is below this on the console itself.
    console_loglevel: AtomicU8,
}

/// /dev/kmsg opened once, for a daemon that outlives the /dev it started with.
static HELD_KMSG: std::sync::OnceLock<fs::File> = std::sync::OnceLock::new();

static LOGGER: Logger = Logger {
    kmsg: AtomicBool::new(false),
    console_loglevel: AtomicU8::new(0),
};

fn kernel_level(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = kernel_level(record.level());
        let mut printed_by_kernel = false;
        if self.kmsg.load(Ordering::Relaxed) {
            let line = format!("<{level}>nbdroot: {}\n", record.args());
            let written = match HELD_KMSG.get() {
                Some(mut kmsg) => kmsg.write_all(line.as_bytes()).is_ok(),
                // A fresh open per record: the kernel rate-limits each open file to 10
                // records per 5 s, and a boot failure line must never be the one dropped.
                None => OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .and_then(|mut k| k.write_all(line.as_bytes()))
                    .is_ok(),
            };
            if written {
                printed_by_kernel = level < self.console_loglevel.load(Ordering::Relaxed);
            }
        }
        if !printed_by_kernel {
            let prefix = match record.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            // A logger has nowhere to report that the console is gone.
            let _ = writeln!(
                std::io::stderr().lock(),
                "nbdroot: {prefix}{}",
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger for a command run on a host (stderr only).
pub fn init_host(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Installs the logger for PID 1 in an initramfs. `rd.debug` or `rd.nbdroot.debug` on the
/// command line turn on debug messages once /proc is mounted (see [`reopen_console`]).
pub fn init_pid1() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Once /dev and /proc exist: makes sure stdio goes to the console, starts writing to
/// /dev/kmsg and reads the console log level.
pub fn reopen_console() {
    // With no /dev/console in the initramfs the kernel starts init without stdio.
    let stdio_ok = fcntl(std::io::stderr(), FcntlArg::F_GETFD).is_ok();
    if !stdio_ok {
        if let Ok(console) = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            point_stdio_at(console);
        }
    }
    read_console_loglevel();
    LOGGER.kmsg.store(true, Ordering::Relaxed);
    if let Ok(cmdline) = fs::read_to_string("/proc/cmdline") {
        if cmdline
            .split_whitespace()
            .any(|w| w == "rd.debug" || w == "rd.nbdroot.debug")
        {
            log::set_max_level(LevelFilter::Debug);
        }
    }
}

/// For a daemon: points stdin, stdout and stderr at /dev/null and logs to /dev/kmsg only.
pub fn detach_from_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        point_stdio_at(null);
    }
    LOGGER.kmsg.store(true, Ordering::Relaxed);
    // Every record now goes to the kernel log; none is echoed to the (closed) console.
    LOGGER.console_loglevel.store(u8::MAX, Ordering::Relaxed);
}

/// Makes `file` stdin, stdout and stderr. Best effort, and nowhere to report a failure: the
/// descriptors stay as they were and log lines still reach /dev/kmsg.
fn point_stdio_at(file: fs::File) {
    let _ = nix::unistd::dup2_stdin(&file);
    let _ = nix::unistd::dup2_stdout(&file);
    let _ = nix::unistd::dup2_stderr(&file);
    // With stdio closed, the open itself got descriptor 0 (or 1, 2), where dup2 changes
    // nothing: dropping `file` would close that standard descriptor again, and its
    // close-on-exec flag would close it for init. It stays open and inheritable, as stdio.
    if file.as_raw_fd() <= 2 {
        let _ = fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()));
        let _ = file.into_raw_fd();
    }
}

/// For the supervisor, which starts in the initramfs and lives on after switch_root has
/// taken /dev and /proc out of its view: keeps /dev/kmsg open, and writes to the console
/// only what the kernel would not print there itself.
pub fn init_daemon() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
    if let Ok(k) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = HELD_KMSG.set(k);
        LOGGER.kmsg.store(true, Ordering::Relaxed);
    }
    read_console_loglevel();
}

/// Reads the kernel's console log level: records below it are printed by the kernel itself.
fn read_console_loglevel() {
    if let Ok(printk) = fs::read_to_string("/proc/sys/kernel/printk") {
        if let Some(level) = printk
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
        {
            LOGGER.console_loglevel.store(level, Ordering::Relaxed);
        }
    }
}
