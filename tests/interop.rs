//! The protocol code against real NBD servers on this host: nbdkit, qemu-nbd and nbd-server,
//! each started by its test on 127.0.0.1 and killed when the test ends (even on panic).
//! Writes are checked in the backing file on disk, not just read back through NBD.
//!
//! Test names read as a matrix: `<server>_<feature>_<outcome>`.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nbdroot::proto::consts::*;
use nbdroot::proto::{
    self, Client, Command as Cmd, Errno, ExportEntry, HandshakeError, RepError, Style,
    TransmissionError,
};

mod common;
use common::*;

/// Deterministic, position-dependent bytes, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn on_disk(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let data = fs::read(path).unwrap();
    data[offset as usize..offset as usize + len].to_vec()
}

/// Disk space actually allocated to the file, in 512-byte units.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks()
}

/// Writes (with FUA if asked), reads back, and checks the bytes in `file` at the same place.
fn round_trip(c: &mut Client<TcpStream>, file: Option<&Path>, offset: u64, len: usize, fua: bool) {
    let data = pattern(len, offset as u8 ^ len as u8);
    c.write(offset, &data, fua)
        .unwrap_or_else(|e| panic!("write (fua {fua}): {e}"));
    if c.export().flags & TFLAG_SEND_FLUSH != 0 {
        c.flush().unwrap();
    }
    let mut back = vec![0u8; len];
    c.read(offset, &mut back).unwrap();
    assert!(back == data, "read back differs at offset {offset}");
    if let Some(file) = file {
        assert!(
            on_disk(file, offset, len) == data,
            "backing file differs at offset {offset}"
        );
    }
}

/// Disconnects and checks the server then closes its side.
fn disconnect(c: Client<TcpStream>) {
    let mut s = c.disconnect().unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "server sent {n} bytes after NBD_CMD_DISC");
}

// ---------------------------------------------------------------------------------------------
// nbdkit

#[test]
fn nbdkit_memory_default_export_round_trips() {
    let scratch = Scratch::new("nbdkit-memory");
    let server = nbdkit(&scratch, &["memory", "4M"]);
    let mut c = server.client("");
    let e = c.export().clone();
    assert_eq!(e.size, 4 * MIB);
    assert_eq!(e.style, Style::FixedNewstyle);
    assert!(!e.read_only());
    round_trip(&mut c, None, 0, 4096, true);
    round_trip(&mut c, None, 3 * MIB, 100_000, false);
    disconnect(c);
}

#[test]
fn nbdkit_file_dir_named_exports_write_zero_trim_on_disk() {
    let scratch = Scratch::new("nbdkit-dir");
    let dir = Scratch::new("nbdkit-dir-exports");
    let a = dir.file("a.img", MIB, 0x11);
    let b = dir.file("b.img", 2 * MIB, 0x22);
    let server = nbdkit(&scratch, &["file", &format!("dir={}", dir.0.display())]);

    let mut c = server.client("b.img");
    assert_eq!(c.export().size, 2 * MIB);
    round_trip(&mut c, Some(&b), 65536, 8192, true);
    disconnect(c);
    // The other export was left alone.
    assert!(fs::read(&a).unwrap().iter().all(|&x| x == 0x11));

    let mut c = server.client("a.img");
    let flags = c.export().flags;
    for (flag, name) in [
        (TFLAG_SEND_FLUSH, "flush"),
        (TFLAG_SEND_FUA, "fua"),
        (TFLAG_SEND_TRIM, "trim"),
        (TFLAG_SEND_WRITE_ZEROES, "write_zeroes"),
    ] {
        assert!(flags & flag != 0, "nbdkit file plugin should offer {name}");
    }
    c.write_zeroes(4096, 8192, false).unwrap();
    assert_eq!(on_disk(&a, 4096, 8192), vec![0; 8192]);
    assert_eq!(on_disk(&a, 4096 - 1, 1), [0x11]);
    assert_eq!(on_disk(&a, 4096 + 8192, 1), [0x11]);
    // Trim punches a hole in the file: the blocks are released and read back as zeroes.
    let before = allocated(&a);
    c.trim(256 * 1024, 256 * 1024).unwrap();
    c.flush().unwrap();
    assert!(allocated(&a) < before, "trim did not deallocate");
    assert_eq!(on_disk(&a, 256 * 1024, 256 * 1024), vec![0; 256 * 1024]);
    disconnect(c);
}

