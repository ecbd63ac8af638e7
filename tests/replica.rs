//! Replica checks against real servers on this host: nbdkit processes serving copies of one
//! file (and one serving other data), reached, fingerprinted and compared as at attach, and
//! probed again as the supervisor does. No kernel device: the VM tests cover attaching.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nbdroot::connect::Peer;
use nbdroot::replica::probe::{gather, probe, Ask};
use nbdroot::settings::{ConnectPolicy, SocketOptions};

mod common;
use common::*;

fn peer(s: &Server) -> Peer {
    Peer::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, s.port)))
}

fn ask<'a>(servers: &'a [Peer], read_only: bool, shared: bool) -> Ask<'a> {
    Ask {
        servers,
        export: "",
        connections: 1,
        policy: ConnectPolicy {
            attempt_timeout: Duration::from_secs(5),
            retries: 0,
        },
        socket: SocketOptions::default(),
        read_only,
        shared_storage: shared,
        tls: None,
    }
}

#[test]
fn copies_match_other_data_is_refused_and_a_probe_agrees() {
    let scratch = Scratch::new("replica-gather");
    let a = scratch.file("a.img", 8 << 20, 0x5a);
    let b = scratch.file("b.img", 8 << 20, 0x5a);
    let c = scratch.file("c.img", 8 << 20, 0x33);
    let path = |p: &std::path::Path| p.display().to_string();
    let sa = nbdkit(&scratch, &["--readonly", "file", &path(&a)]);
    let sb = nbdkit(&scratch, &["--readonly", "file", &path(&b)]);
    let sc = nbdkit(&scratch, &["--readonly", "file", &path(&c)]);
    let down = Peer::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())));
    let servers = [down.clone(), peer(&sa), peer(&sb), peer(&sc)];
    let g = gather(&ask(&servers, false, false), 100).unwrap();
    // One connection per server listed, spread over the two that serve the same data.
    let used: Vec<Peer> = g.conns.iter().map(|c| c.peer.clone()).collect();
    assert_eq!(used, [peer(&sa), peer(&sb), peer(&sa), peer(&sb)]);
    assert_eq!(g.board.down(), [0, 3]);
    // The supervisor's probe of a copy finds the same fingerprint.
    let (_, id) = probe(
        &peer(&sb),
        "",
        Duration::from_secs(5),
        &SocketOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(id, g.identity);
    let (_, other) = probe(
        &peer(&sc),
        "",
        Duration::from_secs(5),
        &SocketOptions::default(),
        None,
    )
    .unwrap();
    assert_ne!(other.fingerprint, g.identity.fingerprint);
}

#[test]
fn a_writable_export_with_replicas_needs_declared_shared_storage() {
    let scratch = Scratch::new("replica-writable");
    let sa = nbdkit(&scratch, &["memory", "4M"]);
    let sb = nbdkit(&scratch, &["memory", "4M"]);
    let servers = [peer(&sa), peer(&sb)];
    let err = gather(&ask(&servers, false, false), 0)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "replicas {}, {}: the export is writable, and failover between servers that do not \
             share storage would lose or mix writes; declare shared storage \
             (rd.nbdroot.replicas.shared=1, connect --replicas-shared) or attach read-only \
             (ro in nbdopts, connect --readonly)",
            servers[0], servers[1]
        )
    );
    assert_eq!(
        gather(&ask(&servers, true, false), 0).unwrap().conns.len(),
        2
    );
    assert_eq!(
        gather(&ask(&servers, false, true), 0).unwrap().conns.len(),
        2
    );
}
