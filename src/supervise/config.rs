//! What a supervisor needs to know, passed to it as one command-line argument (it is started
//! by exec, so that its argv[0] can be `@nbdroot`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::connect::Peer;
use crate::kernel::attach::{AttachOptions, Attached};
use crate::proto::consts::TFLAG_READ_ONLY;
use crate::settings::{self, SocketOptions};
use crate::tls::{TlsSettings, Verify};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub index: u32,
    pub peer: Peer,
    pub export: String,
    /// The export size at attach time: a reconnect that finds another size is refused.
    pub size: u64,
    /// The transmission flags the kernel was given (READ_ONLY included when the device was
    /// made read-only): a reconnect that would take away one it acts on is refused.
    pub flags: u16,
    pub connections: usize,
    /// Bound on one reconnect attempt (connect plus handshake).
    pub attempt_timeout: Duration,
    /// The kernel I/O timeout the device was attached with, when the supervisor may raise
    /// it (none was given); `None` leaves it alone.
    pub io_timeout: Option<Duration>,
    pub socket: SocketOptions,
    pub identifier: Option<String>,
    /// Servers exporting the same image ([`crate::replica`]): a dead connection goes to
    /// whichever server answers, live ones first.
    pub replicas: Vec<Peer>,
    /// With replicas: the fingerprint a server's export must match to take connections.
    pub fingerprint: Option<u64>,
    /// With replicas: the servers (0 the main one) that were down at attach time.
    pub down: Vec<usize>,
    /// An inherited directory descriptor for status files (/run/nbdroot), which stays valid
    /// after switch_root moves /run away from the supervisor's view.
    pub status_fd: Option<i32>,
    /// TLS for reconnects, the name to verify resolved: every new connection gets a new TLS
    /// session and kernel TLS, as at attach time.
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("supervisor configuration \"{0}\" is malformed")]
pub struct ConfigError(pub String);

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn encode_peer(peer: &Peer) -> String {
    match peer {
        Peer::Tcp(a) => format!("tcp:{a}"),
        Peer::Unix(p) => format!("unix:{}", hex(&p.to_string_lossy())),
    }
}

fn decode_peer(text: &str) -> Option<Peer> {
    match text.split_once(':')? {
        ("tcp", a) => a.parse::<SocketAddr>().ok().map(Peer::Tcp),
        ("unix", p) => Some(Peer::Unix(PathBuf::from(unhex(p)?))),
        _ => None,
    }
}

impl Config {
    /// The supervisor of a device just attached with `opts`.
    pub fn new(attached: &Attached, opts: &AttachOptions) -> Self {
        let read_only = if attached.read_only {
            TFLAG_READ_ONLY
        } else {
            0
        };
        Config {
            index: attached.index,
            peer: attached.peer.clone(),
            export: opts.export.clone(),
            size: attached.export.size,
            flags: attached.export.flags | read_only,
            connections: if opts.replicas.is_empty() {
                opts.connections
            } else {
                crate::replica::connection_count(opts.connections, opts.replicas.len() + 1)
            },
            attempt_timeout: opts.policy.attempt_timeout,
            io_timeout: (opts.timeout.is_none() && opts.supervised).then(|| opts.io_timeout()),
            socket: opts.socket,
            identifier: opts.identifier.clone(),
            replicas: opts.replicas.clone(),
            fingerprint: attached.fingerprint,
            down: attached.down.clone(),
            status_fd: None,
            tls: opts.tls.as_ref().map(|c| c.settings().clone()),
        }
    }

    /// `key=value` pairs joined by `;`, strings hex-encoded.
    pub fn encode(&self) -> String {
        let peer = encode_peer(&self.peer);
        let keepalive = settings::keepalive_text(self.socket.keepalive);
        let mut s = format!(
            "index={};peer={peer};export={};size={};flags={};conns={};timeout={};keepalive={keepalive};user_timeout={}",
            self.index,
            hex(&self.export),
            self.size,
            self.flags,
            self.connections,
            self.attempt_timeout.as_millis(),
            self.socket.user_timeout.map_or(0, |t| t.as_millis()),
        );
        if let Some(t) = self.io_timeout {
            s.push_str(&format!(";io_timeout={}", t.as_secs()));
        }
        if let Some(id) = &self.identifier {
            s.push_str(&format!(";ident={}", hex(id)));
        }
        if !self.replicas.is_empty() {
            let list: Vec<String> = self.replicas.iter().map(encode_peer).collect();
            s.push_str(&format!(";replicas={}", list.join("|")));
        }
        if let Some(fp) = self.fingerprint {
            s.push_str(&format!(";fp={fp}"));
        }
        if !self.down.is_empty() {
            let list: Vec<String> = self.down.iter().map(usize::to_string).collect();
            s.push_str(&format!(";down={}", list.join("|")));
        }
        if let Some(fd) = self.status_fd {
            s.push_str(&format!(";status_fd={fd}"));
        }
        if let Some(t) = &self.tls {
            let path = |p: &Option<PathBuf>| {
                p.as_ref()
                    .map_or(String::new(), |p| hex(&p.to_string_lossy()))
            };
            s.push_str(&format!(
                ";tls_verify={};tls_ca={};tls_cert={};tls_key={};tls_name={}",
                t.verify.as_str(),
                path(&t.ca),
                path(&t.cert),
                path(&t.key),
                hex(t.hostname.as_deref().unwrap_or_default()),
            ));
        }
        s
    }

