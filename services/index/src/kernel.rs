//! Dot products, written as chunked loops the compiler vectorises.
//!
//! The default x86-64 target only has SSE2, so the scan over many rows is also compiled a
//! second time with AVX2 + FMA enabled and chosen at run time when the CPU has them.

/// Independent accumulators: enough to keep the vector units busy without a serial chain.
const LANES: usize = 16;

#[inline(always)]
fn dot_generic<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] = if FMA {
                x[i].mul_add(y[i], acc[i])
            } else {
                acc[i] + x[i] * y[i]
            };
        }
    }
    let mut sum = 0.0;
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    // Pairwise reduction keeps rounding error small and vectorises as well.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + sum
}

/// The dot product of two equally long slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_generic::<false>(a, b)
}

/// Computes `out[r] = rows[r] · query` for each `dimensions`-long row in `rows`.
pub fn dots(rows: &[f32], dimensions: usize, query: &[f32], out: &mut [f32]) {
    debug_assert_eq!(rows.len(), out.len() * dimensions);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { dots_avx2_fma(rows, dimensions, query, out) };
            return;
        }
    }
    dots_portable(rows, dimensions, query, out);
}

fn dots_portable(rows: &[f32], dimensions: usize, query: &[f32], out: &mut [f32]) {
    for (row, o) in rows.chunks_exact(dimensions).zip(out.iter_mut()) {
        *o = dot_generic::<false>(row, query);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2_fma(rows: &[f32], dimensions: usize, query: &[f32], out: &mut [f32]) {
    for (row, o) in rows.chunks_exact(dimensions).zip(out.iter_mut()) {
        *o = dot_generic::<true>(row, query);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn dot_matches_naive_for_any_length() {
        for len in [0, 1, 7, 16, 17, 128, 131] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            assert!(
                (dot(&a, &b) as f64 - naive(&a, &b)).abs() < 1e-4,
                "len {len}"
            );
        }
    }

    #[test]
    fn dots_match_dot_row_by_row() {
        let dim = 128;
        let rows: Vec<f32> = (0..dim * 5).map(|i| (i as f32 * 0.013).sin()).collect();
        let query: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.7).cos()).collect();
        let mut out = vec![0.0; 5];
        dots(&rows, dim, &query, &mut out);
        for (r, o) in out.iter().enumerate() {
            let want = naive(&rows[r * dim..(r + 1) * dim], &query);
            assert!((*o as f64 - want).abs() < 1e-4, "row {r}");
        }
    }
}
