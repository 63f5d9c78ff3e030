//! Accuracy measurement on labeled photos, shared by the accuracy tests and the bench
//! binary so that the README's table and the asserted floors come from the same code.
//!
//! - Identification (dlib's `examples/johns`: one directory of photos per person):
//!   enrol each person's first photo, identify the others; and, for false accepts, hide
//!   each person in turn from the gallery and count their faces that still match.
//! - Verification ROC over every pair of photos (same person vs different people).
//! - Detection (dlib's `examples/faces/testing.xml`): recall and precision at IoU ≥ 0.3
//!   (its boxes are tight squares, YuNet's taller rectangles include the forehead).

use std::path::{Path, PathBuf};

use crate::{detect::iou, embed::Embedding, Recognizer};

/// A labeled photo and the embedding of its subject.
#[derive(Debug, Clone)]
pub struct LabeledFace {
    /// The person.
    pub person: String,
    /// The photo.
    pub path: PathBuf,
    /// Embedding of the face nearest the photo's centre (the subject, in LFW crops).
    pub embedding: Embedding,
}

/// Photos of `dir/<person>/*.jpg`, sorted by person then file name.
pub fn labeled_photos(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut people: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    people.sort_by_key(|e| e.file_name());
    for person in people {
        let name = person.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(person.path())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    Ok(out)
}

/// Embeds the subject of each labeled photo; returns the faces and the photos in which
/// no face was found.
pub fn embed_labeled(
    recognizer: &Recognizer,
    photos: &[(String, PathBuf)],
) -> (Vec<LabeledFace>, Vec<PathBuf>) {
    let mut faces = Vec::new();
    let mut missed = Vec::new();
    for (person, path) in photos {
        let Ok(bytes) = std::fs::read(path) else {
            missed.push(path.clone());
            continue;
        };
        let (w, h) = crate::image::read_header(&bytes)
            .map(|h| (h.width as f32, h.height as f32))
            .unwrap_or((0.0, 0.0));
        let analyzed = recognizer.analyze(&bytes).unwrap_or_default();
        let centre = |b: &[f32; 4]| {
            let (cx, cy) = (b[0] + b[2] / 2.0 - w / 2.0, b[1] + b[3] / 2.0 - h / 2.0);
            cx * cx + cy * cy
        };
        match analyzed
            .into_iter()
            .min_by(|a, b| centre(&a.detection.bbox).total_cmp(&centre(&b.detection.bbox)))
        {
            Some(face) => faces.push(LabeledFace {
                person: person.clone(),
                path: path.clone(),
                embedding: face.embedding,
            }),
            None => missed.push(path.clone()),
        }
    }
    (faces, missed)
}

fn dot(a: &Embedding, b: &Embedding) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Similarities of every pair of faces, split into same-person and different-person.
pub fn pair_scores(faces: &[LabeledFace]) -> (Vec<f32>, Vec<f32>) {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, a) in faces.iter().enumerate() {
        for b in &faces[i + 1..] {
            let s = dot(&a.embedding, &b.embedding);
            if a.person == b.person {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    (genuine, impostor)
}

/// One point of a ROC: at `threshold`, the share of genuine pairs accepted and of
/// impostor pairs accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// Similarity threshold (accept when ≥).
    pub threshold: f32,
    /// True accept rate.
    pub tar: f64,
    /// False accept rate.
    pub far: f64,
}

/// The ROC at the given thresholds.
pub fn roc(genuine: &[f32], impostor: &[f32], thresholds: &[f32]) -> Vec<RocPoint> {
    let rate =
        |v: &[f32], t: f32| v.iter().filter(|&&s| s >= t).count() as f64 / v.len().max(1) as f64;
    thresholds
        .iter()
        .map(|&t| RocPoint {
            threshold: t,
            tar: rate(genuine, t),
            far: rate(impostor, t),
        })
        .collect()
}

/// Results of the enrol-one, identify-the-rest protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentificationReport {
    /// People enrolled (one photo each).
    pub people: usize,
    /// Query faces (every photo but the enrolled ones).
    pub queries: usize,
    /// Queries whose most similar enrolled face is their own person's (no threshold).
    pub top1_correct: usize,
    /// Queries identified correctly with the threshold applied.
    pub correct_at_threshold: usize,
    /// Queries of people hidden from the gallery (each person in turn).
    pub impostor_queries: usize,
    /// Of those, how many matched someone anyway at the threshold.
    pub false_accepts: usize,
}

impl IdentificationReport {
    /// Top-1 accuracy without a threshold.
    pub fn top1(&self) -> f64 {
        self.top1_correct as f64 / self.queries.max(1) as f64
    }
    /// Accuracy with the threshold (a correct person above it).
    pub fn accuracy_at_threshold(&self) -> f64 {
        self.correct_at_threshold as f64 / self.queries.max(1) as f64
    }
    /// False-accept rate on people not enrolled.
    pub fn false_accept_rate(&self) -> f64 {
        self.false_accepts as f64 / self.impostor_queries.max(1) as f64
    }
}

/// Enrols each person's first face, identifies the rest at `threshold`; then hides each
/// person in turn and counts their faces matched to someone else.
pub fn identification(faces: &[LabeledFace], threshold: f32) -> IdentificationReport {
    let mut enrolled: Vec<&LabeledFace> = Vec::new();
    for f in faces {
        if !enrolled.iter().any(|e| e.person == f.person) {
            enrolled.push(f);
        }
    }
    let best = |q: &LabeledFace, hide: Option<&str>| {
        enrolled
            .iter()
            .filter(|e| Some(e.person.as_str()) != hide)
            .map(|e| (e.person.as_str(), dot(&e.embedding, &q.embedding)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut report = IdentificationReport {
        people: enrolled.len(),
        queries: 0,
        top1_correct: 0,
        correct_at_threshold: 0,
        impostor_queries: 0,
        false_accepts: 0,
    };
    for q in faces {
        if !enrolled.iter().any(|e| std::ptr::eq(*e, q)) {
            report.queries += 1;
            if let Some((person, s)) = best(q, None) {
                if person == q.person {
                    report.top1_correct += 1;
                    if s >= threshold {
                        report.correct_at_threshold += 1;
                    }
                }
            }
        }
        report.impostor_queries += 1;
        if let Some((_, s)) = best(q, Some(&q.person)) {
            if s >= threshold {
                report.false_accepts += 1;
            }
        }
    }
    report
}

/// An image of a detection dataset and its true face boxes (left, top, width, height).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatedImage {
    /// File name relative to the XML file.
    pub file: String,
    /// Face boxes.
    pub boxes: Vec<[f32; 4]>,
}

/// Reads dlib's imglab XML (`<image file='..'><box top left width height/>...`).
pub fn parse_imglab(xml: &str) -> Vec<AnnotatedImage> {
    fn attr(tag: &str, name: &str) -> Option<String> {
        for quote in ['\'', '"'] {
            let key = format!("{name}={quote}");
            if let Some(start) = tag.find(&key) {
                let rest = &tag[start + key.len()..];
                return rest.find(quote).map(|end| rest[..end].to_string());
            }
        }
        None
    }
    let mut images: Vec<AnnotatedImage> = Vec::new();
    for tag in xml.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        if let Some(rest) = tag.strip_prefix("image ") {
            if let Some(file) = attr(rest, "file") {
                images.push(AnnotatedImage {
                    file,
                    boxes: Vec::new(),
                });
            }
        } else if let Some(rest) = tag.strip_prefix("box ") {
            let num = |n| attr(rest, n).and_then(|v| v.parse::<f32>().ok());
            if let (Some(img), Some(t), Some(l), Some(w), Some(h)) = (
                images.last_mut(),
                num("top"),
                num("left"),
                num("width"),
                num("height"),
            ) {
                if attr(rest, "ignore").as_deref() != Some("1") {
                    img.boxes.push([l, t, w, h]);
                }
            }
        }
    }
    images
}

/// Detection counts over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectionCounts {
    /// Predicted boxes matching a true box.
    pub true_positives: usize,
    /// Predicted boxes matching none.
    pub false_positives: usize,
    /// True boxes no prediction matched.
    pub false_negatives: usize,
}

impl DetectionCounts {
    /// Share of true faces found.
    pub fn recall(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_negatives).max(1) as f64
    }
    /// Share of detections that are true faces.
    pub fn precision(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_positives).max(1) as f64
    }

    /// Adds one image: predictions (strongest first) greedily matched to the unmatched
    /// true box of highest IoU, if that IoU is at least `min_iou`.
    pub fn add(&mut self, predicted: &[[f32; 4]], truth: &[[f32; 4]], min_iou: f32) {
        let mut used = vec![false; truth.len()];
        for p in predicted {
            let best = truth
                .iter()
                .enumerate()
                .filter(|(i, _)| !used[*i])
                .map(|(i, t)| (i, iou(p, t)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, v)) if v >= min_iou => {
                    used[i] = true;
                    self.true_positives += 1;
                }
                _ => self.false_positives += 1,
            }
        }
        self.false_negatives += used.iter().filter(|u| !**u).count();
    }
}

