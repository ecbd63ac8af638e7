//! `rd.nbdroot.overlay=tmpfs[:<size>] | nbd:<server>:<port|export>[:<fstype>[:<flags>[:<nbdopts>]]]`.

use super::{root, CmdlineError};
use crate::plan::Overlay;

const PARAM: &str = "rd.nbdroot.overlay";

/// Parses the value of `rd.nbdroot.overlay=`.
pub fn parse(value: &str) -> Result<Overlay, CmdlineError> {
    let bad = || {
        CmdlineError::Value {
        param: PARAM,
        value: value.to_string(),
        expected: "tmpfs, tmpfs:<size> (512m, 2g, 25%) or nbd:<server>:<port|export>[:<fstype>[:<flags>[:<nbdopts>]]]",
    }
    };
    if value == "tmpfs" {
        return Ok(Overlay::Tmpfs { size: None });
    }
    if let Some(size) = value.strip_prefix("tmpfs:") {
        return valid_size(size)
            .then(|| Overlay::Tmpfs {
                size: Some(size.to_string()),
            })
            .ok_or_else(bad);
    }
    if value.starts_with("nbd:") {
        return root::parse_nbd(value)
            .map(Overlay::Nbd)
            .map_err(|source| CmdlineError::Root {
                param: PARAM,
                value: value.to_string(),
                source,
            });
    }
    Err(bad())
}

/// A tmpfs `size=`: a positive whole number, then k, m or g (either case), or a percentage
/// of RAM from 1 to 100.
fn valid_size(size: &str) -> bool {
    if let Some(pct) = size.strip_suffix('%') {
        return pct.parse::<u8>().is_ok_and(|p| (1..=100).contains(&p));
    }
    let digits = size.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
    size.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_forms() {
        assert_eq!(parse("tmpfs"), Ok(Overlay::Tmpfs { size: None }));
        for size in ["512m", "2G", "25%", "100%", "1048576", "64k"] {
            assert_eq!(
                parse(&format!("tmpfs:{size}")),
                Ok(Overlay::Tmpfs {
                    size: Some(size.into())
                }),
                "{size}"
            );
        }
    }

    #[test]
    fn bad_values_say_the_forms() {
        for v in [
            "tmpfs:",
            "tmpfs:0",
            "tmpfs:12x",
            "tmpfs:1mm",
            "tmpfs:0%",
            "tmpfs:101%",
            "tmpfs:m",
            "zram",
            "",
            "tmpfs:-1",
        ] {
            let err = parse(v).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "rd.nbdroot.overlay={v}: expected tmpfs, tmpfs:<size> (512m, 2g, 25%) or \
                     nbd:<server>:<port|export>[:<fstype>[:<flags>[:<nbdopts>]]]"
                )
            );
        }
        let err = parse("nbd:").unwrap_err().to_string();
        assert!(err.starts_with("rd.nbdroot.overlay=nbd:: "), "{err}");
    }

    #[test]
    fn nbd_upper() {
        let Ok(Overlay::Nbd(spec)) = parse("nbd:10.0.0.1:upper-m1:ext4") else {
            panic!("nbd form")
        };
        assert_eq!(spec.export, "upper-m1");
        assert_eq!(spec.port, 10809);
        assert_eq!(spec.fstype.as_deref(), Some("ext4"));
    }
}
