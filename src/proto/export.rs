//! What a handshake establishes about an export: size, flags, block sizes, handshake style.

use std::fmt;

use super::consts::*;

/// Block size constraints a server announced with NBD_INFO_BLOCK_SIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

/// What the handshake established about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (TFLAG_*).
    pub flags: u16,
    /// Block size constraints, when the server sent them (validated: see
    /// [`BlockSizes::validate`]).
    pub block_sizes: Option<BlockSizes>,
    /// Which handshake the server spoke.
    pub style: Style,
}

impl Export {
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// The block size to give the kernel: the server's minimum, raised to 512 and kept within
    /// what the kernel driver accepts (512..=4096, a power of two). Not the preferred size:
    /// it becomes the device's logical block size, and a filesystem with smaller blocks (a
    /// small ext4 has 1 KiB blocks) could then not be mounted.
    pub fn kernel_block_size(&self) -> u32 {
        let wanted = self.block_sizes.map_or(512, |b| b.minimum);
        wanted
            .clamp(512, KERNEL_MAX_BLOCK_SIZE)
            .next_power_of_two()
            .min(KERNEL_MAX_BLOCK_SIZE)
    }
}

/// The handshake variant the server used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Oldstyle,
    /// Newstyle without the fixed bit: only NBD_OPT_EXPORT_NAME may be used.
    Newstyle,
    FixedNewstyle,
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Oldstyle => "oldstyle",
            Self::Newstyle => "non-fixed newstyle",
            Self::FixedNewstyle => "fixed newstyle",
        })
    }
}
