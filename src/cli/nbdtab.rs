//! `/etc/nbdtab`, nbd-client's table of predefined connections, so that `nbdroot connect nbd0`
//! attaches what `nbd-client nbd0` would.
//!
//! One entry a line: the device's short name (`nbd0`), the server (a host, or a socket path
//! with `unix`), the export name, and optionally options separated by commas. Fields are
//! separated by spaces or tabs; `#` starts a comment that runs to the end of the line.
//!
//! The options map onto `connect`'s: `port=`, `bs=`, `timeout=`, `conns=`, `persist`,
//! `readonly` (or `ro`), `unix`, `nonetlink`. nbdroot never needs `swap` (the supervisor is
//! always safe in the I/O path), `no_optgo` (it falls back to NBD_OPT_EXPORT_NAME by itself),
//! `sdp` or `systemd_mark`: those are accepted and said to have no effect. The TLS options
//! (`tls`, `cacertfile=`, `certfile=`, `keyfile=`, `tlshostname=`) become `connect --tls`
//! and its `--tls-*` options; any of them asks for TLS. Options starting with `_` are reserved
//! for local use and skipped silently, as nbd-client does; any other option is unknown, and
//! warned about.
//!
//! Pure: the caller reads the file, and logs [`Options::notes`].

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::address::{Endpoint, Host};
use crate::cli::values;
use crate::kernel::device;
use crate::proto::consts::DEFAULT_PORT;
use crate::tls::TlsSettings;

/// Where nbd-client (and `nbdroot connect nbdN`) reads the table.
pub const PATH: &str = "/etc/nbdtab";

/// The environment variable that names another table (tests, chroots).
pub const PATH_ENV: &str = "NBDROOT_NBDTAB";

/// The form of an entry, quoted in errors.
pub const FORM: &str = "<nbdN> <host|socket> <export> [<option>,...]";

/// Every option, as written in the table, and what nbdroot does with it: the man page's
/// nbdtab section (nbdroot-connect(8)) is rendered from this table, and a test checks the
/// parser takes each form.
pub const OPTIONS: &[(&str, &str)] = &[
    ("port=N", "The server's TCP port [default: 10809]."),
    (
        "bs=BYTES",
        "Kernel block size: 512, 1024, 2048 or 4096 (--block-size).",
    ),
    ("timeout=SECS", "Kernel I/O timeout (--timeout)."),
    ("conns=N", "Number of connections (--connections)."),
    (
        "persist",
        "Keep a supervisor that replaces dead connections (--persist).",
    ),
    ("readonly, ro", "Attach read-only (--readonly)."),
    ("unix", "The server field is the path of a Unix socket."),
    (
        "nonetlink",
        "Use the ioctl interface (--ioctl); not with persist.",
    ),
    (
        "swap, no_optgo, sdp, systemd_mark",
        "Accepted, with a note that they change nothing: the supervisor is always safe in the \
         I/O path (swapon the device to swap on it), NBD_OPT_EXPORT_NAME is the fallback by \
         itself, SDP is gone from Linux, and systemd leaves @nbdroot alone.",
    ),
    (
        "tls",
        "Use TLS (--tls); implied by any of the options below.",
    ),
    (
        "cacertfile=FILE",
        "The CA that signed the server's certificate (--tls-ca).",
    ),
    (
        "certfile=FILE, keyfile=FILE",
        "Client certificate and its key (--tls-cert, --tls-key); one needs the other.",
    ),
    (
        "tlshostname=NAME",
        "The name the server's certificate must carry (--tls-hostname).",
    ),
    (
        "_NAME[=VALUE]",
        "Reserved for local use: skipped silently. Any other option is warned about and ignored.",
    ),
];

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, for messages.
    pub line: usize,
    /// The `N` of `nbdN`.
    pub index: u32,
    pub endpoint: Endpoint,
    pub export: String,
    pub options: Options,
}

/// The options field, as nbdroot applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub block_size: Option<u32>,
    pub timeout: Option<u64>,
    pub connections: Option<u16>,
    pub persist: bool,
    pub read_only: bool,
    /// `nonetlink`: the ioctl interface.
    pub ioctl: bool,
    /// TLS, when any TLS option is given; verification is always full (nbd-client's table has
    /// no way to switch it off).
    pub tls: Option<TlsSettings>,
    /// What the user should hear about: options with no effect here, unknown options.
    pub notes: Vec<String>,
}

/// A line that is not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

/// Why an entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no entry for nbd{0}")]
    Missing(u32),
}