#[test]
fn nbdkit_list_names_every_export_with_its_description() {
    let scratch = Scratch::new("nbdkit-list");
    let dir = Scratch::new("nbdkit-list-exports");
    dir.file("first.img", MIB, 0);
    dir.file("second.img", MIB, 0);
    let server = nbdkit(
        &scratch,
        &[
            "--filter=exportname",
            "file",
            &format!("dir={}", dir.0.display()),
            "exportdesc=fixed:nbdroot test disk",
        ],
    );
    let mut entries = server.list().unwrap();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let want = |name: &str| ExportEntry {
        name: name.into(),
        description: "nbdroot test disk".into(),
    };
    assert_eq!(entries, vec![want("first.img"), want("second.img")]);
}

#[test]
fn nbdkit_info_reports_size_flags_block_sizes_and_description() {
    let scratch = Scratch::new("nbdkit-info");
    let server = nbdkit(
        &scratch,
        &[
            "--filter=exportname",
            "--filter=blocksize-policy",
            "memory",
            "8M",
            "blocksize-minimum=512",
            "blocksize-preferred=4096",
            "blocksize-maximum=65536",
            "exportdesc=fixed:described by nbdkit",
        ],
    );
    let info = server.info("");
    assert_eq!(info.export.size, 8 * MIB);
    assert!(info.export.flags & TFLAG_HAS_FLAGS != 0);
    assert!(info.export.flags & TFLAG_SEND_FLUSH != 0);
    let bs = info.export.block_sizes.expect("block sizes");
    assert_eq!((bs.minimum, bs.preferred, bs.maximum), (512, 4096, 65536));
    assert_eq!(info.description.as_deref(), Some("described by nbdkit"));
    assert_eq!(info.export.kernel_block_size(), 512);
    // GO learns the same export.
    let c = server.client("");
    assert_eq!(c.export(), &info.export);
}

#[test]
fn nbdkit_blocksize_policy_large_io_is_split_within_the_maximum() {
    let scratch = Scratch::new("nbdkit-split");
    let file = scratch.file("disk.img", 4 * MIB, 0);
    // With error policy, the server fails any request over 64 KiB with EINVAL.
    let server = nbdkit(
        &scratch,
        &[
            "--filter=blocksize-policy",
            "file",
            file.to_str().unwrap(),
            "blocksize-minimum=4096",
            "blocksize-maximum=65536",
            "blocksize-error-policy=error",
        ],
    );
    let mut c = server.client("");
    assert_eq!(c.max_request(), 65536);
    round_trip(&mut c, Some(&file), 3 * 4096, 300 * 1024, false);
    // Unaligned and oversized requests are refused locally, before the server sees them.
    let err = c.write(100, &[0; 4096], false).unwrap_err();
    assert!(
        matches!(err, TransmissionError::Unaligned { minimum: 4096, .. }),
        "{err}"
    );
    let err = c.trim(0, 128 * 1024).unwrap_err();
    assert!(
        matches!(err, TransmissionError::TooLong { maximum: 65536, .. }),
        "{err}"
    );
    disconnect(c);
    // The server does enforce the maximum: a client ignoring it sends 128 KiB in one request.
    let mut s = server.connect();
    let mut export = proto::negotiate(&mut s, "").unwrap();
    export.block_sizes = None;
    let err = Client::new(s, export)
        .write(0, &[0; 128 * 1024], false)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransmissionError::Server {
                errno: Errno(EINVAL),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn nbdkit_oldstyle_default_export_round_trips_and_has_no_options() {
    let scratch = Scratch::new("nbdkit-oldstyle");
    let file = scratch.file("disk.img", MIB, 0x33);
    let server = nbdkit(&scratch, &["-o", "file", file.to_str().unwrap()]);
    let mut c = server.client("");
    assert_eq!(c.export().style, Style::Oldstyle);
    assert_eq!(c.export().size, MIB);
    let data = pattern(4096, 5);
    c.write(512, &data, false).unwrap();
    let mut back = vec![0; 4096];
    c.read(512, &mut back).unwrap();
    assert!(back == data && on_disk(&file, 512, 4096) == data);
    // nbdkit 1.32 announces SEND_FLUSH and SEND_FUA in the oldstyle greeting, then fails
    // flushes and FUA writes with EINVAL: a kernel client would see I/O errors.
    assert!(c.export().flags & TFLAG_SEND_FLUSH != 0 && c.export().flags & TFLAG_SEND_FUA != 0);
    for result in [c.flush(), c.write(8192, &[5; 512], true)] {
        match result {
            Ok(()) => {}
            Err(TransmissionError::Server {
                errno: Errno(EINVAL),
                ..
            }) => eprintln!("nbdkit oldstyle: flush/FUA announced but refused"),
            Err(e) => panic!("{e}"),
        }
    }
    disconnect(c);

    let err = server.negotiate_err("named");
    assert_eq!(
        err.to_string(),
        "server speaks the oldstyle handshake, which has no export names (asked for \"named\")"
    );
    let err = server.list().unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::NoOptions {
                style: Style::Oldstyle,
                ..
            }
        ),
        "{err}"
    );
    let info = server.info("");
    assert_eq!(
        (info.export.size, info.export.style),
        (MIB, Style::Oldstyle)
    );
}

