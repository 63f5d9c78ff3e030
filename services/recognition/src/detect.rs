//! Face detection with YuNet (2023mar), run by either [engine](crate::engine).
//!
//! OpenCV 4.6's `FaceDetectorYN` rejects this model, so the raw outputs are decoded
//! here. The network predicts, for every cell of three feature maps (strides 8, 16, 32),
//! a class score, an objectness score, a box and five landmarks:
//! - score = √(cls · obj), both clamped to [0, 1];
//! - box centre = (column + dx, row + dy) · stride; size = (e^dw, e^dh) · stride;
//! - landmark k = (column + kx, row + ky) · stride.
//!
//! Detection runs on a copy shrunk so the longest side is at most
//! [`DetectorOptions::max_side`] (faces found are the same, at a third of the cost for a
//! VGA image) and padded bottom/right to a multiple of 32, the largest stride.

use opencv::{
    core::{self, Mat, Scalar, Size},
    dnn, imgproc,
    prelude::*,
};

use crate::{
    engine::{EngineError, Network},
    ImageError,
};

/// A detected face, in pixels of the original image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Left, top, width, height.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corners (as seen in the
    /// image: "right eye" is the subject's right, on the image's left).
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence in [0, 1].
    pub score: f32,
}

/// Detector tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorOptions {
    /// Faces scoring below this are dropped.
    pub score_threshold: f32,
    /// Overlap (IoU) above which the weaker of two boxes is suppressed.
    pub nms_threshold: f32,
    /// The image is shrunk so its longest side is at most this before detection.
    pub max_side: i32,
    /// Most faces reported per image (the strongest are kept).
    pub max_faces: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            score_threshold: 0.6,
            nms_threshold: 0.3,
            max_side: 640,
            max_faces: 256,
        }
    }
}

const STRIDES: [i32; 3] = [8, 16, 32];

/// The YuNet network (its outputs loaded in the order decoding reads them: cls, obj,
/// bbox, kps, each for strides 8, 16, 32) and the tuning.
pub struct Detector {
    net: Network,
    options: DetectorOptions,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("engine", &self.net.engine())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector running `net`, a YuNet network from
    /// [`Models::detector`](crate::engine::Models::detector).
    pub fn new(net: Network, options: DetectorOptions) -> Self {
        Self { net, options }
    }

    /// The tuning in use.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Finds the faces in a BGR image, strongest first.
    pub fn detect(&mut self, image: &Mat) -> Result<Vec<Detection>, ImageError> {
        self.detect_inner(image).map_err(ImageError::from_engine)
    }

    /// Like [`Detector::detect`], keeping faces down to a score of 0.3: for a face a
    /// person drew, a weak detection still has usable landmarks.
    pub fn detect_all(&mut self, image: &Mat) -> Result<Vec<Detection>, ImageError> {
        let threshold = self.options.score_threshold;
        self.options.score_threshold = threshold.min(0.3);
        let found = self.detect_inner(image).map_err(ImageError::from_engine);
        self.options.score_threshold = threshold;
        found
    }

    fn detect_inner(&mut self, image: &Mat) -> Result<Vec<Detection>, EngineError> {
        let (cols, rows) = (image.cols(), image.rows());
        if cols <= 0 || rows <= 0 {
            return Ok(Vec::new());
        }
        let longest = cols.max(rows);
        let scale = if longest > self.options.max_side {
            self.options.max_side as f32 / longest as f32
        } else {
            1.0
        };
        let mut shrunk = Mat::default();
        let input = if scale < 1.0 {
            let size = Size::new(
                ((cols as f32 * scale).round() as i32).max(1),
                ((rows as f32 * scale).round() as i32).max(1),
            );
            imgproc::resize(image, &mut shrunk, size, 0.0, 0.0, imgproc::INTER_LINEAR)?;
            &shrunk
        } else {
            image
        };
        let (w, h) = (input.cols(), input.rows());
        let (pw, ph) = (round_up(w, 32), round_up(h, 32));
        // Pad only when a side is not already a multiple of the largest stride.
        let mut padded = Mat::default();
        let input = if (pw, ph) == (w, h) {
            input
        } else {
            core::copy_make_border(
                input,
                &mut padded,
                0,
                ph - h,
                0,
                pw - w,
                core::BORDER_CONSTANT,
                Scalar::all(0.0),
            )?;
            &padded
        };
        // YuNet takes raw BGR 0..255, no mean, no scaling.
        let blob = dnn::blob_from_image(
            input,
            1.0,
            Size::new(pw, ph),
            Scalar::all(0.0),
            false,
            false,
            core::CV_32F,
        )?;
        let outputs = self.net.run(&blob)?;
        if outputs.len() != 12 {
            return Err(EngineError::Run(format!(
                "YuNet produced {} outputs, expected 12",
                outputs.len()
            )));
        }

        let mut candidates = Vec::new();
        for (i, stride) in STRIDES.into_iter().enumerate() {
            decode_level(
                Level {
                    stride,
                    cols: pw / stride,
                    cls: &outputs[i],
                    obj: &outputs[3 + i],
                    bbox: &outputs[6 + i],
                    kps: &outputs[9 + i],
                },
                self.options.score_threshold,
                &mut candidates,
            );
        }
        let mut faces = non_max_suppression(candidates, self.options.nms_threshold);
        faces.truncate(self.options.max_faces);
        // Back to the original image's pixels, clipped to it.
        let inv = 1.0 / scale;
        for f in &mut faces {
            for v in &mut f.bbox {
                *v *= inv;
            }
            for p in &mut f.landmarks {
                p[0] *= inv;
                p[1] *= inv;
            }
            clip_box(&mut f.bbox, cols as f32, rows as f32);
        }
        Ok(faces)
    }
}

