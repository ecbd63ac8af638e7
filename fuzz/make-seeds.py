#!/usr/bin/env python3
"""Makes the seed corpus in fuzz/corpus/<target>/ (run it as root from anywhere; it rewrites
the seeds it makes and leaves other files, such as crash regressions, alone).

Where it can, a seed is a real one: NBD handshakes as nbdkit and qemu-nbd answer them on
127.0.0.1, a DHCP OFFER and ACK from dnsmasq across a veth pair between two network
namespaces made here, netlink replies from the running kernel, superblocks made by mkfs.* and
partition tables by sfdisk. The rest comes from the project's tests (command lines, root-paths,
scripted NBD servers) or is built to the kernel's layout where the kernel cannot be asked here
(the nbd family's replies, without the nbd module).

Needs: nbdkit, qemu-utils, dnsmasq, iproute2, e2fsprogs, dosfstools, xfsprogs, btrfs-progs,
util-linux, fdisk.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def seed(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- Command lines and root-paths, from the tests -------------------------------------------


def string_literals(path):
    text = open(path).read()
    return [bytes(m, "utf-8").decode("unicode_escape") for m in re.findall(r'"((?:[^"\\]|\\.)*)"', text)]


def cmdlines():
    lits = string_literals(os.path.join(ROOT, "src/cmdline/tests.rs"))
    keys = ("root=", "netroot=", "nbdroot=", "ip=", "rd.nbdroot", "BOOTIF=", "ifname=", "nameserver=")
    lines = sorted({l for l in lits if any(k in l for k in keys)})
    for i, line in enumerate(lines):
        seed("cmdline", f"tests-{i:02}", line)
    # A whole line as a bootloader passes it, with quotes and init's arguments after --.
    seed(
        "cmdline",
        "grub",
        'BOOT_IMAGE=/vmlinuz-6.1.0-13-amd64 root=nbd:10.0.2.2:root:ext4:errors=remount-ro:conns=2,timeout=30 '
        'ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off rd.nbdroot.onfail=retry '
        'rootflags="noatime,nodiratime" quiet -- single\n',
    )


def root_paths():
    lits = string_literals(os.path.join(ROOT, "src/cmdline/root.rs"))
    lits += string_literals(os.path.join(ROOT, "src/boot/source.rs"))
    paths = sorted({l for l in lits if l.startswith("nbd:") or re.match(r"^[\w.\[\]:]*[,/]", l) or l == "dhcp"})
    for i, p in enumerate(paths):
        seed("root_path", f"tests-{i:02}", p)


# --- NBD: real servers on 127.0.0.1 -------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x0003E889045565A9
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK = 1
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A client connection that keeps every byte the server sends."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.got = b""
        self.pos = 0  # where the next option reply starts

    def read(self, n):
        while len(self.got) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.got += chunk

    def option(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def replies(self):
        """Reads option replies up to the ACK or an error; returns the last type."""
        while True:
            at = self.pos
            self.read(at + 20)
            _, _, ty, length = struct.unpack(">QIII", self.got[at : at + 20])
            self.read(at + 20 + length)
            self.pos = at + 20 + length
            if ty == REP_ACK or ty & 0x80000000:
                return ty

    def rest(self):
        """Whatever the server still sends before it closes."""
        try:
            while chunk := self.s.recv(65536):
                self.got += chunk
        except (socket.timeout, ConnectionError):
            pass
        self.s.close()
        return self.got


def info_request(export, infos):
    e = export.encode()
    return struct.pack(">I", len(e)) + e + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def newstyle(port, actions):
    c = Recorder(port)
    c.read(18)
    c.pos = 18
    hflags = struct.unpack(">H", c.got[16:18])[0]
    c.s.sendall(struct.pack(">I", hflags & 3))
    actions(c, hflags)
    c.s.settimeout(1)
    return c.rest()


def go(export):
    def actions(c, hflags):
        c.option(OPT_GO, info_request(export, [INFO_BLOCK_SIZE]))
        if c.replies() == REP_ACK:
            c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 1, 0, 0))  # NBD_CMD_DISC
        else:
            c.option(OPT_ABORT)

    return actions


def list_exports(c, hflags):
    c.option(OPT_LIST)
    c.replies()
    c.option(OPT_ABORT)


def info(export):
    def actions(c, hflags):
        c.option(OPT_INFO, info_request(export, [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]))
        c.replies()
        c.option(OPT_ABORT)

    return actions


def export_name(export):
    def actions(c, hflags):
        c.option(OPT_EXPORT_NAME, export.encode())
        c.read(18 + 10 + (0 if hflags & 2 else 124))

    return actions


def serve(argv):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def nbd_transcripts():
    tmp = tempfile.mkdtemp()
    img = os.path.join(tmp, "disk")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    try:
        port = free_port()
        # nbdkit: fixed newstyle, and the same with the handshake flags masked off.
        p = serve(["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), "memory", "1M"])
        try:
            seed("nbd_handshake", "nbdkit-go", newstyle(port, go("root")))
            seed("nbd_handshake", "nbdkit-list", newstyle(port, list_exports))
            seed("nbd_handshake", "nbdkit-info", newstyle(port, info("root")))
        finally:
            p.terminate()
            p.wait()
        port = free_port()
        p = serve(["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), "--mask-handshake=0", "memory", "1M"])
        try:
            seed("nbd_handshake", "nbdkit-newstyle-export-name", newstyle(port, export_name("root")))
        finally:
            p.terminate()
            p.wait()
        port = free_port()
        p = serve(["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), "--oldstyle", "memory", "1M"])
        try:
            c = Recorder(port)
            c.read(152)
            c.s.settimeout(1)
            seed("nbd_handshake", "nbdkit-oldstyle", c.rest())
        finally:
            p.terminate()
            p.wait()
        # qemu-nbd: block sizes in NBD_INFO_BLOCK_SIZE, and an unknown export.
        port = free_port()
        p = serve(["qemu-nbd", "-t", "-b", "127.0.0.1", "-p", str(port), "-x", "root", "-f", "raw", img])
        try:
            seed("nbd_handshake", "qemu-nbd-go", newstyle(port, go("root")))
            seed("nbd_handshake", "qemu-nbd-info", newstyle(port, info("root")))
            seed("nbd_handshake", "qemu-nbd-list", newstyle(port, list_exports))
            seed("nbd_handshake", "qemu-nbd-go-unknown", newstyle(port, go("nope")))
        finally:
            p.terminate()
            p.wait()
    finally:
        shutil.rmtree(tmp)


# --- DHCP: dnsmasq across a veth pair between two namespaces made here -----------------------


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def dhcp_exchange():
    mac = bytes.fromhex("020000770001")
    srv, cli = "seedsrv", "seedcli"
    sh("ip", "netns", "add", srv)
    sh("ip", "netns", "add", cli)
    dnsmasq = None
    try:
        sh("ip", "link", "add", "sd0", "netns", srv, "type", "veth", "peer", "name", "cd0", "netns", cli)
        sh("ip", "-n", cli, "link", "set", "cd0", "address", "02:00:00:77:00:01")
        sh("ip", "-n", srv, "addr", "add", "10.77.0.1/24", "dev", "sd0")
        for ns, dev in ((srv, "sd0"), (cli, "cd0"), (cli, "lo")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", srv, "dnsmasq", "-k", "--no-resolv", "--no-hosts", "--port=0",
             "--interface=sd0", "--bind-interfaces", "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h",
             "--dhcp-option=option:router,10.77.0.1", "--dhcp-option=option:dns-server,10.77.0.1",
             "--dhcp-option=option:domain-name,example.org", "--dhcp-option=option:root-path,nbd:10.77.0.1:root:ext4",
             "--dhcp-option=option:classless-static-route,192.168.7.0/24,10.77.0.9,0.0.0.0/0,10.77.0.1",
             "--dhcp-authoritative", "--dhcp-leasefile=/dev/null", "--pid-file="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        out = subprocess.run(
            ["ip", "netns", "exec", cli, sys.executable, __file__, "--dhcp-client", mac.hex()],
            check=True, capture_output=True).stdout
        offer, ack = out.split(b"\n", 1)
        seed("dhcp_packet", "dnsmasq-offer", bytes.fromhex(offer.decode()))
        seed("dhcp_packet", "dnsmasq-ack", bytes.fromhex(ack.decode().strip()))
    finally:
        if dnsmasq:
            dnsmasq.terminate()
            dnsmasq.wait()
        subprocess.run(["ip", "netns", "del", srv])
        subprocess.run(["ip", "netns", "del", cli])


def dhcp_packet(kind, xid, mac, extra=b""):
    p = struct.pack(">BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + bytes(16) + mac + bytes(10) + bytes(192)
    p += struct.pack(">I", 0x63825363) + bytes([53, 1, kind, 61, 7, 1]) + mac
    p += bytes([55, 5, 1, 3, 6, 17, 121]) + extra + b"\xff"
    return p.ljust(300, b"\0")


def dhcp_client(mac_hex):
    """Runs in the client namespace: DISCOVER, OFFER, REQUEST, ACK; prints both answers."""
    mac = bytes.fromhex(mac_hex)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"cd0")
    s.bind(("0.0.0.0", 68))
    s.settimeout(5)
    xid = 0x5EED0001

    def answer(kind):
        while True:
            data, _ = s.recvfrom(4096)
            opts = data[240:]
            if data[4:8] == struct.pack(">I", xid) and bytes([53, 1, kind]) in opts:
                return data

    s.sendto(dhcp_packet(1, xid, mac), ("255.255.255.255", 67))
    offer = answer(2)
    server = offer[offer.index(bytes([54, 4]), 240) + 2 :][:4]
    request = bytes([50, 4]) + offer[16:20] + bytes([54, 4]) + server
    s.sendto(dhcp_packet(3, xid, mac, request), ("255.255.255.255", 67))
    ack = answer(5)
    print(offer.hex())
    print(ack.hex())


# --- Netlink: the running kernel, and the nbd family's layout ------------------------------


NETLINK_ROUTE, NETLINK_GENERIC = 0, 16


def nla(ty, payload):
    n = struct.pack("=HH", 4 + len(payload), ty) + payload
    return n + bytes(-len(n) % 4)


def nlmsg(ty, flags, seq, payload):
    return struct.pack("=IHHII", 16 + len(payload), ty, flags, seq, 0) + payload


def kernel_reply(proto, msg):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    s.settimeout(2)
    s.send(msg)
    out = b""
    while True:
        data = s.recv(65536)
        out += data
        if len(data) < 16 or struct.unpack("=H", data[4:6])[0] in (2, 3) or not struct.unpack("=H", data[6:8])[0] & 2:
            return out


def netlink():
    # CTRL_CMD_GETFAMILY "nlctrl": the family lookup's answer, with a multicast group.
    ask = nlmsg(0x10, 1, 1, bytes([3, 1, 0, 0]) + nla(2, b"nlctrl\0"))
    seed("netlink", "kernel-getfamily-nlctrl", kernel_reply(NETLINK_GENERIC, ask))
    # An unknown family: NLMSG_ERROR with -ENOENT.
    ask = nlmsg(0x10, 1 | 4, 2, bytes([3, 1, 0, 0]) + nla(2, b"nbd\0"))
    seed("netlink", "kernel-getfamily-unknown", kernel_reply(NETLINK_GENERIC, ask))
    # RTM_GETLINK for lo (index 1): a reply with many attributes, then an ACK-less end.
    ask = nlmsg(18, 1, 3, struct.pack("=BxHiII", 0, 0, 1, 0, 0))
    seed("netlink", "kernel-getlink-lo", kernel_reply(NETLINK_ROUTE, ask))
    # An ACK: RTM_NEWLINK setting lo up (it is up already), with NLM_F_ACK.
    ask = nlmsg(16, 1 | 4, 4, struct.pack("=BxHiII", 0, 0, 1, 1, 1))
    seed("netlink", "kernel-ack", kernel_reply(NETLINK_ROUTE, ask))
    # The nbd family (linux/nbd-netlink.h): CONNECT's reply naming the device, STATUS's device
    # list, a LINK_DEAD event, with the family id the lookup would give.
    fam = 0x1B
    genl = lambda cmd: bytes([cmd, 1, 0, 0])
    seed("netlink", "nbd-connect-reply", nlmsg(fam, 0, 5, genl(1) + nla(1, struct.pack("=I", 3))))
    devices = nla(9 | 0x8000, nla(1 | 0x8000, nla(1, struct.pack("=I", 0)) + nla(2, b"\1"))
                  + nla(1 | 0x8000, nla(1, struct.pack("=I", 3)) + nla(2, b"\0")))
    seed("netlink", "nbd-status-reply", nlmsg(fam, 0, 6, genl(5) + devices))
    seed("netlink", "nbd-link-dead", nlmsg(fam, 0, 0, genl(4) + nla(1, struct.pack("=I", 3))))


# --- Superblocks and partition tables --------------------------------------------------------

LOW, HIGH = 16 << 10, 60 << 10  # as in fuzz_targets/blkid.rs


def fold(head, keep_low, high=0):
    """The blkid target's input for a device head: `keep_low` bytes from 0 and, with `high`,
    that many bytes from 60 KiB (the low part then padded to 16 KiB)."""
    if not high:
        return head[:keep_low]
    return head[:LOW] + head[HIGH : HIGH + high]


def blkid():
    tmp = tempfile.mkdtemp()
    try:
        def image(name, mib, argv):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.truncate(mib << 20)
            sh(*argv, path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(path, "rb") as f:
                return f.read(128 << 10)

        seed("blkid", "ext2", fold(image("ext2", 8, ["mkfs.ext2", "-q", "-L", "bootfs"]), 2048))
        seed("blkid", "ext3", fold(image("ext3", 8, ["mkfs.ext3", "-q", "-L", "old root"]), 2048))
        seed("blkid", "ext4", fold(image("ext4", 8, ["mkfs.ext4", "-q", "-L", "nbdroot"]), 2048))
        seed("blkid", "xfs", fold(image("xfs", 300, ["mkfs.xfs", "-q", "-L", "xroot"]), 512))
        seed("blkid", "vfat16", fold(image("fat16", 34, ["mkfs.vfat", "-n", "EFI"]), 512))
        seed("blkid", "vfat32", fold(image("fat32", 64, ["mkfs.vfat", "-F", "32", "-n", "ESP32"]), 512))
        seed("blkid", "swap", fold(image("swap", 8, ["mkswap", "-q", "-L", "swap0"]), 4096))
        # btrfs: the superblock at 64 KiB, label at 0x12b of it, 256 bytes.
        seed("blkid", "btrfs", fold(image("btrfs", 128, ["mkfs.btrfs", "-q", "-L", "broot"]), LOW, (4 << 10) + 0x22B))
        for label in ("gpt", "dos"):
            path = os.path.join(tmp, label)
            with open(path, "wb") as f:
                f.truncate(8 << 20)
            sh("sfdisk", "-q", path, input=f"label: {label}\n,2M\n,2M\n".encode())
            with open(path, "rb") as f:
                seed("blkid", f"parts-{label}", f.read(2048))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--dhcp-client"]:
        dhcp_client(sys.argv[2])
        sys.exit(0)
    cmdlines()
    root_paths()
    nbd_transcripts()
    dhcp_exchange()
    netlink()
    blkid()
