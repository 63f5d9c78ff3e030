//! [`Recognizer`]: image bytes in, faces with names out. Pure computation — no network,
//! no database — so it is tested directly and shared by the gRPC service and the CLI.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
};

use opencv::core::Mat;

use crate::{
    detect::{Detection, Detector, DetectorOptions},
    embed::{Embedder, Embedding},
    engine::{Engine, EngineOptions, Models},
    gallery::{BestMatch, Gallery},
    image::{decode, DecodeBudget, ImageLimits},
    ImageError, RecognitionError,
};

pub use crate::engine::{DETECTOR_MODEL, EMBEDDER_MODEL};

/// The default cosine similarity above which a face is taken to be the gallery person:
/// chosen from the ROC measured on the dlib "johns" photos (see the README).
pub const DEFAULT_MATCH_THRESHOLD: f32 = 0.45;

/// How to build a [`Recognizer`].
#[derive(Debug, Clone)]
pub struct RecognizerOptions {
    /// Where the models are and which engine runs them.
    pub engine: EngineOptions,
    /// Detector tuning.
    pub detector: DetectorOptions,
    /// Limits applied before decoding.
    pub limits: ImageLimits,
    /// Cosine similarity at or above which a face is identified.
    pub match_threshold: f32,
    /// Independent network instances, so that many images are analysed at once.
    pub workers: usize,
}

impl RecognizerOptions {
    /// Defaults with the given model directory.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            engine: EngineOptions {
                model_dir: Some(model_dir.into()),
                ..EngineOptions::default()
            },
            detector: DetectorOptions::default(),
            limits: ImageLimits::default(),
            match_threshold: DEFAULT_MATCH_THRESHOLD,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A face found in an image, with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedFace {
    /// Where it is.
    pub detection: Detection,
    /// Who it looks like, as a unit vector.
    pub embedding: Embedding,
}

/// The one face of an enrolment image: what [`AnalyzedFace`] has, plus the aligned face
/// as a JPEG so people can see what was enrolled.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrolmentFace {
    /// Where it is.
    pub detection: Detection,
    /// Who it looks like, as a unit vector.
    pub embedding: Embedding,
    /// The 112 × 112 aligned face the embedding was computed from, JPEG-encoded.
    pub crop_jpeg: Vec<u8>,
}

/// The shortest side, in pixels, a drawn face box may have.
pub const MIN_DRAWN_FACE: f32 = 16.0;

/// A face found in an image, matched against the gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizedFace {
    /// Where it is.
    pub detection: Detection,
    /// The enrolled person, when the best similarity reaches the threshold.
    pub person: Option<String>,
    /// That person's storage id.
    pub person_id: Option<i64>,
    /// Similarity to the best gallery face (0 when the gallery is empty).
    pub best_similarity: f32,
    /// Who it looks like, as a unit vector (stored, so it can be matched again later).
    pub embedding: Embedding,
    /// The aligned face, as a small JPEG.
    pub crop_jpeg: Vec<u8>,
}

struct Worker {
    detector: Detector,
    embedder: Embedder,
}

/// Detection, embedding and gallery lookup; cheap to share (`Arc`), safe to call from
/// many threads (each call takes one of `workers` network instances).
pub struct Recognizer {
    engines: Vec<Mutex<Worker>>,
    models: Models,
    next: AtomicUsize,
    gallery: RwLock<Arc<Gallery>>,
    limits: ImageLimits,
    decode_budget: DecodeBudget,
    match_threshold: f32,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("workers", &self.engines.len())
            .field("engine", &self.models.engine)
            .field("limits", &self.limits)
            .field("match_threshold", &self.match_threshold)
            .finish_non_exhaustive()
    }
}

