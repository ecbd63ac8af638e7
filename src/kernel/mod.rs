//! Handing a negotiated connection to the kernel's nbd driver.

pub mod netlink;

pub use netlink::{connect, disconnect, Attach, KernelError};

/// The device node of an nbd index.
pub fn device_path(index: u32) -> String {
    format!("/dev/nbd{index}")
}