#[test]
fn nbdkit_unknown_export_name_is_typed_with_the_server_text() {
    let scratch = Scratch::new("nbdkit-unknown");
    let dir = Scratch::new("nbdkit-unknown-exports");
    dir.file("there.img", MIB, 0);
    let server = nbdkit(&scratch, &["file", &format!("dir={}", dir.0.display())]);
    // nbdkit answers NBD_REP_ERR_UNKNOWN without a message (the reason goes to its log).
    let err = server.negotiate_err("nope");
    assert!(
        matches!(&err, HandshakeError::UnknownExport { export, .. } if export == "nope"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "export \"nope\" not found: (no message from the server)"
    );
    let err = proto::info(&mut server.connect(), "nope").unwrap_err();
    assert!(matches!(err, HandshakeError::UnknownExport { .. }), "{err}");
}

#[test]
fn nbdkit_error_filter_server_errors_are_typed() {
    let scratch = Scratch::new("nbdkit-error");
    let server = nbdkit(
        &scratch,
        &[
            "--filter=error",
            "memory",
            "1M",
            "error=ENOSPC",
            "error-pwrite-rate=100%",
        ],
    );
    let mut c = server.client("");
    let err = c.write(4096, &[1; 4096], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "server failed NBD_CMD_WRITE of 4096 bytes at offset 4096: ENOSPC (28)"
    );
    assert!(matches!(
        err,
        TransmissionError::Server {
            command: Cmd::Write,
            errno: Errno(ENOSPC),
            ..
        }
    ));
    // The connection stays in step: reads still work.
    let mut buf = [9u8; 4096];
    c.read(4096, &mut buf).unwrap();
    assert_eq!(buf, [0; 4096]);
    disconnect(c);
}

// ---------------------------------------------------------------------------------------------
// qemu-nbd

#[test]
fn qemu_nbd_default_export_write_zero_trim_on_disk() {
    let scratch = Scratch::new("qemu-default");
    let file = scratch.file("disk.img", 4 * MIB, 0x44);
    let server = qemu_nbd(&scratch, &["--discard=unmap"], &file);
    let mut c = server.client("");
    assert_eq!(c.export().size, 4 * MIB);
    round_trip(&mut c, Some(&file), 0, 4096, true);
    round_trip(&mut c, Some(&file), MIB + 4096, 200_000 / 512 * 512, false);
    c.write_zeroes(2 * MIB, 65536, false).unwrap();
    assert_eq!(on_disk(&file, 2 * MIB, 65536), vec![0; 65536]);
    let before = allocated(&file);
    c.trim(3 * MIB, MIB as u32).unwrap();
    c.flush().unwrap();
    assert!(allocated(&file) < before, "trim did not deallocate");
    assert_eq!(on_disk(&file, 3 * MIB, MIB as usize), vec![0; MIB as usize]);
    disconnect(c);
}

#[test]
fn qemu_nbd_named_export_info_list_and_unknown_name() {
    let scratch = Scratch::new("qemu-named");
    let file = scratch.file("disk.img", 2 * MIB, 0x55);
    let server = qemu_nbd(&scratch, &["-x", "disk", "-D", "qemu test disk"], &file);
    let entries = server.list().unwrap();
    assert_eq!(
        entries,
        vec![ExportEntry {
            name: "disk".into(),
            description: "qemu test disk".into()
        }]
    );
    let info = server.info("disk");
    assert_eq!(info.export.size, 2 * MIB);
    assert_eq!(info.description.as_deref(), Some("qemu test disk"));
    assert_eq!(info.name.as_deref(), Some("disk"));
    let bs = info.export.block_sizes.expect("qemu-nbd sends block sizes");
    assert_eq!((bs.minimum, bs.preferred, bs.maximum), (1, 4096, 32 << 20));
    for flag in [
        TFLAG_SEND_FLUSH,
        TFLAG_SEND_FUA,
        TFLAG_SEND_TRIM,
        TFLAG_SEND_WRITE_ZEROES,
    ] {
        assert!(info.export.flags & flag != 0, "flag {flag:#x}");
    }

    let mut c = server.client("disk");
    round_trip(&mut c, Some(&file), 8192, 8192, true);
    disconnect(c);

    let err = server.negotiate_err("nope");
    assert!(
        matches!(&err, HandshakeError::UnknownExport { export, .. } if export == "nope"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "export \"nope\" not found: export 'nope' not present"
    );
}

#[test]
fn qemu_nbd_read_only_refuses_writes_locally_and_on_the_server() {
    let scratch = Scratch::new("qemu-ro");
    let file = scratch.file("disk.img", MIB, 0x66);
    let server = qemu_nbd(&scratch, &["-r"], &file);
    let mut c = server.client("");
    assert!(c.export().read_only());
    for err in [
        c.write(0, &[0; 512], false).unwrap_err(),
        c.write_zeroes(0, 512, true).unwrap_err(),
        c.trim(0, 512).unwrap_err(),
    ] {
        assert!(matches!(err, TransmissionError::ReadOnly { .. }), "{err}");
    }
    let mut buf = [0u8; 512];
    c.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0x66; 512]);
    disconnect(c);

    // A client that ignored the flag would be refused by the server too (qemu-nbd 7.2 says
    // EINVAL rather than EPERM).
    let mut s = server.connect();
    let mut export = proto::negotiate(&mut s, "").unwrap();
    export.flags &= !TFLAG_READ_ONLY;
    let mut lax = Client::new(s, export);
    let err = lax.write(0, &[0; 512], false).unwrap_err();
    assert!(
        matches!(
            err,
            TransmissionError::Server {
                command: Cmd::Write,
                errno: Errno(EINVAL),
                ..
            }
        ),
        "{err}"
    );
    assert!(fs::read(&file).unwrap().iter().all(|&b| b == 0x66));
}

