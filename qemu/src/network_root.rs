//! A Debian 12 root with a network manager, for the tests of what happens to the boot
//! interface after switch_root: the root with the kernel package (and so udev, installed and
//! configured by apt, as on a real system: networkd and NetworkManager manage a link only once
//! udev has initialised it) and the manager enabled, cached per manager under
//! `<cache>/debian-network-root/<manager>`. Tests boot a copy ([`copy`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::debian_boot::{in_root, kernel_root};
use crate::error::{Context, Result};

/// The network manager the root runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// systemd-networkd (part of Debian's systemd package), enabled.
    Networkd,
    /// NetworkManager (Debian's `network-manager`, with D-Bus), enabled by its package.
    NetworkManager,
}

impl Manager {
    fn name(self) -> &'static str {
        match self {
            Manager::Networkd => "networkd",
            Manager::NetworkManager => "network-manager",
        }
    }

    /// The chroot script that installs and enables the manager.
    fn setup(self) -> &'static str {
        match self {
            Manager::Networkd => "systemctl enable systemd-networkd.service",
            Manager::NetworkManager => {
                "apt-get -q -o Acquire::http::Timeout=30 -o Acquire::Retries=3 update && \
                 apt-get -q -o Acquire::http::Timeout=30 -o Acquire::Retries=3 install -y \
                 --no-install-recommends network-manager && apt-get clean && \
                 systemctl enable NetworkManager.service"
            }
        }
    }
}

/// The cached root with `manager`, made once.
pub fn root(manager: Manager) -> Result<PathBuf> {
    let dir = crate::cache_dir()?
        .join("debian-network-root")
        .join(manager.name());
    let base = || {
        let kernel_deb = crate::kernel::debian_cloud_kernel_deb()?;
        kernel_root(&kernel_deb, &crate::debian_cloud_kernel()?.version)
    };
    crate::sysroot::derived_tree(&dir, base, |tmp| {
        fs::copy("/etc/resolv.conf", tmp.join("etc/resolv.conf"))
            .step(|| "copy /etc/resolv.conf into the root")?;
        in_root(
            tmp,
            &format!("install and enable {}", manager.name()),
            manager.setup(),
        )?;
        // The root's own initramfs-tools image is not what these tests boot.
        in_root(tmp, "drop the root's initramfs", "rm -f /boot/initrd.img-*")
    })
}

/// A copy of the root with `manager` at `dir/root` (replacing an earlier one), for one test
/// to add its files to.
pub fn copy(manager: Manager, dir: &Path) -> Result<PathBuf> {
    crate::sysroot::copy_root(&root(manager)?, dir)
}
