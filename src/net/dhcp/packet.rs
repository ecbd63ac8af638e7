//! DHCPv4 messages (RFC 2131, options from RFC 2132 and 3442): encoding and decoding, pure.
//!
//! [`Packet`] is the wire format: the BOOTP header and the raw options. [`Reply`] is the checked,
//! typed view of a server's answer that the client acts on.

use std::fmt;
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHER: u8 = 1;
const HLEN_ETHER: u8 = 6;
/// Asks the server to broadcast its answer: without an address the client cannot receive
/// unicast.
pub const FLAG_BROADCAST: u16 = 0x8000;
const MAGIC_COOKIE: u32 = 0x6382_5363;

/// Offsets in the fixed BOOTP header.
const SNAME: usize = 44;
const FILE: usize = 108;
const COOKIE: usize = 236;
const OPTIONS: usize = 240;
/// BOOTP's minimum message size; some relays drop shorter ones.
const MIN_LEN: usize = 300;
/// What we promise to accept (option 57): a full Ethernet frame's payload.
const MAX_MESSAGE_SIZE: u16 = 1500;

pub const OPT_PAD: u8 = 0;
pub const OPT_SUBNET_MASK: u8 = 1;
pub const OPT_ROUTER: u8 = 3;
pub const OPT_DNS: u8 = 6;
pub const OPT_HOSTNAME: u8 = 12;
pub const OPT_DOMAIN: u8 = 15;
pub const OPT_ROOT_PATH: u8 = 17;
pub const OPT_MTU: u8 = 26;
pub const OPT_BROADCAST: u8 = 28;
pub const OPT_REQUESTED_IP: u8 = 50;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_OVERLOAD: u8 = 52;
pub const OPT_MESSAGE_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_PARAMETERS: u8 = 55;
pub const OPT_MESSAGE: u8 = 56;
pub const OPT_MAX_SIZE: u8 = 57;
pub const OPT_CLIENT_ID: u8 = 61;
pub const OPT_CLASSLESS_ROUTES: u8 = 121;
pub const OPT_END: u8 = 255;