/// Parses the whole table. A malformed line is an error, as it is for nbd-client: a table
/// that does not say what its writer meant is not half-used.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let fields: Vec<&str> = content
            .split([' ', '\t'])
            .filter(|f| !f.is_empty())
            .collect();
        if fields.is_empty() {
            continue;
        }
        let err = |why: String| ParseError { line, why };
        let [name, server, export, options @ ..] = fields.as_slice() else {
            return Err(err(format!(
                "\"{}\" has {} fields; expected {FORM}",
                content.trim(),
                fields.len()
            )));
        };
        if options.len() > 1 {
            return Err(err(format!(
                "\"{}\" has {} fields; expected {FORM} (options are separated by commas, not spaces)",
                content.trim(),
                fields.len()
            )));
        }
        let index = device_name(name).ok_or_else(|| {
            err(format!(
                "device \"{name}\" is not an nbd device; expected nbdN"
            ))
        })?;
        if let Some(first) = entries.iter().find(|e| e.index == index) {
            return Err(err(format!(
                "nbd{index} is listed again (first on line {})",
                first.line
            )));
        }
        let (options, port, unix) =
            parse_options(options.first().copied().unwrap_or("")).map_err(err)?;
        let endpoint = if unix {
            if port.is_some() {
                return Err(err(
                    "\"port=\" and \"unix\" are both given; a socket has no port".into(),
                ));
            }
            Endpoint::Unix(PathBuf::from(server))
        } else {
            Endpoint::Tcp {
                host: host(server),
                port: port.unwrap_or(DEFAULT_PORT),
            }
        };
        entries.push(Entry {
            line,
            index,
            endpoint,
            export: (*export).to_string(),
            options,
        });
    }
    Ok(entries)
}

/// The entry for `/dev/nbd<index>`.
pub fn lookup(entries: &[Entry], index: u32) -> Result<&Entry, LookupError> {
    entries
        .iter()
        .find(|e| e.index == index)
        .ok_or(LookupError::Missing(index))
}

/// `nbdN` (nbd-client's short name), or `/dev/nbdN` written in full; what `connect` takes
/// alone as a table lookup.
pub fn device_name(name: &str) -> Option<u32> {
    let short = name.strip_prefix("/dev/").unwrap_or(name);
    short
        .strip_prefix("nbd")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|_| device::parse_index(short))
}

/// The host field: an address (IPv6 with or without brackets) or a name.
fn host(text: &str) -> Host {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .map_or_else(|_| Host::Name(text.to_string()), Host::Ip)
}

/// The options field; also the port and whether the server is a socket, which shape the
/// endpoint rather than the attach.
fn parse_options(field: &str) -> Result<(Options, Option<u16>, bool), String> {
    let mut o = Options::default();
    let mut port = None;
    let mut unix = false;
    for option in field.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let bad = |e: values::Expected| format!("option \"{option}\": {e}");
        match (key, value) {
            ("port", Some(v)) => {
                port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("option \"{option}\": expected a port from 1 to 65535"))?,
                );
            }
            ("bs", Some(v)) => o.block_size = Some(values::block_size(v).map_err(bad)?),
            ("timeout", Some(v)) => o.timeout = Some(values::io_timeout(v).map_err(bad)?),
            ("conns", Some(v)) => o.connections = Some(values::connections(v).map_err(bad)?),
            ("persist", None) => o.persist = true,
            ("readonly" | "ro", None) => o.read_only = true,
            ("unix", None) => unix = true,
            ("nonetlink", None) => o.ioctl = true,
            ("tls", None) => {
                o.tls.get_or_insert_with(TlsSettings::default);
            }
            ("cacertfile", Some(v)) => tls(&mut o).ca = Some(PathBuf::from(v)),
            ("certfile", Some(v)) => tls(&mut o).cert = Some(PathBuf::from(v)),
            ("keyfile", Some(v)) => tls(&mut o).key = Some(PathBuf::from(v)),
            ("tlshostname", Some(v)) => tls(&mut o).hostname = Some(v.to_string()),
            ("swap", None) => o.notes.push(Note::NoEffect(option, "the supervisor is always safe in the I/O path; swapon the device to swap on it").to_string()),
            ("no_optgo", None) => o.notes.push(Note::NoEffect(option, "nbdroot falls back to NBD_OPT_EXPORT_NAME by itself").to_string()),
            ("sdp", None) => o.notes.push(Note::NoEffect(option, "the Sockets Direct Protocol is gone from Linux").to_string()),
            ("systemd_mark", None) => o.notes.push(Note::NoEffect(option, "the supervisor runs as @nbdroot, which systemd leaves alone").to_string()),
            (
                "port" | "bs" | "timeout" | "conns" | "certfile" | "keyfile" | "cacertfile"
                | "tlshostname",
                None,
            ) => return Err(format!("option \"{option}\" needs a value; expected {option}=<value>")),
            (
                "persist" | "readonly" | "ro" | "unix" | "nonetlink" | "tls" | "swap" | "no_optgo"
                | "sdp" | "systemd_mark",
                Some(_),
            ) => return Err(format!("option \"{option}\" takes no value; expected {key}")),
            _ if key.starts_with('_') => {}
            _ => o.notes.push(Note::Unknown(option).to_string()),
        }
    }
    if let Some(t) = &o.tls {
        if t.cert.is_some() != t.key.is_some() {
            return Err("\"certfile=\" and \"keyfile=\" go together; give both or neither".into());
        }
    }
    Ok((o, port, unix))
}

