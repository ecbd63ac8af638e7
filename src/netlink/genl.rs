//! Generic netlink: looking up a family by name, and the `genlmsghdr` every request carries.

use super::message::{self, MessageBuilder, NLM_F_REQUEST};
use super::socket::{NetlinkError, NetlinkSocket};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// A resolved generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: u16,
    /// Multicast groups: (name, id).
    pub groups: Vec<(String, u32)>,
}

/// Starts a generic netlink request for `family`.
pub fn request(family: u16, cmd: u8, version: u8, flags: u16) -> MessageBuilder {
    MessageBuilder::new(family, NLM_F_REQUEST | flags).header(&[cmd, version, 0, 0])
}

/// The payload of a generic netlink reply without its `genlmsghdr`.
pub fn payload(reply: &[u8]) -> &[u8] {
    reply.get(4..).unwrap_or(&[])
}

/// Looks up `name`. `Ok(None)` when the kernel does not know it (module not loaded).
pub fn resolve(sock: &mut NetlinkSocket, name: &str) -> Result<Option<Family>, NetlinkError> {
    let msg = request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, 0).attr_str(CTRL_ATTR_FAMILY_NAME, name);
    let replies = match sock.request(msg) {
        Ok(r) => r,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(replies.iter().find_map(|(_, r)| parse_family(payload(r))))
}

/// The family a CTRL_CMD_GETFAMILY reply describes (its attributes, after `genlmsghdr`);
/// `None` without a family id. Public for the fuzz targets: the kernel's answer is input.
pub fn parse_family(attrs: &[u8]) -> Option<Family> {
    let mut id = None;
    let mut groups = Vec::new();
    for (ty, p) in message::attrs(attrs) {
        match ty {
            CTRL_ATTR_FAMILY_ID => id = message::as_u16(p),
            CTRL_ATTR_MCAST_GROUPS => {
                for (_, group) in message::attrs(p) {
                    let mut name = None;
                    let mut gid = None;
                    for (t, v) in message::attrs(group) {
                        match t {
                            CTRL_ATTR_MCAST_GRP_NAME => {
                                name = message::as_str(v).map(str::to_string)
                            }
                            CTRL_ATTR_MCAST_GRP_ID => gid = message::as_u32(v),
                            _ => {}
                        }
                    }
                    if let (Some(n), Some(g)) = (name, gid) {
                        groups.push((n, g));
                    }
                }
            }
            _ => {}
        }
    }
    Some(Family { id: id?, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_family_reply() {
        let reply = request(GENL_ID_CTRL, 1, 2, 0)
            .attr_str(CTRL_ATTR_FAMILY_NAME, "nbd")
            .attr_u16(CTRL_ATTR_FAMILY_ID, 0x1b)
            .begin_nested(CTRL_ATTR_MCAST_GROUPS)
            .begin_nested(1)
            .attr_u32(CTRL_ATTR_MCAST_GRP_ID, 9)
            .attr_str(CTRL_ATTR_MCAST_GRP_NAME, "nbd_mc_group")
            .end_nested()
            .end_nested()
            .finish(1);
        let m = message::messages(&reply).next().unwrap();
        let family = parse_family(payload(m.payload)).unwrap();
        assert_eq!(
            family,
            Family {
                id: 0x1b,
                groups: vec![("nbd_mc_group".into(), 9)]
            }
        );
    }
}