// ---------------------------------------------------------------------------------------------
// nbd-server

#[test]
fn nbd_server_list_names_both_exports() {
    let scratch = Scratch::new("nbd-server-list");
    let (server, _, _) = nbd_server(&scratch, true);
    let mut names: Vec<_> = server.list().unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
}

#[test]
fn nbd_server_list_without_allowlist_is_refused_with_the_server_text() {
    let scratch = Scratch::new("nbd-server-nolist");
    let (server, _, _) = nbd_server(&scratch, false);
    let err = server.list().unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::OptionRefused {
                code: RepError::Policy,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "server refused NBD_OPT_LIST (NBD_REP_ERR_POLICY): \
         Listing of exports denied by server configuration"
    );
    // The refusal leaves the server serving.
    assert_eq!(server.client("alpha").export().size, MIB);
}

#[test]
fn nbd_server_named_export_write_zero_trim_on_disk() {
    let scratch = Scratch::new("nbd-server-rw");
    let (server, alpha, beta) = nbd_server(&scratch, true);
    let mut c = server.client("alpha");
    let flags = c.export().flags;
    assert!(flags & TFLAG_SEND_FLUSH != 0 && flags & TFLAG_SEND_FUA != 0);
    assert!(flags & TFLAG_SEND_TRIM != 0);
    round_trip(&mut c, Some(&alpha), 4096, 65536, true);
    // Offered although the config does not mention it.
    assert!(flags & TFLAG_SEND_WRITE_ZEROES != 0);
    c.write_zeroes(128 * 1024, 8192, false).unwrap();
    assert_eq!(on_disk(&alpha, 128 * 1024, 8192), vec![0; 8192]);
    assert_eq!(on_disk(&alpha, 128 * 1024 + 8192, 1), [0xaa]);
    // Trim leaves the contents unspecified; nbd-server 3.24 accepts it but keeps the data of
    // a plain file (nbdkit and qemu-nbd punch holes), so only "old data or zeroes" holds.
    c.trim(512 * 1024, 256 * 1024).unwrap();
    c.flush().unwrap();
    let trimmed = on_disk(&alpha, 512 * 1024, 256 * 1024);
    assert!(
        trimmed.iter().all(|&b| b == 0xaa) || trimmed.iter().all(|&b| b == 0),
        "trimmed range holds something else"
    );
    disconnect(c);
    assert!(fs::read(&beta).unwrap().iter().all(|&b| b == 0xbb));
}