/// The entry's TLS settings, created by the first TLS option.
fn tls(o: &mut Options) -> &mut TlsSettings {
    o.tls.get_or_insert_with(TlsSettings::default)
}

/// What [`Options::notes`] says.
enum Note<'a> {
    NoEffect(&'a str, &'static str),
    Unknown(&'a str),
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NoEffect(option, why) => write!(f, "option \"{option}\" has no effect: {why}"),
            Note::Unknown(option) => write!(
                f,
                "unknown option \"{option}\" ignored (prefix local options with \"_\")"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn one(line: &str) -> Entry {
        let mut all = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(all.len(), 1, "{line}");
        all.remove(0)
    }

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: Host::Name(host.into()),
            port,
        }
    }

    #[test]
    fn every_documented_option_parses() {
        let written = [
            "port=1",
            "bs=512",
            "timeout=1",
            "conns=2",
            "persist",
            "readonly",
            "ro",
            "unix",
            "nonetlink",
            "swap",
            "no_optgo",
            "sdp",
            "systemd_mark",
            "tls",
            "certfile=/c",
            "keyfile=/k",
            "cacertfile=/a",
            "tlshostname=h",
            "_site=1",
        ];
        let key = |form: &str| {
            form.split(['=', '['])
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let documented: Vec<String> = OPTIONS
            .iter()
            .flat_map(|(forms, _)| forms.split(", ").map(key))
            .collect();
        let tried: Vec<String> = written.iter().map(|w| key(w)).collect();
        assert_eq!(documented.len(), tried.len());
        for k in &documented {
            assert!(
                tried.contains(k) || k == "_NAME" && tried.contains(&"_site".into()),
                "{k}"
            );
        }
        for option in written {
            // A certificate and its key come together.
            let option = match option {
                "certfile=/c" | "keyfile=/k" => "certfile=/c,keyfile=/k",
                o => o,
            };
            let e = one(&format!("nbd0 /srv x {option}"));
            let unknown = e.options.notes.iter().any(|n| n.starts_with("unknown"));
            assert!(!unknown, "{option}: {:?}", e.options.notes);
        }
    }

    #[test]
    fn the_man_page_example_parses() {
        let text = "\
# swap space, called \"swapexport\" on the server
# optimize for swap, and try to reconnect upon disconnect.
nbd0 nbdserver.example.com swapexport swap,persist
# other export, called \"data\" on the server. No options for this one.
nbd1 nbdserver.example.com data
";
        let all = parse(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].line, 3);
        assert_eq!(all[0].index, 0);
        assert_eq!(all[0].endpoint, tcp("nbdserver.example.com", 10809));
        assert_eq!(all[0].export, "swapexport");
        assert!(all[0].options.persist);
        assert_eq!(all[0].options.notes.len(), 1, "{:?}", all[0].options.notes);
        assert!(all[0].options.notes[0].starts_with("option \"swap\" has no effect"));
        assert_eq!(all[1].line, 5);
        assert_eq!(all[1].index, 1);
        assert_eq!(all[1].options, Options::default());
    }

    #[test]
    fn options_map_onto_connect() {
        let e =
            one("nbd3\t10.0.0.1   root port=10900,bs=4096,timeout=30,conns=4,persist,ro,nonetlink");
        assert_eq!(e.index, 3);
        assert_eq!(
            e.endpoint,
            Endpoint::Tcp {
                host: Host::Ip([10, 0, 0, 1].into()),
                port: 10900
            }
        );
        assert_eq!(
            e.options,
            Options {
                block_size: Some(4096),
                timeout: Some(30),
                connections: Some(4),
                persist: true,
                read_only: true,
                ioctl: true,
                ..Options::default()
            }
        );
        assert!(one("nbd0 h x readonly").options.read_only);
    }

    #[test]
    fn hosts_sockets_and_comments() {
        assert_eq!(
            one("nbd0 fd00::1 root").endpoint,
            Endpoint::Tcp {
                host: Host::Ip(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into()),
                port: 10809
            }
        );
        assert_eq!(
            one("nbd0 [fd00::1] root port=1").endpoint,
            Endpoint::Tcp {
                host: Host::Ip(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into()),
                port: 1
            }
        );
        assert_eq!(
            one("nbd2 /run/nbd.sock disk unix").endpoint,
            Endpoint::Unix("/run/nbd.sock".into())
        );
        let e = one("  nbd1 srv data # bs=512 is not an option here\n\n   # only a comment\n");
        assert_eq!((e.line, e.options.block_size), (1, None));
        assert_eq!(one("/dev/nbd7 srv data").index, 7);
        assert_eq!(one("nbd0 srv data#comment").export, "data");
    }

    #[test]
    fn ignorable_options_are_noted_and_local_ones_skipped() {
        let e = one("nbd0 srv data _site=3,_x,no_optgo,sdp,systemd_mark,frobnicate=2");
        let notes = &e.options.notes;
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].starts_with("option \"no_optgo\" has no effect: "));
        assert!(notes[1].starts_with("option \"sdp\" has no effect: "));
        assert!(notes[2].starts_with("option \"systemd_mark\" has no effect: "));
        assert_eq!(
            notes[3],
            "unknown option \"frobnicate=2\" ignored (prefix local options with \"_\")"
        );
    }

    #[test]
    fn tls_options_map_onto_connect_tls() {
        let all = parse(
            "nbd0 srv a cacertfile=/ca.pem,certfile=/c.pem,keyfile=/k.pem,tlshostname=disk.lan\n\
             nbd1 srv b tls\nnbd2 srv c\n",
        )
        .unwrap();
        assert_eq!(
            lookup(&all, 0).unwrap().options.tls,
            Some(TlsSettings {
                ca: Some("/ca.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
                hostname: Some("disk.lan".into()),
                verify: crate::tls::Verify::Full,
            })
        );
        assert_eq!(
            lookup(&all, 1).unwrap().options.tls,
            Some(TlsSettings::default())
        );
        assert_eq!(lookup(&all, 2).unwrap().options.tls, None);
        assert_eq!(lookup(&all, 3), Err(LookupError::Missing(3)));
        assert_eq!(LookupError::Missing(3).to_string(), "no entry for nbd3");
    }

    #[test]
    fn malformed_lines_say_what_and_where() {
        let cases = [
            ("nbd0 srv", "line 1: \"nbd0 srv\" has 2 fields; expected <nbdN> <host|socket> <export> [<option>,...]"),
            ("nbd0 srv x persist ro", "line 1: \"nbd0 srv x persist ro\" has 5 fields; expected <nbdN> <host|socket> <export> [<option>,...] (options are separated by commas, not spaces)"),
            ("\nsda srv x", "line 2: device \"sda\" is not an nbd device; expected nbdN"),
            ("nbd srv x", "line 1: device \"nbd\" is not an nbd device; expected nbdN"),
            ("nbd0p1 srv x", "line 1: device \"nbd0p1\" is not an nbd device; expected nbdN"),
            ("nbd0 srv x bs=3", "line 1: option \"bs=3\": expected 512, 1024, 2048 or 4096"),
            ("nbd0 srv x conns=0", "line 1: option \"conns=0\": expected a count from 1 to 64"),
            ("nbd0 srv x timeout=0", "line 1: option \"timeout=0\": expected whole seconds, at least 1"),
            ("nbd0 srv x port=65536", "line 1: option \"port=65536\": expected a port from 1 to 65535"),
            ("nbd0 srv x port", "line 1: option \"port\" needs a value; expected port=<value>"),
            ("nbd0 srv x persist=1", "line 1: option \"persist=1\" takes no value; expected persist"),
            ("nbd0 srv x certfile=/c", "line 1: \"certfile=\" and \"keyfile=\" go together; give both or neither"),
            ("nbd0 srv x tls=1", "line 1: option \"tls=1\" takes no value; expected tls"),
            ("nbd0 /s x unix,port=1", "line 1: \"port=\" and \"unix\" are both given; a socket has no port"),
            ("nbd0 a x\nnbd0 b y", "line 2: nbd0 is listed again (first on line 1)"),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse(text).map(|_| ()).unwrap_err().to_string(),
                want,
                "{text:?}"
            );
        }
    }
}