impl Recognizer {
    /// Loads the models (`workers` copies) with an empty gallery.
    pub fn load(options: &RecognizerOptions) -> Result<Self, RecognitionError> {
        if !(-1.0..=1.0).contains(&options.match_threshold) {
            return Err(RecognitionError::Config(format!(
                "match threshold {} is not a cosine similarity in [-1, 1]",
                options.match_threshold
            )));
        }
        let models = Models::resolve(&options.engine)?;
        if let Some(reason) = &models.fallback_reason {
            tracing::warn!(%reason, "ONNX Runtime unavailable; running the networks on OpenCV");
        }
        let mut engines = Vec::new();
        for _ in 0..options.workers.max(1) {
            engines.push(Mutex::new(Worker {
                detector: Detector::new(models.detector()?, options.detector),
                embedder: Embedder::new(models.embedder()?),
            }));
        }
        tracing::info!(
            engine = %models.engine,
            models = %models.dir.display(),
            workers = engines.len(),
            threads = models.threads,
            "face networks loaded"
        );
        Ok(Self {
            engines,
            models,
            next: AtomicUsize::new(0),
            gallery: RwLock::new(Arc::new(Gallery::default())),
            limits: options.limits,
            decode_budget: DecodeBudget::new(&options.limits),
            match_threshold: options.match_threshold,
        })
    }

    /// The engine running the networks.
    pub fn engine(&self) -> Engine {
        self.models.engine
    }

    /// Where the models were found and how they run.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// The similarity threshold for a match.
    pub fn match_threshold(&self) -> f32 {
        self.match_threshold
    }

    /// The image limits in force.
    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// The decoded bytes this process may hold at once: callers that decode on request
    /// (the gRPC service) take a share before calling [`recognize`](Self::recognize).
    pub fn decode_budget(&self) -> &DecodeBudget {
        &self.decode_budget
    }

