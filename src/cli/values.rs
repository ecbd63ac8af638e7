//! Parsers for option values: each accepts what the option's help promises and otherwise
//! says the expected form, which clap prints after the option's name and the value given.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::initramfs::NicModules;
use crate::settings::{self, Keepalive, MAX_CONNECTIONS};

/// A value outside an option's form; clap names the option and the value before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {0}")]
pub struct Expected(pub Cow<'static, str>);

impl Expected {
    const fn form(form: &'static str) -> Self {
        Self(Cow::Borrowed(form))
    }
}

/// A whole number in `range`.
fn number<T: FromStr + PartialOrd>(
    text: &str,
    range: RangeInclusive<T>,
    expected: impl FnOnce() -> Expected,
) -> Result<T, Expected> {
    text.parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(expected)
}

/// `--replica`: `host[:port]` or `[v6]:port`.
pub fn replica(text: &str) -> Result<(crate::address::Host, u16), Expected> {
    crate::cmdline::replica_server(text).ok_or(Expected::form(
        "<host>[:<port>] or [<IPv6>]:<port>, e.g. 10.0.0.2 or 10.0.0.3:10900",
    ))
}

/// `--block-size`: the block sizes the nbd driver accepts.
pub fn block_size(text: &str) -> Result<u32, Expected> {
    match text.parse() {
        Ok(size @ (512 | 1024 | 2048 | 4096)) => Ok(size),
        _ => Err(Expected::form("512, 1024, 2048 or 4096")),
    }
}

/// `--connections`.
pub fn connections(text: &str) -> Result<u16, Expected> {
    number(text, 1..=MAX_CONNECTIONS, || {
        Expected(format!("a count from 1 to {MAX_CONNECTIONS}").into())
    })
}

/// `--timeout`: the kernel's I/O timeout; 0 would mean none, which leaving it out says.
pub fn io_timeout(text: &str) -> Result<u64, Expected> {
    number(text, 1..=u64::MAX, || {
        Expected::form("whole seconds, at least 1")
    })
}

/// `--dead-timeout`, `--tcp-user-timeout`: 0 turns them off.
pub fn seconds(text: &str) -> Result<u64, Expected> {
    number(text, 0..=u64::MAX, || Expected::form("whole seconds"))
}

/// `--connect-timeout`.
pub fn connect_timeout(text: &str) -> Result<u64, Expected> {
    number(text, 1..=3600, || {
        Expected::form("whole seconds from 1 to 3600")
    })
}

/// `--retries`.
pub fn retries(text: &str) -> Result<u32, Expected> {
    number(text, 0..=1000, || Expected::form("a count from 0 to 1000"))
}

/// `--priority`: the kernel's swap priorities.
pub fn priority(text: &str) -> Result<u16, Expected> {
    number(text, 0..=32767, || {
        Expected::form("a swap priority from 0 to 32767")
    })
}

/// `--keepalive`: `IDLE,INTERVAL,COUNT` or `off`, as the boot's `rd.nbdroot.keepalive=` reads
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveSetting(pub Option<Keepalive>);

impl fmt::Display for KeepaliveSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&settings::keepalive_text(self.0))
    }
}

pub fn keepalive(text: &str) -> Result<KeepaliveSetting, Expected> {
    settings::parse_keepalive(text)
        .map(KeepaliveSetting)
        .map_err(|_| Expected::form(settings::KEEPALIVE_FORM))
}

/// `--nic-modules`: `default`, `none` or a list.
pub fn nic_modules(text: &str) -> Result<NicModules, Expected> {
    text.parse()
        .map_err(|_| Expected::form("default, none or a comma-separated list of modules"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_to_their_ranges() {
        assert_eq!(block_size("4096"), Ok(4096));
        for bad in ["0", "513", "8192", "", "4k", "-512"] {
            assert!(block_size(bad).is_err(), "{bad}");
        }
        assert_eq!(connections("64"), Ok(64));
        assert!(connections("0").is_err() && connections("65").is_err());
        assert!(io_timeout("0").is_err());
        assert_eq!(seconds("0"), Ok(0));
        assert!(connect_timeout("3601").is_err() && connect_timeout("0").is_err());
        assert_eq!(retries("1000"), Ok(1000));
        assert!(retries("1001").is_err());
        assert_eq!(priority("32767"), Ok(32767));
        assert!(priority("32768").is_err() && priority("-1").is_err());
    }

    #[test]
    fn keepalive_reads_and_prints_the_settings_form() {
        assert_eq!(keepalive("off"), Ok(KeepaliveSetting(None)));
        assert_eq!(
            keepalive("10,5,3").map(|k| k.to_string()),
            Ok("10,5,3".to_string())
        );
        assert_eq!(
            keepalive("1,2"),
            Err(Expected::form(settings::KEEPALIVE_FORM)),
        );
        assert_eq!(KeepaliveSetting(None).to_string(), "off");
    }
}
