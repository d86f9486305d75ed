//! Dequantisation of ggml block types to f32, matching gguf-py's numpy reference
//! (`gguf.quants.dequantize`) bit for bit: the same f16→f32 scales and the same f32 operations
//! in the same order (Rust never fuses `a * b + c` into an FMA, and neither does numpy).
//!
//! Blocks run along a tensor's innermost dimension, so the flat output is in the tensor's
//! row-major order.

use half::f16;

use super::gguf::GgmlType;
use crate::error::{Error, Result};

/// Elements per K-quant super-block.
const QK_K: usize = 256;

/// The types `dequantize` handles, for messages.
pub const SUPPORTED: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// One block's decoder: `block` holds exactly one block's bytes, `out` its elements.
type BlockFn = fn(block: &[u8], out: &mut [f32]);

fn decoder(t: GgmlType) -> Option<BlockFn> {
    Some(match t {
        GgmlType::F32 => f32_block,
        GgmlType::F16 => f16_block,
        GgmlType::BF16 => bf16_block,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    })
}

/// Whether `dequantize` handles type `t`.
pub fn is_supported(t: GgmlType) -> bool {
    decoder(t).is_some()
}

/// Dequantises `numel` elements of type `t` from `bytes` (`file`/`tensor` name them in errors).
pub fn dequantize(
    file: &str,
    tensor: &str,
    t: GgmlType,
    bytes: &[u8],
    numel: usize,
) -> Result<Vec<f32>> {
    let bad = |m: String| Error::tensor_format(file, tensor, m);
    let decode = decoder(t).ok_or_else(|| {
        let what = match t.name() {
            Some(_) => format!("ggml type {t}"),
            None => t.to_string(),
        };
        bad(format!(
            "{what} cannot be dequantised by moegraft (supported: {SUPPORTED})"
        ))
    })?;
    let (block, type_size) = t
        .block()
        .ok_or_else(|| bad(format!("unknown ggml type {}", t.0)))?;
    let (block, type_size) = (block as usize, type_size as usize);
    if !numel.is_multiple_of(block) {
        return Err(bad(format!(
            "{numel} elements are not a whole number of {t} blocks of {block}"
        )));
    }
    let n_blocks = numel / block;
    if n_blocks.checked_mul(type_size) != Some(bytes.len()) {
        return Err(bad(format!(
            "{numel} elements of {t} need {} bytes but {} were given",
            n_blocks.saturating_mul(type_size),
            bytes.len()
        )));
    }
    let mut out = vec![0f32; numel];
    for (src, dst) in bytes
        .chunks_exact(type_size)
        .zip(out.chunks_exact_mut(block))
    {
        decode(src, dst);
    }
    Ok(out)
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn f32_block(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn f16_block(b: &[u8], out: &mut [f32]) {
    out[0] = half_at(b, 0);
}

fn bf16_block(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
}

/// d: f16, then 16 bytes: element j < 16 is the low nibble of byte j, element j + 16 the high.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

/// d, m: f16; value = d * q + m.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        out[j] = d * (qs[j] & 0x0F) as f32 + m;
        out[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// d: f16, qh: u32 of fifth bits (bit i for element i), 16 bytes of low nibbles as in Q4_0.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * (lo as i32 - 16) as f32;
        out[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * lo as f32 + m;
        out[j + 16] = d * hi as f32 + m;
    }
}

fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        out[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// Layout: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants, d, dmin.
/// Element i: quant byte 32·(i/128) + i%32, shift 2·((i%128)/32); scale byte i/16.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = half_at(b, 80);
    let dmin = half_at(b, 82);
    for (i, o) in out.iter_mut().enumerate().take(QK_K) {
        let sc = scales[i / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let q = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        *o = dl * q as f32 - ml;
    }
}

/// Layout: 32 bytes hmask, 64 bytes 2-bit quants, 12 bytes of packed 6-bit scales, d.
/// The high bit subtracts 4 where the mask bit is clear.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = half_at(b, 108);
    let mut scales = [0f32; 16];
    for (k, s) in scales.iter_mut().enumerate() {
        let low = if k < 8 { sc[k] & 0x0F } else { sc[k - 8] >> 4 };
        let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
        *s = ((low | (high << 4)) as i8 - 32) as f32;
    }
    for (i, o) in out.iter_mut().enumerate().take(QK_K) {
        let dl = d * scales[i / 16];
        let ql = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        let qh = ((hmask[i % 32] >> (i / 32)) & 1) ^ 1;
        let q = ql as i8 - (qh << 2) as i8;
        *o = dl * q as f32;
    }
}

/// The 8 six-bit (scale, min) pairs of Q4_K/Q5_K, packed in 12 bytes.
fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[4 + j] & 0x3F;
        sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
    }
    (sc, mn)
}

