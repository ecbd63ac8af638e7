//! The one home of every tunable setting and its default, shared by the boot (`rd.nbdroot.*`),
//! the command line (`nbdroot connect …`) and the supervisor's configuration string. Each
//! setting with a textual form parses and prints it here, so the three never disagree.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default bound on one attempt to reach a server (TCP connect, then the handshake).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default retries after a first failed attempt at boot, where a server may still be starting.
pub const BOOT_RETRIES: u32 = 5;
/// How long I/O waits for the supervisor to replace a dead connection, when one runs.
pub const DEAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Kernel I/O timeout of a device attached over netlink when none is given and no supervisor
/// replaces its dead connections. Without one the kernel never gives up on a request sent on
/// a connection that then died (it only logs it as stuck at every 30 s tick), so that request
/// waits for its server forever, past the dead timeout. With one, it fails once the dead
/// timeout passes. 30 s is the block layer's own tick: only the outcome changes.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The first kernel I/O timeout of a supervised device when none is given. The driver sends a
/// request again only when its timeout expires, also when the connection it went out on died
/// long before (a server killed or restarted): this timeout is the stall such a request adds
/// to the outage. When it expires on a connection that was alive and the server answers the
/// reconnect at once, the link is slower than the timeout: the supervisor doubles it, up to
/// [`IO_TIMEOUT`]. A timeout written by the user is kept as it is.
pub const SUPERVISED_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// TCP_USER_TIMEOUT of the sockets handed to the kernel.
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive of the sockets handed to the kernel: 10 s idle, then 3 probes 5 s apart.
pub const KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(10),
    interval: Duration::from_secs(5),
    count: 3,
};
/// How long the boot waits for an interface, its link, partitions or a labelled filesystem.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on getting a DHCP lease on one interface.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per device when nothing else says.
pub const CONNECTIONS: u16 = 1;
/// The most connections one device may have.
pub const MAX_CONNECTIONS: u16 = 64;
/// The pause after a first failed attempt to reach a server; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to reach a server.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The pause before a failed boot starts over (`rd.nbdroot.onfail=retry`); it doubles up to
/// [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two boot attempts.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// Bounds on reaching a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// Bound on one attempt: TCP connect plus handshake.
    pub attempt_timeout: Duration,
    /// Attempts after the first one fails.
    pub retries: u32,
}

impl ConnectPolicy {
    /// The boot's policy: a server may still be coming up, so try a few times.
    pub const BOOT: Self = Self {
        attempt_timeout: ATTEMPT_TIMEOUT,
        retries: BOOT_RETRIES,
    };
    /// A command's policy: one attempt, as nbd-client makes, unless asked for more.
    pub const COMMAND: Self = Self {
        attempt_timeout: ATTEMPT_TIMEOUT,
        retries: 0,
    };
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        Self::BOOT
    }
}

/// TCP keepalive probing: idle time before the first probe, interval, probes before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// The textual form of a keepalive setting, `<idle>,<interval>,<count>` in whole seconds or
/// `off`.
pub const KEEPALIVE_FORM: &str = "<idle s>,<interval s>,<count> (positive whole numbers) or off";

/// A keepalive setting that is not `<idle>,<interval>,<count>` or `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\": expected {KEEPALIVE_FORM}")]
pub struct KeepaliveError(pub String);

/// Parses `<idle>,<interval>,<count>` or `off` (`None`).
pub fn parse_keepalive(text: &str) -> Result<Option<Keepalive>, KeepaliveError> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some)
}

/// Prints what [`parse_keepalive`] reads.
pub fn keepalive_text(k: Option<Keepalive>) -> String {
    k.map_or_else(|| "off".to_string(), |k| k.to_string())
}

impl FromStr for Keepalive {
    type Err = KeepaliveError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let numbers: Option<Vec<u32>> = text
            .split(',')
            .map(|p| p.parse().ok().filter(|&n| n > 0))
            .collect();
        match numbers.as_deref() {
            Some(&[idle, interval, count]) => Ok(Keepalive {
                idle: Duration::from_secs(idle.into()),
                interval: Duration::from_secs(interval.into()),
                count,
            }),
            _ => Err(KeepaliveError(text.to_string())),
        }
    }
}

impl fmt::Display for Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{}",
            self.idle.as_secs(),
            self.interval.as_secs(),
            self.count
        )
    }
}

/// Options for the sockets handed to the kernel: they notice a dead server (a crash, a cable
/// pulled) within a bound, where plain TCP would wait for many minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged.
    pub user_timeout: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            keepalive: Some(KEEPALIVE),
            user_timeout: Some(USER_TIMEOUT),
        }
    }
}

/// Knobs of the boot beyond the root's own nbdopts (`rd.nbdroot.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `rd.nbdroot.connections=`: default for `conns=`.
    pub connections: u16,
    /// `rd.nbdroot.link_timeout=`: how long to wait for interfaces and their link.
    pub link_timeout: Duration,
    /// `rd.nbdroot.dhcp_timeout=`: bound on getting a lease on one interface.
    pub dhcp_timeout: Duration,
    /// `rd.nbdroot.keepalive=` and `rd.nbdroot.user_timeout=`.
    pub socket: SocketOptions,
    /// `rd.nbdroot.dead_timeout=<s>` (0: none): how long I/O waits for the supervisor to
    /// replace a dead connection, when `dead-timeout=` is not in nbdopts.
    pub dead_timeout: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            connections: CONNECTIONS,
            link_timeout: LINK_TIMEOUT,
            dhcp_timeout: DHCP_TIMEOUT,
            socket: SocketOptions::default(),
            dead_timeout: Some(DEAD_TIMEOUT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_round_trips() {
        assert_eq!(parse_keepalive("off"), Ok(None));
        assert_eq!(parse_keepalive("10,5,3"), Ok(Some(KEEPALIVE)));
        assert_eq!(keepalive_text(Some(KEEPALIVE)), "10,5,3");
        assert_eq!(keepalive_text(None), "off");
        for bad in ["", "1,2", "1,2,3,4", "0,5,3", "a,b,c", "1,,3", "-1,2,3"] {
            assert_eq!(
                parse_keepalive(bad),
                Err(KeepaliveError(bad.into())),
                "{bad}"
            );
        }
    }
}