/// Runs the detector over an imglab dataset.
pub fn detection(
    recognizer: &Recognizer,
    xml_path: &Path,
    min_iou: f32,
) -> std::io::Result<DetectionCounts> {
    let xml = std::fs::read_to_string(xml_path)?;
    let dir = xml_path.parent().unwrap_or(Path::new("."));
    let mut counts = DetectionCounts::default();
    for image in parse_imglab(&xml) {
        let bytes = std::fs::read(dir.join(&image.file))?;
        let predicted: Vec<[f32; 4]> = recognizer
            .detect(&bytes)
            .unwrap_or_default()
            .iter()
            .map(|d| d.bbox)
            .collect();
        counts.add(&predicted, &image.boxes, min_iou);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imglab_boxes() {
        let xml = "<images><image file='a.jpg' width='5'>\
            <box top='1' left='2' width='3' height='4'/>\
            <box top='9' left='9' width='9' height='9' ignore='1'/></image>\
            <image file=\"b.png\"></image></images>";
        let parsed = parse_imglab(xml);
        assert_eq!(
            parsed,
            vec![
                AnnotatedImage {
                    file: "a.jpg".into(),
                    boxes: vec![[2.0, 1.0, 3.0, 4.0]]
                },
                AnnotatedImage {
                    file: "b.png".into(),
                    boxes: vec![]
                }
            ]
        );
    }

    #[test]
    fn counts_matches_misses_and_spurious_boxes() {
        let mut c = DetectionCounts::default();
        c.add(
            &[[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 5.0, 5.0]],
            &[[1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 10.0, 10.0]],
            0.5,
        );
        assert_eq!(
            c,
            DetectionCounts {
                true_positives: 1,
                false_positives: 1,
                false_negatives: 1
            }
        );
        assert_eq!((c.recall(), c.precision()), (0.5, 0.5));
    }

    #[test]
    fn roc_counts_scores_at_or_above_threshold() {
        let r = roc(&[0.9, 0.5, 0.2], &[0.4, 0.1], &[0.4]);
        assert_eq!(r[0].tar, 2.0 / 3.0);
        assert_eq!(r[0].far, 0.5);
    }
}