/// What the client asks for (option 55).
pub const REQUESTED_PARAMETERS: [u8; 11] = [
    OPT_SUBNET_MASK,
    OPT_ROUTER,
    OPT_DNS,
    OPT_HOSTNAME,
    OPT_DOMAIN,
    OPT_MTU,
    OPT_ROOT_PATH,
    OPT_BROADCAST,
    OPT_LEASE_TIME,
    OPT_SERVER_ID,
    OPT_CLASSLESS_ROUTES,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use MessageType::*;
        [Discover, Offer, Request, Decline, Ack, Nak, Release, Inform]
            .into_iter()
            .find(|t| *t as u8 == v)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            MessageType::Discover => "DISCOVER",
            MessageType::Offer => "OFFER",
            MessageType::Request => "REQUEST",
            MessageType::Decline => "DECLINE",
            MessageType::Ack => "ACK",
            MessageType::Nak => "NAK",
            MessageType::Release => "RELEASE",
            MessageType::Inform => "INFORM",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{} is too short for a DHCP message (at least 240)", crate::text::plural(.0, "byte"))]
    TooShort(usize),
    #[error("hardware type {htype} with address length {hlen} is not Ethernet (1, 6)")]
    Hardware { htype: u8, hlen: u8 },
    #[error("magic cookie {0:#010x} is not DHCP's (0x63825363)")]
    Cookie(u32),
    #[error("option {code} at byte {at} runs past the end of its field")]
    Truncated { code: u8, at: usize },
    #[error("op {0} is not a reply (2)")]
    NotReply(u8),
    #[error("transaction id {got:#010x} is not ours ({want:#010x})")]
    OtherXid { got: u32, want: u32 },
    #[error("the reply is for another client ({})", mac_string(.0))]
    OtherClient([u8; 6]),
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
    #[error("option {code} has a bad length ({})", crate::text::plural(.len, "byte"))]
    Length { code: u8, len: usize },
    #[error("option {code} is not UTF-8 text")]
    Text { code: u8 },
    #[error("option 121 has a route with prefix length {0} (at most 32)")]
    RouteWidth(u8),
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One DHCP message as it travels, for an Ethernet client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    /// The next server (TFTP, or the NBD server for Debian's `nbdroot=dhcp`).
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// The server name and boot file fields, when they hold text rather than options.
    pub sname: Option<String>,
    pub file: Option<String>,
    /// `(code, value)` in order of first appearance; a code that appears more than once
    /// (RFC 3396 long options) is concatenated into one value.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    /// A client message with the fields every request shares.
    fn client(kind: MessageType, xid: u32, secs: u16, mac: [u8; 6]) -> Self {
        let mut client_id = vec![HTYPE_ETHER];
        client_id.extend_from_slice(&mac);
        Packet {
            op: BOOTREQUEST,
            xid,
            secs,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            sname: None,
            file: None,
            options: vec![
                (OPT_MESSAGE_TYPE, vec![kind as u8]),
                (OPT_CLIENT_ID, client_id),
            ],
        }
    }

    fn push(&mut self, code: u8, value: &[u8]) {
        self.options.push((code, value.to_vec()));
    }

    /// The options asking for a configuration: parameter list, size, hostname.
    fn asking(mut self, hostname: Option<&str>) -> Self {
        self.push(OPT_PARAMETERS, &REQUESTED_PARAMETERS);
        self.push(OPT_MAX_SIZE, &MAX_MESSAGE_SIZE.to_be_bytes());
        if let Some(h) = hostname.filter(|h| !h.is_empty()) {
            self.push(OPT_HOSTNAME, h.as_bytes());
        }
        self
    }

    pub fn discover(xid: u32, secs: u16, mac: [u8; 6], hostname: Option<&str>) -> Self {
        Self::client(MessageType::Discover, xid, secs, mac).asking(hostname)
    }

    /// The REQUEST answering `server`'s offer of `address` (SELECTING state).
    pub fn request(
        xid: u32,
        secs: u16,
        mac: [u8; 6],
        address: Ipv4Addr,
        server: Ipv4Addr,
        hostname: Option<&str>,
    ) -> Self {
        let mut p = Self::client(MessageType::Request, xid, secs, mac);
        p.push(OPT_REQUESTED_IP, &address.octets());
        p.push(OPT_SERVER_ID, &server.octets());
        p.asking(hostname)
    }

    /// Gives `address` back to `server`; sent by unicast from the configured address.
    pub fn release(xid: u32, mac: [u8; 6], address: Ipv4Addr, server: Ipv4Addr) -> Self {
        let mut p = Self::client(MessageType::Release, xid, 0, mac);
        p.flags = 0;
        p.ciaddr = address;
        p.push(OPT_SERVER_ID, &server.octets());
        p
    }

    /// The value of option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    pub fn message_type(&self) -> Option<MessageType> {
        self.option(OPT_MESSAGE_TYPE)
            .and_then(|v| v.first().copied())
            .and_then(MessageType::from_u8)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_LEN + 64);
        b.extend_from_slice(&[self.op, HTYPE_ETHER, HLEN_ETHER, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(SNAME, 0); // chaddr is 16 bytes
        put_text(&mut b, self.sname.as_deref(), FILE - SNAME);
        put_text(&mut b, self.file.as_deref(), COOKIE - FILE);
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        for (code, value) in &self.options {
            // Longer values are split into consecutive instances (RFC 3396).
            let mut chunks = value.chunks(255).peekable();
            if chunks.peek().is_none() {
                b.extend_from_slice(&[*code, 0]);
            }
            for chunk in chunks {
                b.extend_from_slice(&[*code, chunk.len() as u8]);
                b.extend_from_slice(chunk);
            }
        }
        b.push(OPT_END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, OPT_PAD);
        }
        b
    }

    /// Parses any DHCP message. Checks the framing only: the hardware type, the cookie and
    /// that every option fits.
    pub fn parse(buf: &[u8]) -> Result<Self, PacketError> {
        if buf.len() < OPTIONS {
            return Err(PacketError::TooShort(buf.len()));
        }
        let (htype, hlen) = (buf[1], buf[2]);
        if htype != HTYPE_ETHER || hlen != HLEN_ETHER {
            return Err(PacketError::Hardware { htype, hlen });
        }
        let cookie = be32(&buf[COOKIE..]);
        if cookie != MAGIC_COOKIE {
            return Err(PacketError::Cookie(cookie));
        }
        let mut options = Vec::new();
        scan_options(buf, OPTIONS, buf.len(), &mut options)?;
        // Option 52 moves more options into the file (1), sname (2) or both (3) fields, read
        // in that order (RFC 3396). Its value is the first byte of the option as a whole, as
        // `options` holds it, whichever instances it came in.
        let overload = options
            .iter()
            .find(|(c, _)| *c == OPT_OVERLOAD)
            .and_then(|(_, v)| v.first().copied())
            .unwrap_or(0);
        if overload & 1 != 0 {
            scan_options(buf, FILE, COOKIE, &mut options)?;
        }
        if overload & 2 != 0 {
            scan_options(buf, SNAME, FILE, &mut options)?;
        }
        let addr = |at: usize| Ipv4Addr::from(be32(&buf[at..]));
        Ok(Packet {
            op: buf[0],
            xid: be32(&buf[4..]),
            secs: u16::from_be_bytes([buf[8], buf[9]]),
            flags: u16::from_be_bytes([buf[10], buf[11]]),
            ciaddr: addr(12),
            yiaddr: addr(16),
            siaddr: addr(20),
            giaddr: addr(24),
            chaddr: buf[28..34].try_into().expect("6 bytes"),
            sname: (overload & 2 == 0)
                .then(|| c_text(&buf[SNAME..FILE]))
                .flatten(),
            file: (overload & 1 == 0)
                .then(|| c_text(&buf[FILE..COOKIE]))
                .flatten(),
            options,
        })
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A NUL-terminated text field of `width` bytes (cut to fit, always terminated).
fn put_text(b: &mut Vec<u8>, text: Option<&str>, width: usize) {
    let start = b.len();
    if let Some(t) = text {
        b.extend_from_slice(&t.as_bytes()[..t.len().min(width - 1)]);
    }
    b.resize(start + width, 0);
}

/// The text of a NUL-terminated field, if it holds any (non-UTF-8 is ignored: these fields
/// are informational).
fn c_text(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// Reads the options in `buf[start..end]` into `out`, concatenating repeated codes.
fn scan_options(
    buf: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<(u8, Vec<u8>)>,
) -> Result<(), PacketError> {
    let mut at = start;
    while at < end {
        let code = buf[at];
        match code {
            OPT_PAD => {
                at += 1;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let value = buf
            .get(at + 1)
            .map(|&len| at + 2..at + 2 + len as usize)
            .filter(|r| r.end <= end)
            .map(|r| &buf[r])
            .ok_or(PacketError::Truncated { code, at })?;
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => v.extend_from_slice(value),
            None => out.push((code, value.to_vec())),
        }
        at += 2 + value.len();
    }
    Ok(())
}

/// A server's answer to us, checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub sname: Option<String>,
    pub file: Option<String>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub root_path: Option<String>,
    pub broadcast: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 56, the server's explanation (with a NAK).
    pub message: Option<String>,
    /// Option 121: (destination, prefix length, router); router 0.0.0.0 means on-link.
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

impl Reply {
    /// Decodes `buf` as a reply to transaction `xid` of the client with hardware address `mac`.
    pub fn decode(buf: &[u8], xid: u32, mac: [u8; 6]) -> Result<Self, PacketError> {
        let p = Packet::parse(buf)?;
        if p.op != BOOTREPLY {
            return Err(PacketError::NotReply(p.op));
        }
        if p.xid != xid {
            return Err(PacketError::OtherXid {
                got: p.xid,
                want: xid,
            });
        }
        if p.chaddr != mac {
            return Err(PacketError::OtherClient(p.chaddr));
        }
        Self::from_packet(p)
    }

    fn from_packet(p: Packet) -> Result<Self, PacketError> {
        let kind = match p.option(OPT_MESSAGE_TYPE) {
            None => return Err(PacketError::NoMessageType),
            Some(&[t]) => MessageType::from_u8(t).ok_or(PacketError::UnknownMessageType(t))?,
            Some(v) => return Err(bad_length(OPT_MESSAGE_TYPE, v)),
        };
        let mut r = Reply {
            kind,
            xid: p.xid,
            yiaddr: p.yiaddr,
            siaddr: p.siaddr,
            sname: p.sname,
            file: p.file,
            subnet_mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            hostname: None,
            domain: None,
            mtu: None,
            root_path: None,
            broadcast: None,
            lease_secs: None,
            server_id: None,
            message: None,
            classless_routes: Vec::new(),
        };
        for (code, v) in &p.options {
            let code = *code;
            match code {
                OPT_SUBNET_MASK => r.subnet_mask = Some(one_addr(code, v)?),
                OPT_BROADCAST => r.broadcast = Some(one_addr(code, v)?),
                OPT_SERVER_ID => r.server_id = Some(one_addr(code, v)?),
                OPT_ROUTER => r.routers = addrs(code, v)?,
                OPT_DNS => r.dns = addrs(code, v)?,
                OPT_HOSTNAME => r.hostname = Some(text(code, v)?),
                OPT_DOMAIN => r.domain = Some(text(code, v)?),
                OPT_ROOT_PATH => r.root_path = Some(text(code, v)?),
                OPT_MESSAGE => r.message = Some(text(code, v)?),
                OPT_MTU => {
                    let b: [u8; 2] = v.as_slice().try_into().map_err(|_| bad_length(code, v))?;
                    r.mtu = Some(u16::from_be_bytes(b));
                }
                OPT_LEASE_TIME => {
                    let b: [u8; 4] = v.as_slice().try_into().map_err(|_| bad_length(code, v))?;
                    r.lease_secs = Some(u32::from_be_bytes(b));
                }
                OPT_CLASSLESS_ROUTES => r.classless_routes = classless_routes(v)?,
                _ => {}
            }
        }
        Ok(r)
    }
}

fn bad_length(code: u8, v: &[u8]) -> PacketError {
    PacketError::Length { code, len: v.len() }
}

fn one_addr(code: u8, v: &[u8]) -> Result<Ipv4Addr, PacketError> {
    let b: [u8; 4] = v.try_into().map_err(|_| bad_length(code, v))?;
    Ok(Ipv4Addr::from(b))
}

/// A non-empty list of addresses.
fn addrs(code: u8, v: &[u8]) -> Result<Vec<Ipv4Addr>, PacketError> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(bad_length(code, v));
    }
    Ok(v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect())
}

/// Text; some servers count a trailing NUL.
fn text(code: u8, v: &[u8]) -> Result<String, PacketError> {
    let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    std::str::from_utf8(&v[..end])
        .map(str::to_string)
        .map_err(|_| PacketError::Text { code })
}

/// RFC 3442: each route is a prefix length, the significant octets of the destination and a
/// router.
fn classless_routes(mut v: &[u8]) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>, PacketError> {
    let whole = v.len();
    let mut routes = Vec::new();
    while let Some((&width, rest)) = v.split_first() {
        if width > 32 {
            return Err(PacketError::RouteWidth(width));
        }
        let n = width.div_ceil(8) as usize;
        if rest.len() < n + 4 {
            return Err(PacketError::Length {
                code: OPT_CLASSLESS_ROUTES,
                len: whole,
            });
        }
        let mut dst = [0u8; 4];
        dst[..n].copy_from_slice(&rest[..n]);
        // Stray bits past the prefix would make the kernel refuse the route.
        let mask = u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0);
        let dst = Ipv4Addr::from(u32::from_be_bytes(dst) & mask);
        let router = Ipv4Addr::new(rest[n], rest[n + 1], rest[n + 2], rest[n + 3]);
        routes.push((dst, width, router));
        v = &rest[n + 4..];
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::Lease;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0xdead_beef;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A server reply as dnsmasq would build it.
    fn reply(kind: MessageType, options: Vec<(u8, Vec<u8>)>) -> Packet {
        let mut options = options;
        options.insert(0, (OPT_MESSAGE_TYPE, vec![kind as u8]));
        Packet {
            op: BOOTREPLY,
            xid: XID,
            secs: 0,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: ip("10.0.2.15"),
            siaddr: ip("10.0.2.4"),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: MAC,
            sname: Some("boot-server".into()),
            file: Some("pxelinux.0".into()),
            options,
        }
    }

    #[test]
    fn discover_layout_on_the_wire() {
        let b = Packet::discover(XID, 3, MAC, Some("node1")).encode();
        assert!(b.len() >= MIN_LEN);
        assert_eq!(&b[..4], &[1, 1, 6, 0], "op, htype, hlen, hops");
        assert_eq!(&b[4..8], &XID.to_be_bytes());
        assert_eq!(&b[8..10], &[0, 3], "secs");
        assert_eq!(&b[10..12], &[0x80, 0], "broadcast flag");
        assert_eq!(&b[12..28], &[0; 16], "no addresses yet");
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[34..236], &[0; 202][..], "chaddr padding, sname, file");
        assert_eq!(&b[236..240], &[99, 130, 83, 99], "magic cookie");
        let expected: Vec<u8> = [
            &[53, 1, 1][..],
            &[61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            &[55, 11, 1, 3, 6, 12, 15, 26, 17, 28, 51, 54, 121],
            &[57, 2, 0x05, 0xdc],
            &[12, 5, b'n', b'o', b'd', b'e', b'1'],
            &[255],
        ]
        .concat();
        assert_eq!(&b[240..240 + expected.len()], &expected[..]);
        assert!(b[240 + expected.len()..].iter().all(|&x| x == 0));
    }

    #[test]
    fn request_and_release_options() {
        let p = Packet::parse(
            &Packet::request(XID, 1, MAC, ip("10.0.2.15"), ip("10.0.2.2"), None).encode(),
        )
        .unwrap();
        assert_eq!(p.message_type(), Some(MessageType::Request));
        assert_eq!(p.option(OPT_REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert_eq!(p.option(OPT_SERVER_ID), Some(&[10, 0, 2, 2][..]));
        assert_eq!(p.option(OPT_PARAMETERS), Some(&REQUESTED_PARAMETERS[..]));
        assert_eq!(p.option(OPT_HOSTNAME), None, "no hostname given");
        assert_eq!((p.flags, p.ciaddr), (FLAG_BROADCAST, Ipv4Addr::UNSPECIFIED));

        let r = Packet::parse(&Packet::release(7, MAC, ip("10.0.2.15"), ip("10.0.2.2")).encode())
            .unwrap();
        assert_eq!(r.message_type(), Some(MessageType::Release));
        assert_eq!((r.flags, r.ciaddr), (0, ip("10.0.2.15")));
        assert_eq!(r.option(OPT_SERVER_ID), Some(&[10, 0, 2, 2][..]));
    }

    #[test]
    fn round_trip() {
        let mut p = Packet::request(XID, 9, MAC, ip("1.2.3.4"), ip("5.6.7.8"), Some("h"));
        p.sname = Some("srv".into());
        p.file = Some("boot/file".into());
        p.giaddr = ip("9.9.9.9");
        p.push(200, &[7; 300]); // split into two instances and joined again
        assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
    }

    #[test]
    fn decodes_every_option() {
        let p = reply(
            MessageType::Ack,
            vec![
                (OPT_SUBNET_MASK, vec![255, 255, 255, 0]),
                (OPT_ROUTER, vec![10, 0, 2, 2, 10, 0, 2, 3]),
                (OPT_DNS, vec![10, 0, 2, 3]),
                (OPT_HOSTNAME, b"client1\0".to_vec()),
                (OPT_DOMAIN, b"example.org".to_vec()),
                (OPT_MTU, vec![0x05, 0x78]),
                (OPT_ROOT_PATH, b"nbd:10.0.2.2:root:ext4".to_vec()),
                (OPT_BROADCAST, vec![10, 0, 2, 255]),
                (OPT_LEASE_TIME, vec![0, 0, 0x0e, 0x10]),
                (OPT_SERVER_ID, vec![10, 0, 2, 2]),
                (OPT_MESSAGE, b"hello".to_vec()),
                (
                    OPT_CLASSLESS_ROUTES,
                    vec![
                        0, 10, 0, 2, 1, // default via 10.0.2.1
                        24, 192, 168, 7, 0, 0, 0, 0, // 192.168.7.0/24 on-link
                        20, 172, 16, 255, 10, 0, 2, 9, // stray bits are masked off
                        32, 1, 2, 3, 4, 10, 0, 2, 8,
                    ],
                ),
                (99, vec![1, 2, 3]), // unknown: ignored
            ],
        );
        let r = Reply::decode(&p.encode(), XID, MAC).unwrap();
        assert_eq!(
            r,
            Reply {
                kind: MessageType::Ack,
                xid: XID,
                yiaddr: ip("10.0.2.15"),
                siaddr: ip("10.0.2.4"),
                sname: Some("boot-server".into()),
                file: Some("pxelinux.0".into()),
                subnet_mask: Some(ip("255.255.255.0")),
                routers: vec![ip("10.0.2.2"), ip("10.0.2.3")],
                dns: vec![ip("10.0.2.3")],
                hostname: Some("client1".into()),
                domain: Some("example.org".into()),
                mtu: Some(1400),
                root_path: Some("nbd:10.0.2.2:root:ext4".into()),
                broadcast: Some(ip("10.0.2.255")),
                lease_secs: Some(3600),
                server_id: Some(ip("10.0.2.2")),
                message: Some("hello".into()),
                classless_routes: vec![
                    (ip("0.0.0.0"), 0, ip("10.0.2.1")),
                    (ip("192.168.7.0"), 24, ip("0.0.0.0")),
                    (ip("172.16.240.0"), 20, ip("10.0.2.9")),
                    (ip("1.2.3.4"), 32, ip("10.0.2.8")),
                ],
            }
        );
    }

    #[test]
    fn replies_for_others_are_rejected() {
        let b = reply(MessageType::Offer, vec![]).encode();
        assert_eq!(
            Reply::decode(&b, XID ^ 1, MAC),
            Err(PacketError::OtherXid {
                got: XID,
                want: XID ^ 1
            })
        );
        let other = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            Reply::decode(&b, XID, other),
            Err(PacketError::OtherClient(MAC))
        );
        let req = Packet::discover(XID, 0, MAC, None).encode();
        assert_eq!(Reply::decode(&req, XID, MAC), Err(PacketError::NotReply(1)));
    }

    #[test]
    fn framing_errors() {
        let good = reply(MessageType::Offer, vec![]).encode();
        assert_eq!(Packet::parse(&good[..239]), Err(PacketError::TooShort(239)));
        let mut b = good.clone();
        b[1] = 6; // IEEE 802
        assert_eq!(
            Packet::parse(&b),
            Err(PacketError::Hardware { htype: 6, hlen: 6 })
        );
        let mut b = good.clone();
        b[239] = 0;
        assert_eq!(Packet::parse(&b), Err(PacketError::Cookie(0x6382_5300)));
        // BOOTP (no options at all) has no message type.
        let mut b = good[..240].to_vec();
        b.push(OPT_END);
        assert_eq!(Reply::decode(&b, XID, MAC), Err(PacketError::NoMessageType));
        let mut b = good;
        b[242] = 9;
        assert_eq!(
            Reply::decode(&b, XID, MAC),
            Err(PacketError::UnknownMessageType(9))
        );
    }

    #[test]
    fn truncated_options_are_errors() {
        // Option 3 says 8 bytes; only 5 follow before the packet ends.
        let mut b = reply(MessageType::Offer, vec![]).encode()[..243].to_vec();
        b.extend_from_slice(&[3, 8, 10, 0, 2, 2, 10]);
        assert_eq!(
            Packet::parse(&b),
            Err(PacketError::Truncated { code: 3, at: 243 })
        );
        // A code with no length byte at all.
        let mut b = reply(MessageType::Offer, vec![]).encode()[..243].to_vec();
        b.push(3);
        assert_eq!(
            Packet::parse(&b),
            Err(PacketError::Truncated { code: 3, at: 243 })
        );
        // No END: the options simply stop with the datagram.
        let b = reply(MessageType::Offer, vec![]).encode()[..243].to_vec();
        assert_eq!(
            Packet::parse(&b).unwrap().message_type(),
            Some(MessageType::Offer)
        );
    }

    #[test]
    fn bad_option_values_are_errors() {
        let cases: Vec<((u8, Vec<u8>), PacketError)> = vec![
            (
                (OPT_SUBNET_MASK, vec![255, 255, 0]),
                PacketError::Length { code: 1, len: 3 },
            ),
            (
                (OPT_ROUTER, vec![]),
                PacketError::Length { code: 3, len: 0 },
            ),
            (
                (OPT_DNS, vec![1, 2, 3, 4, 5]),
                PacketError::Length { code: 6, len: 5 },
            ),
            ((OPT_MTU, vec![5]), PacketError::Length { code: 26, len: 1 }),
            (
                (OPT_LEASE_TIME, vec![0; 8]),
                PacketError::Length { code: 51, len: 8 },
            ),
            (
                (OPT_SERVER_ID, vec![]),
                PacketError::Length { code: 54, len: 0 },
            ),
            (
                (OPT_ROOT_PATH, vec![b'a', 0xff]),
                PacketError::Text { code: 17 },
            ),
            (
                (OPT_CLASSLESS_ROUTES, vec![33, 0, 0, 0, 0, 1, 2, 3, 4]),
                PacketError::RouteWidth(33),
            ),
            (
                (OPT_CLASSLESS_ROUTES, vec![24, 10, 0, 0, 1, 2, 3]),
                PacketError::Length { code: 121, len: 7 },
            ),
            (
                (OPT_MESSAGE_TYPE, vec![2, 2]),
                PacketError::Length { code: 53, len: 2 },
            ),
        ];
        for ((code, value), want) in cases {
            let mut p = reply(MessageType::Offer, vec![]);
            match p.options.iter_mut().find(|(c, _)| *c == code) {
                Some(o) => o.1 = value.clone(),
                None => p.options.push((code, value.clone())),
            }
            assert_eq!(
                Reply::decode(&p.encode(), XID, MAC),
                Err(want),
                "{code} {value:?}"
            );
        }
    }

    #[test]
    fn overloaded_file_and_sname_carry_options() {
        let mut b = reply(MessageType::Ack, vec![(OPT_OVERLOAD, vec![3])]).encode();
        b[FILE..COOKIE].fill(0);
        b[SNAME..FILE].fill(0);
        // The root path in the file field, the router in sname; options there end with END.
        let root = b"nbd:srv:exp";
        b[FILE] = OPT_ROOT_PATH;
        b[FILE + 1] = root.len() as u8;
        b[FILE + 2..FILE + 2 + root.len()].copy_from_slice(root);
        b[FILE + 2 + root.len()] = OPT_END;
        b[SNAME..SNAME + 7].copy_from_slice(&[OPT_ROUTER, 4, 10, 0, 2, 2, OPT_END]);
        let r = Reply::decode(&b, XID, MAC).unwrap();
        assert_eq!(r.root_path.as_deref(), Some("nbd:srv:exp"));
        assert_eq!(r.routers, vec![ip("10.0.2.2")]);
        assert_eq!(
            (r.sname, r.file),
            (None, None),
            "they hold options, not names"
        );
        // An option running past the end of the file field is truncated, even though the
        // cookie follows.
        b[FILE + 1] = 127;
        assert_eq!(
            Packet::parse(&b),
            Err(PacketError::Truncated {
                code: OPT_ROOT_PATH,
                at: FILE
            })
        );
    }

    #[test]
    fn repeated_options_are_concatenated() {
        let mut b = reply(MessageType::Ack, vec![]).encode();
        let end = b.iter().rposition(|&x| x == OPT_END).unwrap();
        b.truncate(end);
        b.extend_from_slice(&[OPT_ROOT_PATH, 4, b'n', b'b', b'd', b':']);
        b.extend_from_slice(&[OPT_ROOT_PATH, 3, b's', b':', b'e', OPT_END]);
        let r = Reply::decode(&b, XID, MAC).unwrap();
        assert_eq!(r.root_path.as_deref(), Some("nbd:s:e"));
    }

    /// Found by the `dhcp_packet` fuzz target: option 52 sent in two instances was taken from
    /// the last one, so the same packet encoded again (in one instance) overloaded other
    /// fields, or none.
    #[test]
    fn overload_is_the_first_byte_of_the_whole_option() {
        let mut b = reply(MessageType::Ack, vec![]).encode();
        let end = b.iter().rposition(|&x| x == OPT_END).unwrap();
        b.truncate(end);
        // Together the value is [0, 3]: no overload, and sname and file keep their text.
        b.extend_from_slice(&[OPT_OVERLOAD, 1, 0, OPT_OVERLOAD, 1, 3, OPT_END]);
        let p = Packet::parse(&b).unwrap();
        assert_eq!(p.option(OPT_OVERLOAD), Some(&[0, 3][..]));
        assert_eq!(
            (p.sname.as_deref(), p.file.as_deref()),
            (Some("boot-server"), Some("pxelinux.0"))
        );
        assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
    }

    #[test]
    fn long_text_fields_are_cut_and_terminated() {
        let mut p = reply(MessageType::Offer, vec![]);
        p.sname = Some("s".repeat(100));
        let back = Packet::parse(&p.encode()).unwrap();
        assert_eq!(back.sname, Some("s".repeat(63)));
        assert_eq!(back.file.as_deref(), Some("pxelinux.0"));
    }

    /// Makes arbitrary bytes pass the framing checks that `hardware` and `cookie` name.
    fn framed(mut b: Vec<u8>, hardware: bool, cookie: bool) -> Vec<u8> {
        if hardware && b.len() > 2 {
            b[1..3].copy_from_slice(&[HTYPE_ETHER, HLEN_ETHER]);
        }
        if cookie && b.len() >= OPTIONS {
            b[COOKIE..OPTIONS].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        }
        b
    }

    /// A parse error names the first framing rule `buf` breaks; a packet that parses comes
    /// back the same from its encoding (when its name fields fit), and decodes the same.
    fn check_parse(buf: &[u8]) -> Result<(), TestCaseError> {
        let p = match Packet::parse(buf) {
            Err(PacketError::TooShort(n)) => {
                prop_assert!(n == buf.len() && n < OPTIONS);
                return Ok(());
            }
            Err(PacketError::Hardware { htype, hlen }) => {
                prop_assert!((htype, hlen) == (buf[1], buf[2]) && (htype, hlen) != (1, 6));
                return Ok(());
            }
            Err(PacketError::Cookie(c)) => {
                prop_assert!(c == be32(&buf[COOKIE..]) && c != MAGIC_COOKIE);
                return Ok(());
            }
            Err(PacketError::Truncated { code, at }) => {
                prop_assert!(buf[at] == code && code != OPT_PAD && code != OPT_END);
                return Ok(());
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "parse checks framing only: {e}"
                )))
            }
            Ok(p) => p,
        };
        prop_assert!(p
            .options
            .iter()
            .all(|(c, _)| *c != OPT_PAD && *c != OPT_END));
        let fits = |t: &Option<String>, width: usize| t.as_ref().is_none_or(|t| t.len() < width);
        if fits(&p.sname, FILE - SNAME) && fits(&p.file, COOKIE - FILE) {
            let wire = p.encode();
            prop_assert_eq!(&Packet::parse(&wire).unwrap(), &p);
            prop_assert_eq!(
                Reply::decode(&wire, p.xid, p.chaddr),
                Reply::decode(buf, p.xid, p.chaddr)
            );
        }
        Ok(())
    }

    /// A decoding error names an option whose value is malformed; a decoded reply holds the
    /// options' values.
    fn check_decode(buf: &[u8]) -> Result<(), TestCaseError> {
        let Ok(p) = Packet::parse(buf) else {
            return Ok(());
        };
        let raw = |code| p.option(code);
        match Reply::decode(buf, p.xid, p.chaddr) {
            Err(PacketError::NotReply(op)) => prop_assert!(op == p.op && op != BOOTREPLY),
            Err(PacketError::NoMessageType) => prop_assert_eq!(raw(OPT_MESSAGE_TYPE), None),
            Err(PacketError::UnknownMessageType(t)) => {
                prop_assert_eq!(raw(OPT_MESSAGE_TYPE), Some(&[t][..]));
                prop_assert_eq!(MessageType::from_u8(t), None);
            }
            Err(PacketError::Length { code, len }) => {
                prop_assert_eq!(raw(code).map(<[u8]>::len), Some(len))
            }
            Err(PacketError::Text { code }) => {
                prop_assert!(std::str::from_utf8(raw(code).unwrap()).is_err())
            }
            Err(PacketError::RouteWidth(w)) => {
                prop_assert!(w > 32 && raw(OPT_CLASSLESS_ROUTES).is_some_and(|v| v.contains(&w)))
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e} from its own xid and MAC"))),
            Ok(r) => {
                prop_assert_eq!(Some(r.kind), p.message_type());
                let text = |v: Option<&[u8]>| {
                    v.map(|v| {
                        String::from_utf8(v.to_vec())
                            .unwrap()
                            .trim_end_matches('\0')
                            .to_string()
                    })
                };
                prop_assert_eq!(r.root_path, text(raw(OPT_ROOT_PATH)));
                prop_assert_eq!(r.hostname, text(raw(OPT_HOSTNAME)));
                let addrs = |v: &[Ipv4Addr]| v.iter().flat_map(|a| a.octets()).collect::<Vec<_>>();
                prop_assert_eq!(addrs(&r.routers), raw(OPT_ROUTER).unwrap_or(&[]));
                prop_assert_eq!(addrs(&r.dns), raw(OPT_DNS).unwrap_or(&[]));
                prop_assert_eq!(
                    r.mtu.map(u16::to_be_bytes),
                    raw(OPT_MTU).map(|v| [v[0], v[1]])
                );
                for &(dst, width, _) in &r.classless_routes {
                    let mask = u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0);
                    prop_assert!(width <= 32 && u32::from(dst) & !mask == 0, "{dst}/{width}");
                }
            }
        }
        Ok(())
    }

    /// Well-framed options with the codes nbdroot reads, their values mostly well-formed.
    fn framed_options() -> impl Strategy<Value = Vec<u8>> {
        let codes = REQUESTED_PARAMETERS
            .iter()
            .copied()
            .chain([OPT_MESSAGE, 99]);
        let option = proptest::sample::select(codes.collect::<Vec<_>>()).prop_flat_map(|code| {
            fn bytes(n: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Vec<u8>> {
                proptest::collection::vec(any::<u8>(), n).boxed()
            }
            let good = match code {
                OPT_SUBNET_MASK | OPT_BROADCAST | OPT_SERVER_ID | OPT_LEASE_TIME => bytes(4..=4),
                OPT_ROUTER | OPT_DNS => (1..4usize).prop_flat_map(|n| bytes(4 * n..=4 * n)).boxed(),
                OPT_MTU => bytes(2..=2),
                OPT_CLASSLESS_ROUTES => (0u8..=32, bytes(8..=8))
                    .prop_map(|(w, b)| [&[w][..], &b[..usize::from(w.div_ceil(8)) + 4]].concat())
                    .boxed(),
                OPT_HOSTNAME | OPT_DOMAIN | OPT_ROOT_PATH | OPT_MESSAGE => {
                    "[ -~]{0,20}".prop_map(String::into_bytes).boxed()
                }
                _ => bytes(0..=11),
            };
            let value = prop_oneof![6 => good, 1 => bytes(0..=11)];
            value.prop_map(move |v| [&[code, v.len() as u8][..], &v].concat())
        });
        proptest::collection::vec(option, 0..8).prop_map(|o| o.concat())
    }

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    /// Text as servers send it: anything printable, long enough to need several instances.
    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("\\PC{0,100}")
    }

    prop_compose! {
        /// Any reply a server can send, with every option nbdroot reads.
        fn any_reply()(
            kind in proptest::sample::select((1..=8).filter_map(MessageType::from_u8).collect::<Vec<_>>()),
            (yiaddr, siaddr) in (addr(), addr()),
            sname in proptest::option::of("[a-z0-9.-]{1,63}"),
            file in proptest::option::of("[a-z0-9./]{1,127}"),
            (subnet_mask, broadcast, server_id) in (
                proptest::option::of(addr()),
                proptest::option::of(addr()),
                proptest::option::of(addr()),
            ),
            routers in proptest::collection::vec(addr(), 0..4),
            dns in proptest::collection::vec(addr(), 0..4),
            (hostname, domain, root_path, message) in (text(), text(), text(), text()),
            mtu: Option<u16>,
            lease_secs: Option<u32>,
            routes in proptest::collection::vec((addr(), 0u8..=32, addr()), 0..4),
        ) -> Reply {
            let classless_routes = routes
                .into_iter()
                .map(|(dst, width, gw)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0);
                    (Ipv4Addr::from(u32::from(dst) & mask), width, gw)
                })
                .collect();
            Reply {
                kind, xid: XID, yiaddr, siaddr, sname, file, subnet_mask, routers, dns, hostname,
                domain, mtu, root_path, broadcast, lease_secs, server_id, message, classless_routes,
            }
        }
    }

    /// The packet a server sends for `r`.
    fn encode_reply(r: &Reply) -> Vec<u8> {
        let mut options = vec![(OPT_MESSAGE_TYPE, vec![r.kind as u8])];
        let mut put = |code, value: Option<Vec<u8>>| options.extend(value.map(|v| (code, v)));
        let octets = |a: &[Ipv4Addr]| {
            (!a.is_empty()).then(|| a.iter().flat_map(|a| a.octets()).collect::<Vec<u8>>())
        };
        let text = |t: &Option<String>| t.as_ref().map(|t| t.as_bytes().to_vec());
        put(OPT_SUBNET_MASK, r.subnet_mask.map(|a| a.octets().to_vec()));
        put(OPT_ROUTER, octets(&r.routers));
        put(OPT_DNS, octets(&r.dns));
        put(OPT_HOSTNAME, text(&r.hostname));
        put(OPT_DOMAIN, text(&r.domain));
        put(OPT_ROOT_PATH, text(&r.root_path));
        put(OPT_MTU, r.mtu.map(|m| m.to_be_bytes().to_vec()));
        put(OPT_BROADCAST, r.broadcast.map(|a| a.octets().to_vec()));
        put(
            OPT_LEASE_TIME,
            r.lease_secs.map(|s| s.to_be_bytes().to_vec()),
        );
        put(OPT_SERVER_ID, r.server_id.map(|a| a.octets().to_vec()));
        put(OPT_MESSAGE, text(&r.message));
        let routes = r.classless_routes.iter().flat_map(|&(dst, width, gw)| {
            let significant = usize::from(width.div_ceil(8));
            [&[width][..], &dst.octets()[..significant], &gw.octets()].concat()
        });
        put(
            OPT_CLASSLESS_ROUTES,
            Some(routes.collect()).filter(|v: &Vec<u8>| !v.is_empty()),
        );
        Packet {
            op: BOOTREPLY,
            xid: r.xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: r.yiaddr,
            siaddr: r.siaddr,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: MAC,
            sname: r.sname.clone(),
            file: r.file.clone(),
            options,
        }
        .encode()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, let past the hardware and cookie checks at random.
        #[test]
        fn arbitrary_bytes_fail_framing_by_its_rules_or_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
            hardware: bool,
            cookie: bool,
        ) {
            let b = framed(bytes, hardware, cookie);
            check_parse(&b)?;
            check_decode(&b)?;
        }

        /// Arbitrary options after a valid header: the options scanner and every typed option.
        #[test]
        fn arbitrary_options_decode_to_their_values_or_name_the_bad_one(
            opts in prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), framed_options()],
            overload in 0u8..4,
            sname in prop_oneof![proptest::collection::vec(any::<u8>(), 64), Just(vec![0; 64])],
            file in prop_oneof![proptest::collection::vec(any::<u8>(), 128), Just(vec![0; 128])],
        ) {
            let mut b = reply(MessageType::Ack, vec![(OPT_OVERLOAD, vec![overload])]).encode();
            b[SNAME..FILE].copy_from_slice(&sname);
            b[FILE..COOKIE].copy_from_slice(&file);
            b.truncate(OPTIONS + 6); // message type and overload
            b.extend_from_slice(&opts);
            check_parse(&b)?;
            check_decode(&b)?;
        }

        /// What a server encodes, nbdroot decodes, whatever the values; and the lease keeps them.
        #[test]
        fn replies_decode_to_what_was_encoded(r in any_reply()) {
            prop_assert_eq!(Reply::decode(&encode_reply(&r), XID, MAC), Ok(r.clone()));
            match Lease::from_ack(&r) {
                Ok(lease) => {
                    prop_assert!(lease.prefix_len <= 32);
                    prop_assert_eq!(lease.netmask(), r.subnet_mask.unwrap_or(lease.netmask()));
                    prop_assert_eq!(lease.root_path, r.root_path.filter(|p| !p.is_empty()));
                }
                Err(mask) => {
                    prop_assert_eq!(Some(mask), r.subnet_mask);
                    let m = u32::from(mask);
                    prop_assert!(m.leading_ones() + m.trailing_zeros() < 32, "{mask} is a prefix");
                }
            }
        }

        #[test]
        fn encoded_requests_parse_back(xid: u32, secs: u16, mac: [u8; 6], a: u32, s: u32, host in "[a-z0-9-]{0,70}") {
            let p = Packet::request(xid, secs, mac, Ipv4Addr::from(a), Ipv4Addr::from(s), Some(&host));
            prop_assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
        }
    }
}
