//! Face embedding with SFace: align-crop by the five landmarks, then a 128-d feature.
//!
//! The crop is the similarity transform (rotation, uniform scale, translation) that best
//! maps the detected landmarks onto the standard 112 × 112 ArcFace template, in the
//! least-squares sense; SFace was trained on crops made that way.

use opencv::{
    core::{self, Mat, Scalar, Size},
    dnn, imgcodecs, imgproc,
    prelude::*,
};

use crate::{
    detect::Detection,
    engine::{EngineError, Network},
    ImageError,
};

/// Length of an embedding.
pub const EMBEDDING_DIM: usize = 128;

/// A unit-length face embedding; the cosine similarity of two is their dot product.
pub type Embedding = [f32; EMBEDDING_DIM];

/// Where the five landmarks sit in a 112 × 112 aligned face (ArcFace's template).
const TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

const CROP: i32 = 112;

/// Where a detector's face box usually sits in the aligned crop: left, top, width,
/// height (the template's eyes are about a third of the way down such a box).
const FACE_IN_CROP: [f32; 4] = [16.0, 22.0, 80.0, 90.0];

/// Landmarks for a face known only by its box (drawn by a person): the template's
/// points placed where they usually are inside a face box.
pub fn template_landmarks(bbox: [f32; 4]) -> [[f32; 2]; 5] {
    let [cx, cy, cw, ch] = FACE_IN_CROP;
    let scale_x = bbox[2] / cw;
    let scale_y = bbox[3] / ch;
    TEMPLATE.map(|[x, y]| [bbox[0] + (x - cx) * scale_x, bbox[1] + (y - cy) * scale_y])
}

/// The SFace network.
pub struct Embedder {
    net: Network,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("engine", &self.net.engine())
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// An embedder running `net`, an SFace network from
    /// [`Models::embedder`](crate::engine::Models::embedder).
    pub fn new(net: Network) -> Self {
        Self { net }
    }

    /// The normalised embedding of the face `face` found in the BGR `image`.
    pub fn embed(&mut self, image: &Mat, face: &Detection) -> Result<Embedding, ImageError> {
        let aligned = align(image, face).map_err(ImageError::from_cv)?;
        self.embed_aligned(&aligned)
            .map_err(ImageError::from_engine)
    }

    /// The embedding of `face`, and the aligned face it was computed from as a JPEG
    /// (112 × 112, for people to look at). Only enrolment wants the picture, so the
    /// encoding stays out of [`Embedder::embed`].
    pub fn embed_with_crop(
        &mut self,
        image: &Mat,
        face: &Detection,
    ) -> Result<(Embedding, Vec<u8>), ImageError> {
        let aligned = align(image, face).map_err(ImageError::from_cv)?;
        let embedding = self
            .embed_aligned(&aligned)
            .map_err(ImageError::from_engine)?;
        let crop = encode_jpeg(&aligned).map_err(ImageError::from_cv)?;
        Ok((embedding, crop))
    }

    fn embed_aligned(&mut self, aligned: &Mat) -> Result<Embedding, EngineError> {
        // SFace expects RGB, 0..255.
        let blob = dnn::blob_from_image(
            aligned,
            1.0,
            Size::new(CROP, CROP),
            Scalar::all(0.0),
            true,
            false,
            core::CV_32F,
        )?;
        let outputs = self.net.run(&blob)?;
        let values = outputs.first().map(Vec::as_slice).unwrap_or_default();
        let mut embedding = [0.0f32; EMBEDDING_DIM];
        if values.len() != EMBEDDING_DIM {
            return Err(EngineError::Run(format!(
                "SFace produced {} values, expected {EMBEDDING_DIM}",
                values.len()
            )));
        }
        embedding.copy_from_slice(values);
        normalize(&mut embedding);
        Ok(embedding)
    }
}

/// The `CROP` × `CROP` BGR face: `image` warped so that the landmarks of `face` land on
/// the template.
fn align(image: &Mat, face: &Detection) -> opencv::Result<Mat> {
    let m = similarity_transform(&face.landmarks, &TEMPLATE);
    let transform = Mat::from_slice_2d(&[
        [m[0] as f64, m[1] as f64, m[2] as f64],
        [m[3] as f64, m[4] as f64, m[5] as f64],
    ])?;
    let mut aligned = Mat::default();
    imgproc::warp_affine(
        image,
        &mut aligned,
        &transform,
        Size::new(CROP, CROP),
        imgproc::INTER_LINEAR,
        core::BORDER_CONSTANT,
        Scalar::all(0.0),
    )?;
    Ok(aligned)
}

/// JPEG quality of stored face crops: small (a few kB at 112 × 112) and still clear.
const CROP_JPEG_QUALITY: i32 = 85;

/// `image` (BGR) as JPEG bytes.
fn encode_jpeg(image: &Mat) -> opencv::Result<Vec<u8>> {
    let mut buffer = core::Vector::<u8>::new();
    let params =
        core::Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY]);
    if !imgcodecs::imencode(".jpg", image, &mut buffer, &params)? {
        return Err(opencv::Error::new(
            core::StsError,
            "the JPEG encoder refused the face crop".to_string(),
        ));
    }
    Ok(buffer.to_vec())
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

/// The 2 × 3 matrix (row-major) of the least-squares similarity transform taking `src`
/// points to `dst` points: with centred points s, d it is
/// a = Σ s·d / Σ|s|², b = Σ s×d / Σ|s|², A = [[a, −b], [b, a]], t = mean(d) − A·mean(s).
pub fn similarity_transform(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> [f32; 6] {
    let mean = |p: &[[f32; 2]; 5]| {
        let (x, y) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        [x / 5.0, y / 5.0]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut norm, mut dot, mut cross) = (0.0f32, 0.0f32, 0.0f32);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        norm += sx * sx + sy * sy;
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
    }
    if norm <= f32::EPSILON {
        // Degenerate landmarks (all one point): just move them onto the template centre.
        return [1.0, 0.0, md[0] - ms[0], 0.0, 1.0, md[1] - ms[1]];
    }
    let (a, b) = (dot / norm, cross / norm);
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    [a, -b, tx, b, a, ty]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &[f32; 6], p: [f32; 2]) -> [f32; 2] {
        [
            m[0] * p[0] + m[1] * p[1] + m[2],
            m[3] * p[0] + m[4] * p[1] + m[5],
        ]
    }

    #[test]
    fn recovers_a_known_similarity() {
        // dst = 2·R(30°)·src + (5, −3)
        let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
        let truth = [2.0 * c, -2.0 * s, 5.0, 2.0 * s, 2.0 * c, -3.0];
        let src = [[1.0, 2.0], [4.0, 1.0], [3.0, 3.0], [0.0, 5.0], [6.0, 6.0]];
        let dst = src.map(|p| apply(&truth, p));
        let m = similarity_transform(&src, &dst);
        for (a, b) in m.iter().zip(truth) {
            assert!((a - b).abs() < 1e-4, "{m:?} vs {truth:?}");
        }
    }

    #[test]
    fn template_maps_onto_itself() {
        let m = similarity_transform(&TEMPLATE, &TEMPLATE);
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        for (a, b) in m.iter().zip(id) {
            assert!((a - b).abs() < 1e-3, "{m:?}");
        }
    }

    #[test]
    fn normalize_gives_unit_length_and_leaves_zero_alone() {
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0; 3];
        normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
