//! Hints for the real root's network manager, so it keeps the boot interface's address
//! instead of pulling it out from under the root: systemd-networkd and NetworkManager both
//! read configuration from /run, which moves into the real root at switch_root.
//!
//! The address must also stay the same when the root's DHCP client renews the lease: nbdroot's
//! DHCP client identifies itself by the MAC (client identifier type 1), and the hints ask the
//! root's client to do the same (networkd's default is a DUID, which a server treats as a
//! different client).

use std::fs;
use std::io;
use std::path::Path;

/// systemd-networkd's runtime configuration directory.
pub const NETWORKD_DIR: &str = "/run/systemd/network";
/// NetworkManager's runtime configuration snippets.
pub const NM_CONF_DIR: &str = "/run/NetworkManager/conf.d";

/// A `.network` file matching `mac` that keeps the address the initramfs configured
/// (`KeepConfiguration=yes`) and renews a DHCP lease with a MAC-based client identifier.
pub fn networkd_unit(iface: &str, mac: &str, dhcp: bool) -> String {
    format!(
        "# Written by nbdroot: {iface} carries the root filesystem (NBD).\n\
         [Match]\nMACAddress={mac}\n\n\
         [Network]\nDHCP={}\nKeepConfiguration=yes\n\n\
         [DHCPv4]\nClientIdentifier=mac\n",
        if dhcp { "ipv4" } else { "no" }
    )
}

/// A NetworkManager snippet: keep the device's configuration, and a MAC-based DHCP client
/// identifier for connections on it.
pub fn nm_conf(iface: &str, mac: &str) -> String {
    format!(
        "# Written by nbdroot: {iface} carries the root filesystem (NBD).\n\
         [device-nbdroot-{iface}]\nmatch-device=mac:{mac}\nkeep-configuration=yes\n\n\
         [connection-nbdroot-{iface}]\nmatch-device=mac:{mac}\nipv4.dhcp-client-id=mac\n"
    )
}

/// Writes both hints for `iface` under `root` (`/` at boot).
pub fn write(root: &Path, iface: &str, dhcp: bool) -> io::Result<()> {
    let mac = fs::read_to_string(format!("/sys/class/net/{iface}/address"))?;
    let mac = mac.trim();
    let nd = root.join(NETWORKD_DIR.trim_start_matches('/'));
    fs::create_dir_all(&nd)?;
    fs::write(
        nd.join(format!("10-nbdroot-{iface}.network")),
        networkd_unit(iface, mac, dhcp),
    )?;
    let nm = root.join(NM_CONF_DIR.trim_start_matches('/'));
    fs::create_dir_all(&nm)?;
    fs::write(
        nm.join(format!("50-nbdroot-{iface}.conf")),
        nm_conf(iface, mac),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_the_configuration_and_the_client_identifier() {
        let unit = networkd_unit("eth0", "52:54:00:12:34:56", true);
        assert!(unit.contains("MACAddress=52:54:00:12:34:56\n"));
        assert!(unit.contains("DHCP=ipv4\nKeepConfiguration=yes\n"));
        assert!(unit.contains("ClientIdentifier=mac\n"));
        assert!(networkd_unit("eth0", "x", false).contains("DHCP=no\n"));
        let nm = nm_conf("eth0", "52:54:00:12:34:56");
        assert!(nm.contains(
            "[device-nbdroot-eth0]\nmatch-device=mac:52:54:00:12:34:56\nkeep-configuration=yes\n"
        ));
        assert!(nm.contains("ipv4.dhcp-client-id=mac\n"));
    }
}
