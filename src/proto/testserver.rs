//! A scripted in-process NBD server for unit tests: the bytes it will send, and a record of
//! what the client wrote.

use std::io::{self, Read, Write};

use super::consts::OPTION_REPLY_MAGIC;

/// The bytes a scripted server sends, built up field by field.
#[derive(Debug, Clone, Default)]
pub struct Script(Vec<u8>);

impl Script {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn zeroes(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn raw(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self
    }
    /// An option reply: magic, option, type, length, data.
    pub fn reply(self, option: u32, ty: u32, data: &[u8]) -> Self {
        self.u64(OPTION_REPLY_MAGIC)
            .u32(option)
            .u32(ty)
            .u32(data.len() as u32)
            .raw(data)
    }
    pub fn into_conn(self) -> Conn {
        Conn {
            input: io::Cursor::new(self.0),
            written: Vec::new(),
        }
    }
}

/// One client connection to a scripted server.
#[derive(Debug)]
pub struct Conn {
    input: io::Cursor<Vec<u8>>,
    pub written: Vec<u8>,
}

impl Conn {
    pub fn fully_read(&self) -> bool {
        self.input.position() as usize == self.input.get_ref().len()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
