//! Hints for the real root's network manager, so it keeps the boot interface's address
//! instead of pulling it out from under the root: systemd-networkd and NetworkManager both
//! read configuration from /run, which moves into the real root at switch_root.
//!
//! The address must also stay the same when the root's DHCP client renews the lease: nbdroot's
//! DHCP client identifies itself by the MAC (client identifier type 1), and the hints ask the
//! root's client to do the same (networkd's default is a DUID, which a server treats as a
//! different client).
//!
//! A lease must be renewed by someone once nbdroot's client is gone. networkd does it with the
//! `.network` file. NetworkManager finds a configured interface and, without more, only keeps
//! it as "external", running no DHCP there: so for a DHCP address nbdroot also leaves it a
//! profile and the device state its own initrd would have left (the profile by UUID), which
//! makes it assume that profile and renew the lease, the address untouched meanwhile.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// systemd-networkd's runtime configuration directory.
pub const NETWORKD_DIR: &str = "/run/systemd/network";
/// NetworkManager's runtime configuration snippets.
pub const NM_CONF_DIR: &str = "/run/NetworkManager/conf.d";
/// NetworkManager's runtime connection profiles (read only when the file is mode 0600).
pub const NM_PROFILE_DIR: &str = "/run/NetworkManager/system-connections";
/// NetworkManager's per-device state, one file per interface index.
pub const NM_DEVICE_DIR: &str = "/run/NetworkManager/devices";

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

/// The UUID of nbdroot's NetworkManager profile for the interface with `mac`: the same at
/// every boot of one machine ("nbdroo" and version 4 bits, then the MAC's 12 digits).
pub fn nm_uuid(mac: &str) -> String {
    let hex: String = mac.chars().filter(char::is_ascii_hexdigit).collect();
    format!("6e626472-6f6f-4474-8000-{:0>12}", hex.to_ascii_lowercase())
}

/// A NetworkManager profile for a boot interface configured by DHCP: DHCP again with the MAC
/// client identifier, retried for ever (a failed activation must not take the address away);
/// IPv6 left as the kernel has it.
pub fn nm_profile(iface: &str, mac: &str) -> String {
    format!(
        "# Written by nbdroot: {iface} carries the root filesystem (NBD), its address by DHCP.\n\
         [connection]\nid=nbdroot-{iface}\nuuid={uuid}\ntype=ethernet\ninterface-name={iface}\n\n\
         [ethernet]\nmac-address={mac}\n\n\
         [ipv4]\nmethod=auto\ndhcp-client-id=mac\ndhcp-timeout=2147483647\n\n\
         [ipv6]\nmethod=ignore\n",
        uuid = nm_uuid(mac)
    )
}

/// NetworkManager's device state naming the profile the interface is active with.
pub fn nm_device_state(mac: &str) -> String {
    format!(
        "# Written by nbdroot: the boot interface's connection.\n\
         [device]\nmanaged=true\nconnection-uuid={}\n",
        nm_uuid(mac)
    )
}

/// Writes the hints for `iface` under `root` (`/` at boot): NetworkManager's profile and
/// device state only for a DHCP address (a static one stays as it is, "external").
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
    )?;
    if dhcp {
        let index = fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))?;
        let profiles = root.join(NM_PROFILE_DIR.trim_start_matches('/'));
        fs::create_dir_all(&profiles)?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(profiles.join(format!("nbdroot-{iface}.nmconnection")))?
            .write_all(nm_profile(iface, mac).as_bytes())?;
        let devices = root.join(NM_DEVICE_DIR.trim_start_matches('/'));
        fs::create_dir_all(&devices)?;
        fs::write(devices.join(index.trim()), nm_device_state(mac))?;
    }
    Ok(())
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

    #[test]
    fn network_manager_assumes_the_profile_the_device_state_names() {
        let mac = "52:54:00:AB:cd:0f";
        assert_eq!(nm_uuid(mac), "6e626472-6f6f-4474-8000-525400abcd0f");
        let profile = nm_profile("ens2", mac);
        assert!(profile.contains("[connection]\nid=nbdroot-ens2\nuuid=6e626472-6f6f-4474-8000-525400abcd0f\ntype=ethernet\ninterface-name=ens2\n"));
        assert!(
            profile.contains("[ipv4]\nmethod=auto\ndhcp-client-id=mac\ndhcp-timeout=2147483647\n")
        );
        assert!(profile.contains("[ethernet]\nmac-address=52:54:00:AB:cd:0f\n"));
        assert!(profile.contains("[ipv6]\nmethod=ignore\n"));
        assert!(nm_device_state(mac).contains(
            "[device]\nmanaged=true\nconnection-uuid=6e626472-6f6f-4474-8000-525400abcd0f\n"
        ));
    }
}
