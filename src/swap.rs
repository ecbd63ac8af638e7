//! Swap on an NBD device: the swap signature (mkswap), swapon, and the memory reserve that
//! lets the kernel's networking allocate while memory is short.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use crate::plan::MinFree;

const PAGE: usize = 4096;
const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
const MIN_RESERVE_KIB: u64 = 8 * 1024;
const MAX_RESERVE_KIB: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{device} ({size} bytes) is too small for swap (at least 10 pages)")]
    TooSmall { device: String, size: u64 },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: String,
        source: io::Error,
    },
}

/// The first page of a version-1 swap area covering `size` bytes.
pub fn signature(size: u64, uuid: [u8; 16], label: &str) -> Option<Vec<u8>> {
    let pages = size / PAGE as u64;
    if pages < 10 {
        return None;
    }
    let mut page = vec![0u8; PAGE];
    page[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    let last = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    page[1028..1032].copy_from_slice(&last.to_ne_bytes());
    page[1036..1052].copy_from_slice(&uuid);
    let label = label.as_bytes();
    let n = label.len().min(15);
    page[1052..1052 + n].copy_from_slice(&label[..n]);
    page[PAGE - 10..].copy_from_slice(b"SWAPSPACE2");
    Some(page)
}

/// A random (version 4) UUID to name the swap area. The bytes come from getrandom(2) without
/// blocking; this early in boot the kernel's pool may not be ready yet (EAGAIN), and then
/// from /dev/urandom, which never blocks. The UUID only tells swap areas apart, it guards
/// nothing, so bytes from a pool still filling are good enough. Fails only when neither
/// source gives 16 bytes.
fn random_uuid() -> io::Result<[u8; 16]> {
    let mut u = [0u8; 16];
    // nix has no getrandom, and std's is not public: libc it is.
    // SAFETY: getrandom writes at most `u.len()` bytes into `u`, which is live and writable.
    let n = unsafe {
        libc::getrandom(
            u.as_mut_ptr() as *mut libc::c_void,
            u.len(),
            libc::GRND_NONBLOCK,
        )
    };
    if usize::try_from(n) != Ok(u.len()) {
        let mut urandom = fs::File::open("/dev/urandom")?;
        io::Read::read_exact(&mut urandom, &mut u)?;
    }
    u[6] = (u[6] & 0x0f) | 0x40; // version 4
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(u)
}

/// Writes a swap signature over the start of `device`.
pub fn mkswap(device: &str, size: u64) -> Result<(), SwapError> {
    let io = |step| {
        move |source| SwapError::Io {
            step,
            path: device.to_string(),
            source,
        }
    };
    let uuid = random_uuid().map_err(io("generating a UUID for"))?;
    let page = signature(size, uuid, "nbdswap").ok_or_else(|| SwapError::TooSmall {
        device: device.to_string(),
        size,
    })?;
    let f = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(io("opening"))?;
    f.write_all_at(&page, 0)
        .map_err(io("writing the swap signature to"))?;
    f.sync_all().map_err(io("syncing"))
}

/// Turns swap on, with a priority when given.
pub fn swapon(device: &str, priority: Option<u16>) -> Result<(), SwapError> {
    // A device name with a NUL byte becomes "", which swapon rejects (ENOENT).
    let path = std::ffi::CString::new(device).unwrap_or_default();
    let flags = priority.map_or(0, |p| SWAP_FLAG_PREFER | (libc::c_int::from(p) & 0x7fff));
    // nix has no swapon.
    // SAFETY: `path` is a NUL-terminated string that outlives the call; flags is an int.
    if unsafe { libc::swapon(path.as_ptr(), flags) } != 0 {
        return Err(SwapError::Io {
            step: "swapon",
            path: device.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The reserve for `ram_kib` of memory: RAM/64, between 8 and 64 MiB.
pub fn reserve_for(ram_kib: u64) -> u64 {
    (ram_kib / 64).clamp(MIN_RESERVE_KIB, MAX_RESERVE_KIB)
}

/// Raises vm.min_free_kbytes as the policy says (never lowers it). Returns the value set.
pub fn raise_min_free(policy: MinFree) -> Result<Option<u64>, SwapError> {
    const PATH: &str = "/proc/sys/vm/min_free_kbytes";
    let io = |step| {
        move |source| SwapError::Io {
            step,
            path: PATH.to_string(),
            source,
        }
    };
    let want = match policy {
        MinFree::Off => return Ok(None),
        MinFree::KiB(k) => k,
        MinFree::Auto => {
            let meminfo = fs::read_to_string("/proc/meminfo").map_err(io("reading"))?;
            let total = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            reserve_for(total)
        }
    };
    let current: u64 = fs::read_to_string(PATH)
        .map_err(io("reading"))?
        .trim()
        .parse()
        .unwrap_or(0);
    if current >= want {
        return Ok(None);
    }
    fs::write(PATH, want.to_string()).map_err(io("writing"))?;
    Ok(Some(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_what_the_kernel_and_blkid_read() {
        let uuid = [0x11; 16];
        let page = signature(64 << 20, uuid, "nbdswap").unwrap();
        assert_eq!(&page[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(page[1024..1028].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(page[1028..1032].try_into().unwrap()),
            (64 << 20) / 4096 - 1
        );
        let info = crate::blkid::probe(&page).expect("blkid sees swap");
        assert_eq!(
            (info.fstype, info.label.as_deref()),
            ("swap", Some("nbdswap"))
        );
        assert_eq!(signature(9 * 4096, uuid, ""), None);
        assert_eq!(reserve_for(160 * 1024), 8 * 1024);
        assert_eq!(reserve_for(2 * 1024 * 1024), 32 * 1024);
        assert_eq!(reserve_for(64 * 1024 * 1024), 64 * 1024);
    }
}