    pub fn decode(text: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError(text.to_string());
        let get = |key: &str| {
            text.split(';')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let num = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
        let peer = decode_peer(get("peer").ok_or_else(bad)?).ok_or_else(bad)?;
        let replicas = match get("replicas") {
            Some(list) => list
                .split('|')
                .map(|p| decode_peer(p).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let keepalive =
            settings::parse_keepalive(get("keepalive").ok_or_else(bad)?).map_err(|_| bad())?;
        let user_timeout = num("user_timeout")?;
        let tls = match get("tls_verify") {
            None => None,
            Some(v) => {
                let text = |key: &str| unhex(get(key).ok_or_else(bad)?).ok_or_else(bad);
                let path = |key: &str| text(key).map(|p| (!p.is_empty()).then(|| PathBuf::from(p)));
                let name = text("tls_name")?;
                Some(TlsSettings {
                    verify: Verify::parse(v).ok_or_else(bad)?,
                    ca: path("tls_ca")?,
                    cert: path("tls_cert")?,
                    key: path("tls_key")?,
                    hostname: (!name.is_empty()).then_some(name),
                })
            }
        };
        Ok(Config {
            index: num("index")? as u32,
            peer,
            export: unhex(get("export").ok_or_else(bad)?).ok_or_else(bad)?,
            size: num("size")?,
            flags: u16::try_from(num("flags")?).map_err(|_| bad())?,
            connections: num("conns")? as usize,
            attempt_timeout: Duration::from_millis(num("timeout")?),
            io_timeout: get("io_timeout")
                .map(|v| v.parse().map(Duration::from_secs).map_err(|_| bad()))
                .transpose()?,
            socket: SocketOptions {
                keepalive,
                user_timeout: (user_timeout > 0).then(|| Duration::from_millis(user_timeout)),
            },
            identifier: get("ident").map(|h| unhex(h).ok_or_else(bad)).transpose()?,
            replicas,
            fingerprint: get("fp")
                .map(|v| v.parse().map_err(|_| bad()))
                .transpose()?,
            down: match get("down") {
                Some(list) => list
                    .split('|')
                    .map(|v| v.parse().map_err(|_| bad()))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            },
            status_fd: get("status_fd")
                .map(|v| v.parse().map_err(|_| bad()))
                .transpose()?,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut c = Config {
            index: 3,
            peer: Peer::Tcp("[fd00::1]:10809".parse().unwrap()),
            export: "root; disk=1".into(),
            size: 1 << 30,
            flags: 0x1ed,
            connections: 4,
            attempt_timeout: Duration::from_secs(10),
            io_timeout: Some(Duration::from_secs(2)),
            socket: SocketOptions::default(),
            identifier: Some("nbdroot".into()),
            replicas: vec![
                Peer::Tcp("10.0.0.2:10809".parse().unwrap()),
                Peer::Tcp("[fd00::3]:10900".parse().unwrap()),
            ],
            fingerprint: Some(u64::MAX),
            down: vec![0, 2],
            status_fd: Some(11),
            tls: Some(TlsSettings {
                ca: Some("/etc/nbdroot/tls/ca;x.pem".into()),
                cert: None,
                key: Some("/k".into()),
                hostname: Some("nbd.example".into()),
                verify: Verify::None,
            }),
        };
        assert_eq!(Config::decode(&c.encode()), Ok(c.clone()));
        c.tls = None;
        assert_eq!(Config::decode(&c.encode()), Ok(c.clone()));
        c.peer = Peer::Unix("/run/a;b.sock".into());
        c.socket = SocketOptions {
            keepalive: None,
            user_timeout: None,
        };
        c.identifier = None;
        c.replicas.clear();
        c.fingerprint = None;
        c.down.clear();
        c.status_fd = None;
        assert_eq!(Config::decode(&c.encode()), Ok(c));
        for bad in ["", "index=x", "index=1;peer=tcp:nope"] {
            assert!(Config::decode(bad).is_err(), "{bad}");
        }
    }
}
