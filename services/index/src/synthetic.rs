//! Synthetic face embeddings with the structure of real ones, for tests and benches.
//!
//! Identities are random unit vectors. A face of an identity is
//! `normalise(identity + noise)`, the noise Gaussian with a per-face scale (some photos are
//! sharper than others). The scales are derived from the wanted same-person similarity, so
//! the default mimics SFace: two faces of one person ≈ 0.62 ± 0.10, of different people
//! ≈ 0.00 ± 0.09 (random directions in 128 dimensions).
//!
//! Everything is a pure function of the seed and an index — face `i` is the same vector
//! whichever order faces are asked for in, so a million faces can be streamed without being
//! stored, and a bench and a test see the same data.

/// What to generate.
#[derive(Debug, Clone)]
pub struct Params {
    /// Vector dimension.
    pub dimensions: usize,
    /// How many distinct people.
    pub identities: usize,
    /// Wanted mean cosine similarity of two faces of the same person.
    pub same_person_mean: f32,
    /// Wanted standard deviation of that similarity.
    pub same_person_sd: f32,
    /// Everything is determined by this.
    pub seed: u64,
}

impl Params {
    /// SFace-like embeddings: 128 dimensions, same person 0.62 ± 0.10.
    pub fn sface_like(identities: usize, seed: u64) -> Self {
        Params {
            dimensions: 128,
            identities,
            same_person_mean: 0.62,
            same_person_sd: 0.10,
            seed,
        }
    }
}

/// Generates faces on demand; holds only the identity vectors.
#[derive(Debug, Clone)]
pub struct FaceGenerator {
    params: Params,
    identities: Vec<f32>,
    /// Median noise norm relative to the (unit) identity.
    noise: f32,
    /// Standard deviation of the log of each face's noise scale.
    noise_spread: f32,
}

