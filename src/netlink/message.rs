//! Netlink message encoding and decoding (pure): `nlmsghdr`, a fixed family header, and
//! type-length-value attributes, all 4-byte aligned and in host byte order.
//!
//! nbdroot sends a handful of message kinds (link up, address, route, generic-netlink family
//! lookup, nbd CONNECT); this small codec covers them without a general netlink library.

pub const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Builds one netlink message.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MessageBuilder {
    /// Starts a message; the sequence number and port are filled in when it is sent.
    pub fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends a family header (`ifinfomsg`, `genlmsghdr`, …), padded to alignment.
    pub fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    pub fn attr(mut self, ty: u16, payload: &[u8]) -> Self {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    pub fn attr_u8(self, ty: u16, v: u8) -> Self {
        self.attr(ty, &[v])
    }
    pub fn attr_u16(self, ty: u16, v: u16) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }
    pub fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }
    pub fn attr_u64(self, ty: u16, v: u64) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }
    /// A NUL-terminated string attribute.
    pub fn attr_str(self, ty: u16, s: &str) -> Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    /// Opens a nested attribute; close it with [`Self::end_nested`].
    pub fn begin_nested(mut self, ty: u16) -> Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nested(mut self) -> Self {
        let start = self.nests.pop().expect("end_nested without begin_nested");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished message with the given sequence number.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One received message: its header fields and payload (after `nlmsghdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// For NLMSG_ERROR: the (negative) errno; 0 is an acknowledgement.
    pub fn error_code(&self) -> Option<i32> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        self.payload
            .get(..4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
    }
}

/// Iterates the messages in one datagram. Stops at the first truncated one.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Message {
            ty: u16::from_ne_bytes(buf[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(buf[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align(len).min(buf.len())..];
        Some(msg)
    })
}

/// Where the answer to a request stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// More datagrams are to come.
    More,
    /// Complete: an acknowledgement, NLMSG_DONE, or a single reply.
    Done,
    /// The kernel refused the request with this errno.
    Error(i32),
}

/// Adds to `replies` the messages of one datagram that answer request `seq` (type and
/// payload), and says whether the answer is complete.
pub fn absorb(datagram: &[u8], seq: u32, replies: &mut Vec<(u16, Vec<u8>)>) -> Answer {
    let mut more = false;
    for m in messages(datagram) {
        if m.seq != seq {
            continue; // a stale answer to an earlier request
        }
        match m.error_code() {
            Some(0) => return Answer::Done,
            // Errors come negated; wrapping, as the value is the sender's word.
            Some(code) => return Answer::Error(code.wrapping_neg()),
            None if m.ty == NLMSG_DONE => return Answer::Done,
            None => {}
        }
        more |= m.flags & NLM_F_MULTI != 0;
        replies.push((m.ty, m.payload.to_vec()));
    }
    // A single reply without ACK request ends here; multipart ones end with DONE.
    if !replies.is_empty() && !more {
        Answer::Done
    } else {
        Answer::More
    }
}

/// Iterates `(type, payload)` attributes. Stops at the first truncated one.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes(buf[0..2].try_into().unwrap()) as usize;
        if len < NLA_HDRLEN || len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes(buf[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        let payload = &buf[NLA_HDRLEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((ty, payload))
    })
}

/// Reads a u16/u32 attribute payload.
pub fn as_u16(p: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(p.get(..2)?.try_into().ok()?))
}
pub fn as_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}
/// Reads a NUL-terminated string attribute.
pub fn as_str(p: &[u8]) -> Option<&str> {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    std::str::from_utf8(&p[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_nesting() {
        let msg = MessageBuilder::new(0x1a, NLM_F_REQUEST | NLM_F_ACK)
            .header(&[1, 1, 0]) // padded to 4
            .attr_u64(2, 1 << 40)
            .begin_nested(7)
            .begin_nested(1)
            .attr_u32(1, 5)
            .end_nested()
            .end_nested()
            .attr_str(10, "root")
            .finish(42);
        assert_eq!(msg.len() % 4, 0);
        let parsed: Vec<_> = messages(&msg).collect();
        assert_eq!(parsed.len(), 1);
        let m = parsed[0];
        assert_eq!(
            (m.ty, m.flags, m.seq),
            (0x1a, NLM_F_REQUEST | NLM_F_ACK, 42)
        );
        assert_eq!(&m.payload[..4], &[1, 1, 0, 0]);
        let a: Vec<_> = attrs(&m.payload[4..]).collect();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].0, 2);
        assert_eq!(u64::from_ne_bytes(a[0].1.try_into().unwrap()), 1 << 40);
        assert_eq!(a[1].0, 7, "nested flag is masked off");
        let (ty, item) = attrs(a[1].1).next().unwrap();
        assert_eq!(ty, 1);
        assert_eq!(
            attrs(item).next().map(|(t, p)| (t, as_u32(p))),
            Some((1, Some(5)))
        );
        assert_eq!((a[2].0, as_str(a[2].1)), (10, Some("root")));
    }

    #[test]
    fn absorb_collects_the_answer_to_one_request() {
        let reply = |ty, flags, seq| MessageBuilder::new(ty, flags).attr_u32(1, 7).finish(seq);
        // A stale answer is skipped; a single reply is the whole answer.
        let mut replies = Vec::new();
        let datagram = [reply(16, 0, 4), reply(16, 0, 5)].concat();
        assert_eq!(absorb(&datagram, 5, &mut replies), Answer::Done);
        assert_eq!(replies.len(), 1);
        // A multipart answer goes on until NLMSG_DONE.
        let mut replies = Vec::new();
        let part = reply(16, NLM_F_MULTI, 5);
        assert_eq!(absorb(&part, 5, &mut replies), Answer::More);
        let done = reply(NLMSG_DONE, NLM_F_MULTI, 5);
        assert_eq!(absorb(&done, 5, &mut replies), Answer::Done);
        assert_eq!(replies.len(), 1);
        // An acknowledgement, and errors negated back to errnos, whatever their value: -x of
        // i32::MIN overflowed (a panic in debug builds) before the negation wrapped.
        let error = |code: i32| {
            MessageBuilder::new(NLMSG_ERROR, 0)
                .header(&code.to_ne_bytes())
                .finish(5)
        };
        assert_eq!(absorb(&error(0), 5, &mut Vec::new()), Answer::Done);
        assert_eq!(absorb(&error(-19), 5, &mut Vec::new()), Answer::Error(19));
        assert_eq!(
            absorb(&error(i32::MIN), 5, &mut Vec::new()),
            Answer::Error(i32::MIN)
        );
    }

    #[test]
    fn truncated_input_ends_iteration() {
        let msg = MessageBuilder::new(2, 0).attr_u32(1, 0).finish(1);
        for cut in 0..msg.len() {
            assert_eq!(messages(&msg[..cut]).count(), 0);
        }
        assert_eq!(attrs(&[8, 0, 1, 0, 0]).count(), 0);
        let err = MessageBuilder::new(NLMSG_ERROR, 0)
            .header(&(-19i32).to_ne_bytes())
            .finish(1);
        assert_eq!(messages(&err).next().unwrap().error_code(), Some(-19));
    }
}
