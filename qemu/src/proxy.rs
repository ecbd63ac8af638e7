//! A TCP relay on 127.0.0.1 that counts the bytes going each way: put between guests and an
//! NBD server, it measures what a boot costs the server's link (NBD headers included).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Context, Result};

/// Byte counters of a [`CountingProxy`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Server → clients.
    pub down: AtomicU64,
    /// Clients → server.
    pub up: AtomicU64,
    pub connections: AtomicU64,
}

/// A running relay; stops accepting on drop (open relays end with their connections).
#[derive(Debug)]
pub struct CountingProxy {
    /// The port clients connect to.
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Relays every connection to `127.0.0.1:port` to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).step(|| "bind the proxy")?;
        let port = listener.local_addr().step(|| "the proxy's port")?.port();
        listener
            .set_nonblocking(true)
            .step(|| "make the proxy's listener non-blocking")?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        std::thread::spawn(move || accept_loop(listener, upstream, c, s));
        Ok(CountingProxy {
            port,
            counters,
            stop,
        })
    }

    /// Bytes from the server to the clients so far.
    pub fn down(&self) -> u64 {
        self.counters.down.load(Ordering::Relaxed)
    }

    /// Bytes from the clients to the server so far.
    pub fn up(&self) -> u64 {
        self.counters.up.load(Ordering::Relaxed)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    continue;
                };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (down, up) = (counters.clone(), counters.clone());
                std::thread::spawn(move || relay(server, client, &down.down));
                std::thread::spawn(move || relay(c2, s2, &up.up));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies `from` to `to` until either side ends, counting the bytes.
fn relay(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0; 256 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        // Counted before it is passed on: whoever sees the bytes' effect sees the count.
        count.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_both_directions() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&[7u8; 1000]).unwrap();
        });
        let proxy = CountingProxy::start(addr).unwrap();
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port)).unwrap();
        c.write_all(&[1u8; 10]).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        echo.join().unwrap();
        assert_eq!(got.len(), 1000);
        assert_eq!((proxy.up(), proxy.down()), (10, 1000));
        assert_eq!(proxy.counters.connections.load(Ordering::Relaxed), 1);
    }
}