    /// The current gallery snapshot.
    pub fn gallery(&self) -> Arc<Gallery> {
        self.gallery
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the gallery snapshot; calls in flight finish with the old one.
    pub fn set_gallery(&self, gallery: Gallery) {
        *self
            .gallery
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(gallery);
    }

    /// Decodes `bytes` and finds and embeds every face, strongest first.
    pub fn analyze(&self, bytes: &[u8]) -> Result<Vec<AnalyzedFace>, ImageError> {
        let image = decode(bytes, &self.limits)?;
        self.analyze_image(&image)
    }

    /// Finds and embeds every face in a decoded BGR image.
    pub fn analyze_image(&self, image: &Mat) -> Result<Vec<AnalyzedFace>, ImageError> {
        self.with_engine(|engine| {
            let detections = engine.detector.detect(image)?;
            detections
                .into_iter()
                .map(|detection| {
                    Ok(AnalyzedFace {
                        embedding: engine.embedder.embed(image, &detection)?,
                        detection,
                    })
                })
                .collect()
        })
    }

    /// Decodes `bytes` and finds every face without embedding them.
    pub fn detect(&self, bytes: &[u8]) -> Result<Vec<Detection>, ImageError> {
        let image = decode(bytes, &self.limits)?;
        self.with_engine(|engine| engine.detector.detect(&image))
    }

    /// Finds every face in a decoded BGR image without embedding them.
    pub fn detect_image(&self, image: &Mat) -> Result<Vec<Detection>, ImageError> {
        self.with_engine(|engine| engine.detector.detect(image))
    }

    /// The embedding of one detected face of a decoded BGR image.
    pub fn embed_face(&self, image: &Mat, face: &Detection) -> Result<Embedding, ImageError> {
        self.with_engine(|engine| engine.embedder.embed(image, face))
    }

    /// Finds every face in `bytes` and names the ones the gallery knows; each face comes
    /// with its embedding and aligned crop, so it can be stored as a record.
    pub fn recognize(&self, bytes: &[u8]) -> Result<Vec<RecognizedFace>, ImageError> {
        let image = decode(bytes, &self.limits)?;
        let faces = self.with_engine(|engine| {
            let detections = engine.detector.detect(&image)?;
            detections
                .into_iter()
                .map(|detection| {
                    let (embedding, crop) = engine.embedder.embed_with_crop(&image, &detection)?;
                    Ok((detection, embedding, crop))
                })
                .collect::<Result<Vec<_>, ImageError>>()
        })?;
        let gallery = self.gallery();
        Ok(faces
            .into_iter()
            .map(|(detection, embedding, crop_jpeg)| {
                let (matched, best_similarity) = self.identify_in(&gallery, &embedding, &[]);
                RecognizedFace {
                    detection,
                    person: matched.as_ref().map(|m| m.0.clone()),
                    person_id: matched.map(|m| m.1),
                    best_similarity,
                    embedding,
                    crop_jpeg,
                }
            })
            .collect())
    }

    /// Embeds a face a person drew: the box must lie inside the image and be at least
    /// [`MIN_DRAWN_FACE`] pixels on its shorter side. Landmarks are placed where the
    /// alignment template expects them inside the box, since the detector missed it.
    pub fn drawn_face(&self, bytes: &[u8], bbox: [f32; 4]) -> Result<EnrolmentFace, ImageError> {
        let image = decode(bytes, &self.limits)?;
        let (w, h) = {
            use opencv::prelude::MatTraitConst;
            (image.cols() as f32, image.rows() as f32)
        };
        let [x, y, bw, bh] = bbox;
        if !(x >= 0.0 && y >= 0.0 && bw.is_finite() && bh.is_finite() && x + bw <= w && y + bh <= h)
        {
            return Err(ImageError::Drawn(format!(
                "the box ({x}, {y}, {bw} x {bh}) is not inside the {w} x {h} image"
            )));
        }
        if bw.min(bh) < MIN_DRAWN_FACE {
            return Err(ImageError::Drawn(format!(
                "the box is {bw} x {bh} pixels; a face must be at least {MIN_DRAWN_FACE} on each side"
            )));
        }
        self.with_engine(|engine| {
            // A face the detector scored below its threshold, or found with a box a
            // person adjusted, still has landmarks: use the detection that overlaps
            // the drawn box most. Otherwise place them where faces usually have them.
            let found = engine.detector.detect_all(&image)?;
            let detection = found
                .into_iter()
                .map(|d| (crate::detect::iou(&d.bbox, &bbox), d))
                .filter(|(overlap, _)| *overlap >= 0.3)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, d)| Detection { bbox, ..d })
                .unwrap_or(Detection {
                    bbox,
                    landmarks: crate::embed::template_landmarks(bbox),
                    score: 0.0,
                });
            let (embedding, crop_jpeg) = engine.embedder.embed_with_crop(&image, &detection)?;
            Ok(EnrolmentFace {
                detection,
                embedding,
                crop_jpeg,
            })
        })
    }
    /// The single face of an enrolment image, with its aligned crop; any other count is
    /// an error saying how many were found.
    pub fn enrolment_face(&self, bytes: &[u8]) -> Result<EnrolmentFace, ImageError> {
        let image = decode(bytes, &self.limits)?;
        self.with_engine(|engine| {
            let mut detections = engine.detector.detect(&image)?;
            if detections.len() != 1 {
                return Err(ImageError::FaceCount(detections.len()));
            }
            let detection = detections.remove(0);
            let (embedding, crop_jpeg) = engine.embedder.embed_with_crop(&image, &detection)?;
            Ok(EnrolmentFace {
                detection,
                embedding,
                crop_jpeg,
            })
        })
    }

    /// The person `embedding` belongs to (if any reaches the threshold) and the best
    /// similarity in the current gallery.
    pub fn identify(&self, embedding: &Embedding) -> (Option<String>, f32) {
        let (matched, similarity) = self.identify_in(&self.gallery(), embedding, &[]);
        (matched.map(|m| m.0), similarity)
    }

    /// The person (name and id) `embedding` belongs to, if any reaches the threshold,
    /// never one of `excluded`; and the best similarity.
    pub fn identify_in(
        &self,
        gallery: &Gallery,
        embedding: &Embedding,
        excluded: &[i64],
    ) -> (Option<(String, i64)>, f32) {
        match gallery.best_match_excluding(embedding, excluded) {
            Some(BestMatch {
                person,
                person_id,
                similarity,
                ..
            }) => (
                (similarity >= self.match_threshold).then_some((person, person_id)),
                similarity,
            ),
            None => (None, 0.0),
        }
    }

    /// Runs `f` on a free worker, or waits for one.
    fn with_engine<T>(&self, f: impl FnOnce(&mut Worker) -> T) -> T {
        let n = self.engines.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(mut engine) = self.engines[(start + i) % n].try_lock() {
                return f(&mut engine);
            }
        }
        // A panic inside OpenCV code leaves the network usable: recover the guard.
        let mut engine = self.engines[start % n]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut engine)
    }
}
