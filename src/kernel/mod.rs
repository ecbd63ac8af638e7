//! Handing negotiated connections to the kernel's nbd driver: over generic netlink (the
//! default: no process stays behind) or ioctls (a process stays in NBD_DO_IT).

pub mod attach;
pub mod device;
pub mod ioctl;
pub mod netlink;

pub use netlink::{connect, disconnect, Attach, Events, KernelError};

/// The device node of an nbd index.
pub fn device_path(index: u32) -> String {
    format!("/dev/nbd{index}")
}
