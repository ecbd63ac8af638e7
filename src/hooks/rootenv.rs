//! `/run/nbdroot/root.env`: what `nbdroot attach` attached and how the root is to be mounted,
//! for the mount step and the generator (the fstype and options may have come from DHCP).
//! Shell assignments, so a hook may source it too.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::net::dhcp::lease::sh_quote;
use crate::plan::{ModeFrom, RootDevice, RootMount};

/// Where the record lives; /run moves into the real root at switch_root.
pub const PATH: &str = "/run/nbdroot/root.env";

/// The attached root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEnv {
    pub index: u32,
    /// What to mount on the device (whole, partition, label, UUID).
    pub root: RootDevice,
    pub mount: RootMount,
    /// The server or the options made the device read-only.
    pub device_read_only: bool,
    /// How long to wait for a partition or a labelled filesystem to show.
    pub link_timeout: Duration,
    /// `host:port` and export, for people reading the file.
    pub server: String,
    pub export: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RootEnvError {
    #[error("cannot read {PATH}: {0}")]
    Read(io::Error),
    #[error("cannot write {PATH}: {0}")]
    Write(io::Error),
    #[error("{PATH}: {0}")]
    Bad(String),
}

impl RootEnv {
    /// `/dev/nbdN`.
    pub fn device(&self) -> String {
        crate::kernel::device_path(self.index)
    }

    /// The path of the block device holding the root, as udev names it: what a mount unit
    /// waits for.
    pub fn what(&self) -> String {
        what(self.index, &self.root)
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("# written by nbdroot attach\n");
        let root = match &self.root {
            RootDevice::Whole => "whole".to_string(),
            RootDevice::Partition(n) => format!("partition:{n}"),
            RootDevice::Label(l) => format!("LABEL={l}"),
            RootDevice::Uuid(u) => format!("UUID={u}"),
        };
        let fields = [
            ("NBDROOT_DEVICE", self.device()),
            ("NBDROOT_ROOT", root),
            ("NBDROOT_WHAT", self.what()),
            (
                "NBDROOT_FSTYPE",
                self.mount.fstype.clone().unwrap_or_default(),
            ),
            ("NBDROOT_OPTIONS", self.mount.options.clone()),
            (
                "NBDROOT_READONLY",
                u8::from(self.mount.read_only).to_string(),
            ),
            (
                "NBDROOT_DEVICE_READONLY",
                u8::from(self.device_read_only).to_string(),
            ),
            (
                "NBDROOT_LINK_TIMEOUT",
                self.link_timeout.as_secs().to_string(),
            ),
            ("NBDROOT_SERVER", self.server.clone()),
            ("NBDROOT_EXPORT", self.export.clone()),
        ];
        for (k, v) in fields {
            let _ = writeln!(s, "{k}={}", sh_quote(&v));
        }
        s
    }

    pub fn decode(text: &str) -> Result<Self, RootEnvError> {
        let pairs =
            assignments(text).ok_or_else(|| RootEnvError::Bad("not shell assignments".into()))?;
        let get = |key: &str| -> Result<String, RootEnvError> {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| RootEnvError::Bad(format!("no {key}")))
        };
        let device = get("NBDROOT_DEVICE")?;
        let index = crate::kernel::device::parse_index(&device)
            .ok_or_else(|| RootEnvError::Bad(format!("NBDROOT_DEVICE={device}")))?;
        let root_text = get("NBDROOT_ROOT")?;
        let root = if root_text == "whole" {
            RootDevice::Whole
        } else if let Some(n) = root_text.strip_prefix("partition:") {
            RootDevice::Partition(
                n.parse()
                    .map_err(|_| RootEnvError::Bad(format!("NBDROOT_ROOT={root_text}")))?,
            )
        } else if let Some(l) = root_text.strip_prefix("LABEL=") {
            RootDevice::Label(l.to_string())
        } else if let Some(u) = root_text.strip_prefix("UUID=") {
            RootDevice::Uuid(u.to_string())
        } else {
            return Err(RootEnvError::Bad(format!("NBDROOT_ROOT={root_text}")));
        };
        let fstype = get("NBDROOT_FSTYPE")?;
        let flag = |v: String| v == "1";
        Ok(RootEnv {
            index,
            root,
            mount: RootMount {
                fstype: (!fstype.is_empty()).then_some(fstype),
                options: get("NBDROOT_OPTIONS")?,
                read_only: flag(get("NBDROOT_READONLY")?),
                // The record keeps the decision, not what made it (that is for `plan`).
                mode_from: ModeFrom::Default,
            },
            device_read_only: flag(get("NBDROOT_DEVICE_READONLY")?),
            link_timeout: Duration::from_secs(
                get("NBDROOT_LINK_TIMEOUT")?
                    .parse()
                    .map_err(|_| RootEnvError::Bad("NBDROOT_LINK_TIMEOUT".into()))?,
            ),
            server: get("NBDROOT_SERVER")?,
            export: get("NBDROOT_EXPORT")?,
        })
    }

    /// Writes the record atomically (readers never see half of it).
    pub fn write(&self, path: &Path) -> Result<(), RootEnvError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let tmp = dir.join(".root.env.tmp");
        fs::create_dir_all(dir)
            .and_then(|_| fs::write(&tmp, self.encode()))
            .and_then(|_| fs::rename(&tmp, path))
            .map_err(RootEnvError::Write)
    }

    /// The record, or `None` when nothing was attached yet.
    pub fn read(path: &Path) -> Result<Option<Self>, RootEnvError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::decode(&text).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RootEnvError::Read(e)),
        }
    }
}

