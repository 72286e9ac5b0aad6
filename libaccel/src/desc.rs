//! Checks on AF_XDP descriptors before their bytes are touched. An RX descriptor (address and
//! length, written by the kernel into ring memory we share with it) names the packet's bytes in
//! our UMEM; the frame is turned into a slice from them, so they must lie inside the UMEM and
//! inside one frame. The kernel never writes anything else, but ring memory is untrusted input
//! all the same (ENGINEERING.md §4): a bad descriptor is counted and dropped, never sliced.

use core::ops::Range;

/// The shape of a UMEM: `frame_count` frames of `frame_size` bytes, back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemLayout {
    pub frame_count: u32,
    pub frame_size: u32,
}

/// Why a descriptor was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadDesc {
    /// The address is past the end of the UMEM (no frame to give back).
    OutsideUmem,
    /// The packet runs past the end of its frame.
    CrossesFrame,
}

impl UmemLayout {
    /// Bytes in the UMEM.
    pub fn len(&self) -> u64 {
        u64::from(self.frame_count) * u64::from(self.frame_size)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The start of the frame holding byte `addr`, if it is in the UMEM.
    pub fn frame_of(&self, addr: u64) -> Option<u64> {
        if self.frame_size == 0 || addr >= self.len() {
            return None;
        }
        Some(addr - addr % u64::from(self.frame_size))
    }

    /// The UMEM byte range of the packet an RX descriptor (`addr`, `len`) names.
    pub fn rx_range(&self, addr: u64, len: u32) -> Result<Range<usize>, BadDesc> {
        let frame = self.frame_of(addr).ok_or(BadDesc::OutsideUmem)?;
        let end = addr + u64::from(len); // addr < len() <= 2^64 / 2: no overflow
        if end > frame + u64::from(self.frame_size) {
            return Err(BadDesc::CrossesFrame);
        }
        // Both fit in usize: they are within the UMEM, which is mapped in our address space.
        Ok(addr as usize..end as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: UmemLayout = UmemLayout {
        frame_count: 4,
        frame_size: 4096,
    };

    #[test]
    fn a_packet_inside_its_frame_is_its_range() {
        assert_eq!(L.rx_range(256, 1514), Ok(256..1770));
        assert_eq!(
            L.rx_range(3 * 4096 + 256, 3840),
            Ok(3 * 4096 + 256..4 * 4096)
        );
        assert_eq!(L.rx_range(4096, 0), Ok(4096..4096));
    }

    #[test]
    fn bad_descriptors_are_refused() {
        assert_eq!(L.rx_range(4 * 4096, 1), Err(BadDesc::OutsideUmem));
        assert_eq!(L.rx_range(u64::MAX, u32::MAX), Err(BadDesc::OutsideUmem));
        assert_eq!(L.rx_range(4096 + 256, 3841), Err(BadDesc::CrossesFrame));
        assert_eq!(
            L.rx_range(3 * 4096 + 4095, u32::MAX),
            Err(BadDesc::CrossesFrame)
        );
        let empty = UmemLayout {
            frame_count: 0,
            frame_size: 0,
        };
        assert_eq!(empty.rx_range(0, 0), Err(BadDesc::OutsideUmem));
    }
}