impl FaceGenerator {
    /// Draws the identities.
    pub fn new(params: Params) -> Self {
        assert!(params.identities > 0 && params.dimensions > 0);
        assert!(params.same_person_mean > 0.0 && params.same_person_mean < 1.0);
        let d = params.dimensions;
        let mut identities = vec![0.0f32; params.identities * d];
        for (p, row) in identities.chunks_exact_mut(d).enumerate() {
            let mut rng = Rng::new(params.seed, Stream::Identity, p as u64);
            fill_unit_gaussian_direction(&mut rng, row);
        }
        let (noise, noise_spread) = noise_for(params.same_person_mean, params.same_person_sd, d);
        FaceGenerator {
            params,
            identities,
            noise,
            noise_spread,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The person face `i` belongs to: faces cycle through the identities, so every prefix
    /// of `n * identities` faces holds `n` faces of each person.
    pub fn identity_of(&self, i: usize) -> usize {
        i % self.params.identities
    }

    /// Face `i` of the gallery, unit length.
    pub fn face(&self, i: usize) -> Vec<f32> {
        self.face_of(self.identity_of(i), Stream::Face, i as u64)
    }

    /// Query `j`: a new photo (not among the faces) of person [`Self::query_identity`]`(j)`.
    pub fn query(&self, j: usize) -> Vec<f32> {
        self.face_of(self.query_identity(j), Stream::Query, j as u64)
    }

    /// The person query `j` shows.
    pub fn query_identity(&self, j: usize) -> usize {
        let mut rng = Rng::new(self.params.seed, Stream::QueryIdentity, j as u64);
        (rng.next_u64() % self.params.identities as u64) as usize
    }

    /// A face of nobody in the gallery (a stranger), unit length.
    pub fn stranger(&self, j: usize) -> Vec<f32> {
        let mut rng = Rng::new(self.params.seed, Stream::Stranger, j as u64);
        let mut v = vec![0.0; self.params.dimensions];
        fill_unit_gaussian_direction(&mut rng, &mut v);
        v
    }

    fn face_of(&self, identity: usize, stream: Stream, index: u64) -> Vec<f32> {
        let d = self.params.dimensions;
        let mut rng = Rng::new(self.params.seed, stream, index);
        let scale = self.noise * (self.noise_spread * rng.gaussian()).exp() / (d as f32).sqrt();
        let base = &self.identities[identity * d..(identity + 1) * d];
        let mut v: Vec<f32> = base.iter().map(|x| x + scale * rng.gaussian()).collect();
        normalise(&mut v);
        v
    }
}

/// Noise (median relative norm `r0`, log spread `s`) giving the wanted same-person similarity.
///
/// A face's noise norm relative to its identity is `r = r0 · exp(s·Z)`. Two faces of one
/// person with norms `r1`, `r2` have similarity ≈ `f(r1) f(r2)`, `f(r) = 1/sqrt(1 + r²)`, plus a
/// term from the noise directions (identity·noise and noise·noise dot products, sd ∝ 1/√d).
/// Both moments are integrated numerically and `(r0, s)` found by bisection.
fn noise_for(mean: f32, sd: f32, dimensions: usize) -> (f32, f32) {
    let (mean, sd, d) = (mean as f64, sd as f64, dimensions as f64);
    // E[f(r)^p] for r = r0 exp(s Z), Z standard normal, by the midpoint rule on [-6, 6].
    let moment = |r0: f64, s: f64, p: i32| {
        let steps = 600;
        let h = 12.0 / steps as f64;
        (0..steps)
            .map(|i| {
                let z = -6.0 + (i as f64 + 0.5) * h;
                let r = r0 * (s * z).exp();
                let weight = (-z * z / 2.0).exp() / std::f64::consts::TAU.sqrt() * h;
                weight * (1.0 + r * r).powf(-0.5 * p as f64)
            })
            .sum::<f64>()
    };
    let bisect = |mut lo: f64, mut hi: f64, too_high: &dyn Fn(f64) -> bool| {
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if too_high(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        0.5 * (lo + hi)
    };
    // For a spread s: the r0 whose E[f]² is the wanted mean (E[f] falls as r0 grows).
    let r0_for = |s: f64| bisect(0.0, 20.0, &|r0| moment(r0, s, 1).powi(2) < mean);
    let sd_for = |s: f64| {
        let r0 = r0_for(s);
        let (m1, m2) = (moment(r0, s, 1), moment(r0, s, 2));
        let scale_var = m2 * m2 - m1.powi(4);
        // Directional part at the typical norm: identity·noise enters scaled by r²/(1+r²).
        let r2 = r0 * r0;
        let g = 1.0 / (1.0 + r2);
        let direction_var = g * g * (2.0 * r2 * (r2 * g).powi(2) + r2 * r2) / d;
        (scale_var + direction_var).sqrt()
    };
    let s = bisect(0.0, 3.0, &|s| sd_for(s) > sd);
    (r0_for(s) as f32, s as f32)
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in v {
        *x /= norm;
    }
}

fn fill_unit_gaussian_direction(rng: &mut Rng, v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = rng.gaussian();
    }
    normalise(v);
}

/// Independent random streams, so faces and queries never share draws.
#[derive(Clone, Copy)]
enum Stream {
    Identity = 1,
    Face = 2,
    Query = 3,
    QueryIdentity = 4,
    Stranger = 5,
}

/// SplitMix64: tiny, seedable, and good enough for simulation; keyed by (seed, stream, index)
/// so any vector can be drawn on its own.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: Stream, index: u64) -> Self {
        let mut rng = Rng(seed ^ (stream as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        rng.0 ^= rng.next_u64() ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; one of the pair is enough here).
    fn gaussian(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn mean_sd(xs: &[f32]) -> (f32, f32) {
        let n = xs.len() as f32;
        let mean = xs.iter().sum::<f32>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn similarities_look_like_sface() {
        let generator = FaceGenerator::new(Params::sface_like(200, 1));
        let faces: Vec<Vec<f32>> = (0..2000).map(|i| generator.face(i)).collect();
        let mut same = Vec::new();
        let mut different = Vec::new();
        for i in 0..2000 {
            for j in (i + 1)..2000 {
                if generator.identity_of(i) == generator.identity_of(j) {
                    same.push(dot(&faces[i], &faces[j]));
                } else if (i + j) % 37 == 0 {
                    different.push(dot(&faces[i], &faces[j]));
                }
            }
        }
        let (same_mean, same_sd) = mean_sd(&same);
        let (diff_mean, diff_sd) = mean_sd(&different);
        assert!(
            (same_mean - 0.62).abs() < 0.01,
            "same-person mean {same_mean}"
        );
        assert!((same_sd - 0.10).abs() < 0.01, "same-person sd {same_sd}");
        assert!(diff_mean.abs() < 0.01, "different-person mean {diff_mean}");
        assert!(
            (diff_sd - 0.088).abs() < 0.01,
            "different-person sd {diff_sd}"
        );
    }

    #[test]
    fn deterministic_and_unit_length() {
        let a = FaceGenerator::new(Params::sface_like(50, 9));
        let b = FaceGenerator::new(Params::sface_like(50, 9));
        let c = FaceGenerator::new(Params::sface_like(50, 10));
        assert_eq!(a.face(17), b.face(17));
        assert_eq!(a.query(3), b.query(3));
        assert_ne!(a.face(17), c.face(17));
        assert_ne!(a.face(17), a.query(17));
        for v in [a.face(0), a.query(0), a.stranger(0)] {
            assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn a_query_is_closest_to_its_own_person() {
        let generator = FaceGenerator::new(Params::sface_like(100, 3));
        let mut right = 0;
        for j in 0..100 {
            let q = generator.query(j);
            let best = (0..1000)
                .max_by(|&a, &b| {
                    dot(&q, &generator.face(a)).total_cmp(&dot(&q, &generator.face(b)))
                })
                .unwrap();
            right += usize::from(generator.identity_of(best) == generator.query_identity(j));
        }
        assert!(right >= 97, "{right}/100 queries found their person");
    }
}
