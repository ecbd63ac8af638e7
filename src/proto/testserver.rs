//! A scripted in-process NBD server for unit tests: the bytes it will send, and a record of
//! what the client wrote.

use std::io::{self, Read, Write};

use super::consts::*;

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
    /// NBD_REP_SERVER: name length, name, description.
    pub fn server(self, option: u32, name: &str, description: &str) -> Self {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(description.as_bytes());
        self.reply(option, REP_SERVER, &data)
    }
    /// NBD_REP_INFO carrying NBD_INFO_EXPORT.
    pub fn info_export(self, option: u32, size: u64, flags: u16) -> Self {
        let mut data = INFO_EXPORT.to_be_bytes().to_vec();
        data.extend_from_slice(&size.to_be_bytes());
        data.extend_from_slice(&flags.to_be_bytes());
        self.reply(option, REP_INFO, &data)
    }
    /// NBD_REP_INFO carrying a string (NBD_INFO_NAME, NBD_INFO_DESCRIPTION).
    pub fn info_string(self, option: u32, info: u16, text: &str) -> Self {
        let mut data = info.to_be_bytes().to_vec();
        data.extend_from_slice(text.as_bytes());
        self.reply(option, REP_INFO, &data)
    }
    /// NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE.
    pub fn info_block_size(self, option: u32, min: u32, preferred: u32, max: u32) -> Self {
        let mut data = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [min, preferred, max] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        self.reply(option, REP_INFO, &data)
    }
    /// A simple transmission reply, with read data when there is any.
    pub fn simple_reply(self, error: u32, cookie: u64, data: &[u8]) -> Self {
        self.u32(SIMPLE_REPLY_MAGIC)
            .u32(error)
            .u64(cookie)
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
