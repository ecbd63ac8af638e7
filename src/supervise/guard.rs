//! Hardening for a process that sits in the I/O path of the root (and of swap): it must
//! never be swapped out, wait on I/O to allocate, or be chosen by the OOM killer.

use std::fs;
use std::io;

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::signal::{signal, SigHandler, Signal};

/// PR_SET_IO_FLUSHER (Linux ≥ 5.6): this thread's allocations behave as GFP_NOIO.
const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// What could be applied; each guard is best effort and reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Guards {
    pub mlocked: bool,
    pub io_flusher: bool,
    pub oom_protected: bool,
}

/// Applies every guard. Must run before any other thread exists (IO_FLUSHER is per thread
/// and inherited) and while /proc is still visible.
pub fn apply() -> Guards {
    let mut g = Guards::default();
    match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        Ok(()) => g.mlocked = true,
        Err(e) => log::warn!("mlockall: {e}"),
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            PR_SET_IO_FLUSHER,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        g.io_flusher = true;
    } else {
        log::warn!("PR_SET_IO_FLUSHER: {}", io::Error::last_os_error());
    }
    match fs::write("/proc/self/oom_score_adj", "-1000") {
        Ok(()) => g.oom_protected = true,
        Err(e) => log::warn!("oom_score_adj: {e}"),
    }
    // Shutdown and switch_root send these to everything; the device must outlive them.
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN runs no handler code. The result is not checked: sigaction
        // fails only for SIGKILL and SIGSTOP or an invalid number, none of which is here.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    g
}
