//! Netlink replies, as the kernel (or whatever holds the other end) sends them: one datagram,
//! split into messages and attributes by `netlink::message`, gathered into the answer to a
//! request by `message::absorb` (as `NetlinkSocket::request` does), the generic netlink family
//! lookup (`genl::parse_family`) and the nbd family's answers (`kernel::netlink`: the device
//! index CONNECT names, STATUS's device list, LINK_DEAD events).
//!
//! Beyond "no panic": messages and attributes lie where their headers say and read back the
//! same when built again with `MessageBuilder`; a parsed family reads back from its encoding;
//! whatever the nbd parsers report is in the messages.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nbdroot::kernel::netlink::{connected_index, dead_links, device_status};
use nbdroot::netlink::genl::{self, Family};
use nbdroot::netlink::message::{
    self, Answer, Message, MessageBuilder, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_MULTI,
};

/// Kernel ABI numbers (linux/genetlink.h, linux/nbd-netlink.h).
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
const NBD_ATTR_INDEX: u16 = 1;
const NBD_CMD_LINK_DEAD: u8 = 4;

fuzz_target!(|data: &[u8]| {
    let msgs: Vec<Message> = message::messages(data).collect();
    let mut at = 0;
    for m in &msgs {
        // Each message starts where the one before ended, aligned, and its payload is there.
        let len = NLMSG_HDRLEN + m.payload.len();
        assert_eq!(&data[at + NLMSG_HDRLEN..at + len], m.payload);
        assert_eq!(
            u32::from_ne_bytes(data[at..at + 4].try_into().unwrap()) as usize,
            len
        );
        at = (at + len.next_multiple_of(4)).min(data.len());

        let rebuilt = MessageBuilder::new(m.ty, m.flags)
            .header(m.payload)
            .finish(m.seq);
        let back: Vec<Message> = message::messages(&rebuilt).collect();
        assert_eq!(back.len(), 1);
        let b = back[0];
        assert_eq!((b.ty, b.flags, b.seq), (m.ty, m.flags, m.seq));
        let (payload, padding) = b.payload.split_at(m.payload.len());
        assert!(payload == m.payload && padding.len() < 4 && padding.iter().all(|&p| p == 0));

        assert_eq!(
            m.error_code().is_some(),
            m.ty == NLMSG_ERROR && m.payload.len() >= 4
        );
        // After no family header, generic netlink's (4 bytes), and ifinfomsg (16).
        for header in [0, 4, 16] {
            check_attrs(m.payload.get(header..).unwrap_or(&[]));
        }
        if let Some(family) = genl::parse_family(genl::payload(m.payload)) {
            check_family(&family);
        }
    }

    check_answer(data, &msgs);

    let replies: Vec<(u16, Vec<u8>)> = msgs.iter().map(|m| (m.ty, m.payload.to_vec())).collect();
    let index_attrs = |p: &[u8]| -> Vec<u32> {
        message::attrs(genl::payload(p))
            .filter(|(t, _)| *t == NBD_ATTR_INDEX)
            .filter_map(|(_, v)| message::as_u32(v))
            .collect()
    };
    let index = connected_index(&replies);
    if let Some(i) = index {
        assert!(replies.iter().any(|(_, p)| index_attrs(p).contains(&i)));
    }
    for i in index.into_iter().chain([0, 1]) {
        let _ = device_status(&replies, i);
    }
    let family = msgs.first().map_or(GENL_ID_CTRL, |m| m.ty);
    let dead = dead_links(&replies, family);
    let events: Vec<&(u16, Vec<u8>)> = replies
        .iter()
        .filter(|(ty, p)| *ty == family && p.first() == Some(&NBD_CMD_LINK_DEAD))
        .collect();
    assert!(dead.len() <= events.len());
    for i in dead {
        assert!(events.iter().any(|(_, p)| index_attrs(p).contains(&i)));
    }
});

/// The answer to the request the first message answers: the replies are that request's
/// messages, in order, up to an acknowledgement, an error or NLMSG_DONE, which end it.
fn check_answer(data: &[u8], msgs: &[Message]) {
    let seq = msgs.first().map_or(0, |m| m.seq);
    let mut replies = Vec::new();
    let answer = message::absorb(data, seq, &mut replies);
    let ours: Vec<&Message> = msgs.iter().filter(|m| m.seq == seq).collect();
    for (reply, m) in replies.iter().zip(&ours) {
        assert_eq!((reply.0, reply.1.as_slice()), (m.ty, m.payload));
        assert!(m.error_code().is_none() && m.ty != NLMSG_DONE);
    }
    assert!(replies.len() <= ours.len());
    let end = ours.get(replies.len());
    match answer {
        Answer::Error(errno) => {
            let code = end.and_then(|m| m.error_code()).expect("an error message");
            assert!(code != 0 && code.wrapping_neg() == errno);
        }
        Answer::Done => assert!(
            end.is_some_and(|m| m.ty == NLMSG_DONE || m.error_code() == Some(0))
                || (!replies.is_empty() && replies.len() == ours.len())
        ),
        Answer::More => {
            assert_eq!(replies.len(), ours.len());
            assert!(replies.is_empty() || ours.iter().any(|m| m.flags & NLM_F_MULTI != 0));
        }
    }
}

/// Attributes lie within `buf`, and read back the same once built again.
fn check_attrs(buf: &[u8]) {
    let attrs: Vec<(u16, &[u8])> = message::attrs(buf).collect();
    let mut b = MessageBuilder::new(0, 0);
    for &(ty, payload) in &attrs {
        assert!(ty < 1 << 14, "flag bits are masked off: {ty:#x}");
        b = b.attr(ty, payload);
    }
    let rebuilt = b.finish(0);
    let m = message::messages(&rebuilt).next().expect("one message");
    assert_eq!(message::attrs(m.payload).collect::<Vec<_>>(), attrs);
}

/// A family reads back from its encoding (when the group list fits one attribute).
fn check_family(f: &Family) {
    let groups: usize = f
        .groups
        .iter()
        .map(|(name, _)| 4 + 8 + (4 + name.len() + 1).next_multiple_of(4))
        .sum();
    if 4 + groups > usize::from(u16::MAX) {
        return;
    }
    let mut b = genl::request(GENL_ID_CTRL, 1, 2, 0)
        .attr_u16(CTRL_ATTR_FAMILY_ID, f.id)
        .begin_nested(CTRL_ATTR_MCAST_GROUPS);
    for (i, (name, id)) in f.groups.iter().enumerate() {
        assert!(!name.contains('\0'));
        b = b
            .begin_nested(i as u16 + 1)
            .attr_u32(CTRL_ATTR_MCAST_GRP_ID, *id)
            .attr_str(CTRL_ATTR_MCAST_GRP_NAME, name)
            .end_nested();
    }
    let msg = b.end_nested().finish(1);
    let m = message::messages(&msg).next().expect("one message");
    assert_eq!(
        genl::parse_family(genl::payload(m.payload)).as_ref(),
        Some(f)
    );
}