/// d, dmin, 12 scale bytes, 128 bytes of nibbles: sub-block s of 32 uses byte 32·(s/2) + l,
/// low nibble for even s, high for odd.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for (i, o) in out.iter_mut().enumerate().take(QK_K) {
        let s = i / 32;
        let ds = d * sc[s] as f32;
        let dm = dmin * mn[s] as f32;
        let q = (qs[32 * (s / 2) + i % 32] >> (4 * (s % 2))) & 0x0F;
        *o = ds * q as f32 - dm;
    }
}

/// As Q4_K plus 32 bytes of fifth bits (bit s of byte l for sub-block s).
fn q5_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (i, o) in out.iter_mut().enumerate().take(QK_K) {
        let s = i / 32;
        let l = i % 32;
        let ds = d * sc[s] as f32;
        let dm = dmin * mn[s] as f32;
        let low = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
        let high = (qh[l] >> s) & 1;
        *o = ds * (low | (high << 4)) as f32 - dm;
    }
}

/// 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 signed scales, d. Element i in half
/// h = i/128: low nibble from byte 64h + (i%128)%64 (high nibble when (i%128) ≥ 64), high
/// bits from byte 32h + i%32 at shift 2·((i%128)/32).
fn q6_k(b: &[u8], out: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = half_at(b, 208);
    for (i, o) in out.iter_mut().enumerate().take(QK_K) {
        let h = i / 128;
        let r = i % 128;
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        let ds = d * (scales[i / 16] as i8) as f32;
        *o = ds * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_and_q4_1_by_hand() {
        let mut block = h(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize("f", "t", GgmlType::Q8_0, &block, 32).unwrap();
        assert_eq!(v[0], -8.0);
        assert_eq!(v[31], 7.5);

        let mut block = h(2.0).to_vec();
        block.extend_from_slice(&h(-1.0));
        block.extend((0..16).map(|j| (j as u8) | (15 - j as u8) << 4));
        let v = dequantize("f", "t", GgmlType::Q4_1, &block, 32).unwrap();
        assert_eq!(v[3], 2.0 * 3.0 - 1.0);
        assert_eq!(v[16 + 3], 2.0 * 12.0 - 1.0);
    }

    #[test]
    fn q4_0_centres_on_eight() {
        let mut block = h(1.0).to_vec();
        block.extend([0x80u8; 16]);
        let v = dequantize("f", "t", GgmlType::Q4_0, &block, 32).unwrap();
        assert!(v[..16].iter().all(|&x| x == -8.0));
        assert!(v[16..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn errors_name_tensor_and_type() {
        let e = dequantize("m.gguf", "blk.0.x", GgmlType(16), &[0; 66], 256).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("m.gguf") && s.contains("blk.0.x") && s.contains("IQ2_XXS (16)"),
            "{s}"
        );
        let e = dequantize("m.gguf", "t", GgmlType(77), &[0; 4], 1).unwrap_err();
        assert!(e.to_string().contains("unknown ggml type 77"), "{e}");
        let e = dequantize("m.gguf", "t", GgmlType::Q8_0, &[0; 33], 32).unwrap_err();
        assert!(e.to_string().contains("need 34 bytes"), "{e}");
        let e = dequantize("m.gguf", "t", GgmlType::Q8_0, &[0; 34], 31).unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }
}
