//! A build without the `tls` feature: the types exist, so the rest of nbdroot needs no
//! conditional code, but none can be made; every TLS configuration is refused with one line.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use super::{TlsError, TlsSettings};

/// No TLS client can exist in this build.
#[derive(Debug, Clone)]
pub enum Client {}

/// No TLS session can exist in this build.
#[derive(Debug)]
pub enum Session {}

impl Client {
    pub fn new(_settings: &TlsSettings, _host: &str) -> Result<Self, TlsError> {
        Err(TlsError::NotBuilt)
    }

    pub fn handshake(&self, _tcp: TcpStream) -> Result<Session, TlsError> {
        match *self {}
    }

    pub fn settings(&self) -> &TlsSettings {
        match *self {}
    }
}

impl Session {
    pub fn into_kernel(self) -> Result<TcpStream, TlsError> {
        match self {}
    }

    pub fn tcp(&self) -> &TcpStream {
        match *self {}
    }
}

impl Read for Session {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl Write for Session {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

impl AsRawFd for Session {
    fn as_raw_fd(&self) -> RawFd {
        match *self {}
    }
}