fn round_up(v: i32, m: i32) -> i32 {
    (v + m - 1) / m * m
}

/// One stride's raw outputs, flat, row-major over the feature map.
struct Level<'a> {
    stride: i32,
    cols: i32,
    cls: &'a [f32],
    obj: &'a [f32],
    bbox: &'a [f32],
    kps: &'a [f32],
}

fn decode_level(level: Level<'_>, threshold: f32, out: &mut Vec<Detection>) {
    let cells = level
        .cls
        .len()
        .min(level.obj.len())
        .min(level.bbox.len() / 4)
        .min(level.kps.len() / 10);
    let s = level.stride as f32;
    for idx in 0..cells {
        let score = (level.cls[idx].clamp(0.0, 1.0) * level.obj[idx].clamp(0.0, 1.0)).sqrt();
        // A NaN score (garbage in, garbage out of the network) compares false: skip it.
        if score.is_nan() || score < threshold {
            continue;
        }
        let col = (idx as i32 % level.cols) as f32;
        let row = (idx as i32 / level.cols) as f32;
        let b = &level.bbox[idx * 4..idx * 4 + 4];
        let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
        let (w, h) = (b[2].exp() * s, b[3].exp() * s);
        let k = &level.kps[idx * 10..idx * 10 + 10];
        let mut landmarks = [[0.0; 2]; 5];
        for (n, p) in landmarks.iter_mut().enumerate() {
            *p = [(col + k[2 * n]) * s, (row + k[2 * n + 1]) * s];
        }
        let bbox = [cx - w / 2.0, cy - h / 2.0, w, h];
        // exp() of a wild regression output overflows to infinity: not a face.
        if !bbox
            .iter()
            .chain(landmarks.iter().flatten())
            .all(|v| v.is_finite())
        {
            continue;
        }
        out.push(Detection {
            bbox,
            landmarks,
            score,
        });
    }
}

/// Intersection over union of two left/top/width/height boxes: the same measure the
/// database uses to tell a re-detected face from a new one.
pub use facewire_storage::faces::iou;

/// Greedy NMS: strongest first, dropping boxes overlapping a kept one above `threshold`.
fn non_max_suppression(mut candidates: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for c in candidates {
        if kept.iter().all(|k| iou(&k.bbox, &c.bbox) <= threshold) {
            kept.push(c);
        }
    }
    kept
}

fn clip_box(b: &mut [f32; 4], width: f32, height: f32) {
    let x1 = b[0].clamp(0.0, width);
    let y1 = b[1].clamp(0.0, height);
    let x2 = (b[0] + b[2]).clamp(0.0, width);
    let y2 = (b[1] + b[3]).clamp(0.0, height);
    *b = [x1, y1, x2 - x1, y2 - y1];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, w: f32, score: f32) -> Detection {
        Detection {
            bbox: [x, y, w, w],
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 5.0, 5.0]), 0.0);
        let third = iou(&a, &[5.0, 0.0, 10.0, 10.0]);
        assert!((third - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_strongest_of_overlapping_boxes() {
        let kept = non_max_suppression(
            vec![
                det(0.0, 0.0, 10.0, 0.7),
                det(1.0, 1.0, 10.0, 0.9),
                det(50.0, 50.0, 10.0, 0.8),
            ],
            0.3,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }

    #[test]
    fn decodes_cell_offsets_with_exponential_sizes() {
        // A 2-column map at stride 8; cell 3 is row 1, column 1.
        let mut cls = vec![0.0; 4];
        let mut obj = vec![0.0; 4];
        cls[3] = 0.81;
        obj[3] = 1.0;
        let mut bbox = vec![0.0; 16];
        bbox[12..16].copy_from_slice(&[0.5, 0.5, 0.0, 2f32.ln()]);
        let mut kps = vec![0.0; 40];
        kps[30..32].copy_from_slice(&[0.25, 0.75]);
        let mut out = Vec::new();
        decode_level(
            Level {
                stride: 8,
                cols: 2,
                cls: &cls,
                obj: &obj,
                bbox: &bbox,
                kps: &kps,
            },
            0.5,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre (12, 12), size 8 × 16
        assert_eq!(d.bbox, [8.0, 4.0, 8.0, 16.0]);
        assert_eq!(d.landmarks[0], [10.0, 14.0]);
    }

    #[test]
    fn nan_scores_and_infinite_boxes_are_dropped() {
        let cls = vec![f32::NAN, 1.0];
        let obj = vec![1.0, 1.0];
        let mut bbox = vec![0.0; 8];
        bbox[6] = 200.0; // e^200 overflows f32
        let kps = vec![0.0; 20];
        let mut out = Vec::new();
        decode_level(
            Level {
                stride: 8,
                cols: 2,
                cls: &cls,
                obj: &obj,
                bbox: &bbox,
                kps: &kps,
            },
            0.5,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn boxes_are_clipped_to_the_image() {
        let mut b = [-5.0, 10.0, 20.0, 100.0];
        clip_box(&mut b, 100.0, 50.0);
        assert_eq!(b, [0.0, 10.0, 15.0, 40.0]);
    }
}