/// The block device holding the root on `/dev/nbd<index>`, by udev's names.
pub fn what(index: u32, root: &RootDevice) -> String {
    let dev = crate::kernel::device_path(index);
    match root {
        RootDevice::Whole => dev,
        RootDevice::Partition(n) => format!("{dev}p{n}"),
        RootDevice::Label(l) => format!("/dev/disk/by-label/{}", udev_encode(l)),
        RootDevice::Uuid(u) => format!("/dev/disk/by-uuid/{}", udev_encode(u)),
    }
}

/// udev's encoding of a label in a /dev/disk/by-label name: `/`, spaces and other unsafe
/// bytes as `\xNN`.
fn udev_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The `KEY='value'` lines [`RootEnv::encode`] writes, in order (comment lines skipped).
fn assignments(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('\n') {
            rest = r;
        } else if rest.starts_with('#') {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else {
            let (key, r) = rest.split_once('=')?;
            let (value, r) = sh_unquote(r)?;
            pairs.push((key.to_string(), value));
            rest = r;
        }
    }
    Some(pairs)
}

/// The inverse of [`sh_quote`] for the word at the start of `text`, up to an unquoted line
/// end (`'…'` pieces joined by `\'`), and the text after it.
fn sh_unquote(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() && !rest.starts_with('\n') {
        if let Some(r) = rest.strip_prefix("\\'") {
            out.push('\'');
            rest = r;
        } else {
            let inner = rest.strip_prefix('\'')?;
            let end = inner.find('\'')?;
            out.push_str(&inner[..end]);
            rest = &inner[end + 1..];
        }
    }
    Some((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(root: RootDevice) -> RootEnv {
        RootEnv {
            index: 2,
            root,
            mount: RootMount {
                fstype: Some("ext4".into()),
                options: "noatime,errors=panic".into(),
                read_only: false,
                mode_from: ModeFrom::Default,
            },
            device_read_only: false,
            link_timeout: Duration::from_secs(10),
            server: "10.0.0.1:10809".into(),
            export: "it's \"odd\"\n$(x)\nNBDROOT_DEVICE='/dev/nbd9'".into(),
        }
    }

    #[test]
    fn round_trips_every_root_kind() {
        for root in [
            RootDevice::Whole,
            RootDevice::Partition(3),
            RootDevice::Label("my root/x".into()),
            RootDevice::Uuid("ab-cd".into()),
        ] {
            let env = sample(root);
            assert_eq!(RootEnv::decode(&env.encode()).unwrap(), env);
        }
        let mut env = sample(RootDevice::Whole);
        env.mount.fstype = None;
        assert_eq!(RootEnv::decode(&env.encode()).unwrap(), env);
    }

    #[test]
    fn what_names_udev_paths() {
        assert_eq!(what(0, &RootDevice::Whole), "/dev/nbd0");
        assert_eq!(what(1, &RootDevice::Partition(2)), "/dev/nbd1p2");
        assert_eq!(
            what(0, &RootDevice::Label("a b/c".into())),
            "/dev/disk/by-label/a\\x20b\\x2fc"
        );
    }

    #[test]
    fn hostile_values_stay_quoted_for_the_shell() {
        let env = sample(RootDevice::Whole);
        let text = env.encode();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{text}\nprintf %s \"$NBDROOT_EXPORT\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), env.export);
        assert!(RootEnv::decode("#\nNBDROOT_DEVICE=/dev/nbd0\n").is_err());
    }
}