#[test]
fn nbd_server_info_reports_flags_but_size_zero() {
    let scratch = Scratch::new("nbd-server-info");
    let (server, _, _) = nbd_server(&scratch, true);
    let alpha = server.info("alpha");
    // nbd-server 3.24 answers NBD_OPT_INFO with size 0 (it opens the file only for GO), so
    // INFO cannot tell the size; the flags are right, and GO gives the real size.
    assert_eq!(alpha.export.size, 0);
    assert_eq!(
        alpha.export.flags,
        TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_CAN_MULTI_CONN
    );
    assert_eq!((alpha.name, alpha.description), (None, None));
    // Neither INFO nor GO carries block sizes.
    assert_eq!(alpha.export.block_sizes, None);
    let go = server.client("alpha");
    assert_eq!(
        (go.export().size, go.export().flags, go.export().block_sizes),
        (MIB, alpha.export.flags, None)
    );
    disconnect(go);
    let beta = server.info("beta");
    assert!(beta.export.read_only());
}

#[test]
fn nbd_server_read_only_export_refuses_writes() {
    let scratch = Scratch::new("nbd-server-ro");
    let (server, _, beta) = nbd_server(&scratch, true);
    let mut c = server.client("beta");
    assert!(c.export().read_only());
    let err = c.write(0, &[0; 512], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NBD_CMD_WRITE at offset 0 refused locally: the export is read-only"
    );
    disconnect(c);
    let mut s = server.connect();
    let mut export = proto::negotiate(&mut s, "beta").unwrap();
    export.flags &= !TFLAG_READ_ONLY;
    let err = Client::new(s, export)
        .write(0, &[0; 512], false)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransmissionError::Server {
                errno: Errno(EPERM),
                ..
            }
        ),
        "{err}"
    );
    assert!(fs::read(&beta).unwrap().iter().all(|&b| b == 0xbb));
}

#[test]
fn nbd_server_unknown_export_name_is_typed_with_the_server_text() {
    let scratch = Scratch::new("nbd-server-unknown");
    let (server, _, _) = nbd_server(&scratch, true);
    let err = server.negotiate_err("gamma");
    assert!(
        matches!(&err, HandshakeError::UnknownExport { export, .. } if export == "gamma"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "export \"gamma\" not found: Export unknown"
    );
    assert_eq!(server.client("alpha").export().size, MIB);
}

#[test]
fn nbdkit_without_multi_conn_refuses_several_connections() {
    use nbdroot::connect::{connect_many, Peer};
    use nbdroot::settings::ConnectPolicy;
    use nbdroot::settings::SocketOptions;
    let scratch = Scratch::new("no-multi-conn");
    let srv = nbdkit(
        &scratch,
        &[
            "--filter=multi-conn",
            "memory",
            "1M",
            "multi-conn-mode=disable",
        ],
    );
    let peer = Peer::Tcp(format!("127.0.0.1:{}", srv.port).parse().unwrap());
    let policy = ConnectPolicy::default();
    let err = connect_many(&peer, "", 4, &policy, &SocketOptions::default(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "127.0.0.1:{} does not allow 4 connections to export \"\" (no CAN_MULTI_CONN flag); use one connection",
            srv.port
        )
    );
    let one = connect_many(&peer, "", 1, &policy, &SocketOptions::default(), None).unwrap();
    assert_eq!(one.len(), 1);
}

#[test]
fn nbdkit_with_multi_conn_gives_four_consistent_connections() {
    use nbdroot::connect::{connect_many, Peer};
    use nbdroot::settings::ConnectPolicy;
    use nbdroot::settings::SocketOptions;
    let scratch = Scratch::new("multi-conn");
    let srv = nbdkit(&scratch, &["memory", "1M"]);
    let peer = Peer::Tcp(format!("127.0.0.1:{}", srv.port).parse().unwrap());
    let conns = connect_many(
        &peer,
        "",
        4,
        &ConnectPolicy::default(),
        &SocketOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(conns.len(), 4);
    assert!(conns.iter().all(|c| c.export.size == 1 << 20));
}
