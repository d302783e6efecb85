//! A small but structurally valid MP4 (ISO BMFF: `ftyp`, `mdat`, `moov/mvhd`) for the
//! simulated provider, so downloads, storage and content types are exercised with a real
//! container. It has no decodable frames.

fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&((payload.len() as u32 + 8).to_be_bytes()));
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

/// An MP4 of `duration_secs` whose media data is derived from `seed`.
pub fn tiny_mp4(duration_secs: u32, seed: u64) -> Vec<u8> {
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(b"isom");
    ftyp.extend_from_slice(&0x200u32.to_be_bytes());
    ftyp.extend_from_slice(b"isomiso2mp41");
    let mut data = Vec::with_capacity(256);
    let mut x = seed | 1;
    for _ in 0..256 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push((x & 0xFF) as u8);
    }
    // mvhd version 0: flags, times, timescale 1000, duration, rate 1.0, volume 1.0, matrix,
    // pre-defined, next track id.
    let mut mvhd = vec![0u8; 4];
    mvhd.extend_from_slice(&0u32.to_be_bytes());
    mvhd.extend_from_slice(&0u32.to_be_bytes());
    mvhd.extend_from_slice(&1000u32.to_be_bytes());
    mvhd.extend_from_slice(&(duration_secs.saturating_mul(1000)).to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes());
    mvhd.extend_from_slice(&[0u8; 10]);
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        mvhd.extend_from_slice(&v.to_be_bytes());
    }
    mvhd.extend_from_slice(&[0u8; 24]);
    mvhd.extend_from_slice(&1u32.to_be_bytes());
    let mut out = boxed(b"ftyp", &ftyp);
    out.extend(boxed(b"mdat", &data));
    out.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_well_formed() {
        let f = tiny_mp4(8, 7);
        assert_eq!(&f[4..8], b"ftyp");
        // Walk the top-level boxes: sizes must tile the file exactly.
        let mut at = 0usize;
        let mut kinds = Vec::new();
        while at < f.len() {
            let size = u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]) as usize;
            kinds.push(String::from_utf8_lossy(&f[at + 4..at + 8]).to_string());
            at += size;
        }
        assert_eq!(at, f.len());
        assert_eq!(kinds, vec!["ftyp", "mdat", "moov"]);
        assert_ne!(tiny_mp4(8, 7), tiny_mp4(8, 8));
    }
}
