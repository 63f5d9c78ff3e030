//! Measures the recognition service's figures for the README: accuracy on dlib's
//! labeled photos, per-image latency and throughput, gallery scaling, and memory — for
//! each inference engine, ending with a side-by-side summary.
//!
//! ```text
//! cargo run --release -p facewire-recognition --bin recognition-bench
//! cargo run --release -p facewire-recognition --bin recognition-bench -- --engines opencv --only latency
//! ```
//! Needs the models (scripts/setup) and the test data (scripts/fetch-testdata).
//! Prints numbers; asserts nothing about time.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use facewire_index::{
    synthetic::{FaceGenerator, Params},
    AutoConfig, VectorIndex,
};
use facewire_recognition::{
    evaluation, EngineKind, Gallery, GalleryFace, Recognizer, RecognizerOptions,
    DEFAULT_MATCH_THRESHOLD, EMBEDDING_DIM,
};
use opencv::{core::Vector, imgcodecs, imgproc, prelude::*};

#[derive(Debug, Parser)]
#[command(about = "facewire recognition benchmarks")]
struct Args {
    /// Directory with the ONNX models (and the ONNX Runtime library).
    #[arg(long, env = "FACEWIRE_MODEL_DIR", default_value = "models")]
    model_dir: PathBuf,
    /// Engines to measure, one after the other in the same run.
    #[arg(long, value_delimiter = ',', default_values = ["onnxruntime", "opencv"])]
    engines: Vec<EngineKind>,
    /// dlib test data (johns/, faces/), from scripts/fetch-testdata.
    #[arg(long, default_value = "testdata/dlib")]
    data: PathBuf,
    /// Timed recognitions per measurement.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Longest side detection runs at (the service's `--detection-max-side`).
    #[arg(long, default_value_t = facewire_recognition::DetectorOptions::default().max_side)]
    max_side: i32,
    /// Parts to run: accuracy, small-faces, latency, stages, scaling, grouping,
    /// grouping-pass (with `--grouping-pass-sizes`), memory
    /// (default: all);
    /// `crops` (only when named) writes the calibration faces of the int8 trial.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Gallery sizes (faces) the scaling part measures; the first is the full-image baseline.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 10_000, 100_000, 1_000_000])]
    scaling_sizes: Vec<usize>,
    /// The scaling part's HNSW candidates per insert (`ef_construction`; default: the index's).
    #[arg(long)]
    expansion_add: Option<usize>,
    /// The scaling part's HNSW candidates per search (`ef`; default: the index's).
    #[arg(long)]
    expansion_search: Option<usize>,
    /// Build the scaling part's gallery as a replica holds it: every face in the face
    /// index, this share of them named (people picked whole), the gallery searching the
    /// face index for its faces once they are a large enough share of it
    /// (`Gallery::share`). Without it the gallery is built on its own.
    /// Several shares (`1,0.34,0.25`) share one face index build per size.
    #[arg(long, value_delimiter = ',')]
    scaling_named_share: Vec<f64>,
    /// Face counts the grouping part groups from scratch, one face at a time.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    grouping_sizes: Vec<usize>,
    /// Face counts the grouping part groups from scratch as one backlog: the index built in
    /// bulk, every neighbour list on every core, then the decisions.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    grouping_bulk_sizes: Vec<usize>,
    /// Face counts the grouping part runs the service's own backlog pass on: the face
    /// index built first (as at start-up), then `FaceIndex::neighbourhoods` (the join
    /// reading the index's vectors in place), the decisions, and peak memory against the
    /// earlier way (a copy of every vector beside the index).
    #[arg(long, value_delimiter = ',')]
    grouping_pass_sizes: Vec<usize>,
    /// The backlog join's faces per cell (default: the join's).
    #[arg(long)]
    join_cell_size: Option<usize>,
    /// The backlog join's cells per face (default: the join's).
    #[arg(long)]
    join_probes: Option<usize>,
    /// The backlog join's independent sets of cells (default: the join's).
    #[arg(long)]
    join_pivot_sets: Option<usize>,
    /// The backlog join's rounds of neighbourhood refinement (default: the join's).
    #[arg(long)]
    join_refine_rounds: Option<usize>,
    /// After grouping a backlog, build the graph and time new faces and the snapshot;
    /// `false` stops after the grouping (the join's trials).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    grouping_then_graph: bool,
    /// The grouping part's HNSW links per node (`M`; default: the face index's).
    #[arg(long)]
    grouping_m: Option<usize>,
    /// The grouping part's HNSW candidates per insert (default: the face index's).
    #[arg(long)]
    grouping_expansion_add: Option<usize>,
    /// The grouping part's HNSW candidates per search (default: the face index's).
    #[arg(long)]
    grouping_expansion_search: Option<usize>,
    /// Where `--only crops` writes the aligned faces of the group photos (binary PPM), the
    /// calibration set of scripts/quantize-trial.py.
    #[arg(long, default_value = "target/aligned-crops")]
    crops_dir: PathBuf,
}

/// One engine's headline figures, for the closing side-by-side table.
#[derive(Debug, Default)]
struct Summary {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    throughput: Option<f64>,
    latency_mode: Option<f64>,
    latency_mode_p50_ms: Option<f64>,
    top1: Option<String>,
    false_accepts: Option<String>,
    detection_recall: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wants = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    println!(
        "machine: {} logical CPUs; OpenCV {}; load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        opencv::core::get_version_string()?,
        load_average()
    );
    let image = one_face_vga(&args)?;
    let mut summaries = Vec::new();
    for &kind in &args.engines {
        let mut options = RecognizerOptions::new(&args.model_dir);
        options.engine.kind = kind;
        // One network instance for latency; throughput is measured with one per core too.
        options.workers = 1;
        options.detector.max_side = args.max_side;
        let recognizer = Arc::new(Recognizer::load(&options)?);
        println!(
            "\n# engine: {} (models in {})",
            recognizer.engine(),
            recognizer.models().dir.display()
        );
        let mut summary = Summary::default();
        if wants("accuracy") {
            accuracy(&recognizer, &args, &mut summary)?;
        }
        if wants("small-faces") {
            small_faces(&recognizer, &args)?;
        }
        if wants("latency") {
            latency(&recognizer, &options, &image, args.iterations, &mut summary)?;
        }
        if wants("stages") {
            stages(&args, &recognizer, &image)?;
        }
        if wants("scaling") {
            scaling(&recognizer, &image, &args)?;
        }
        if wants("memory") {
            memory(&recognizer)?;
        }
        // Writes files rather than measuring: only when asked for by name.
        if args.only.iter().any(|p| p == "crops") {
            crops(&recognizer, &args)?;
        }
        summaries.push((recognizer.engine(), summary));
    }
    // Grouping uses no engine (synthetic vectors): once, however many engines are named.
    if wants("grouping") {
        grouping(&args);
    }
    if wants("grouping-pass") {
        for &n in &args.grouping_pass_sizes {
            grouping_pass(
                n,
                facewire_recognition::grouping::GroupingConfig::default(),
                &grouping_tuning(&args),
            );
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n# engines side by side (640 × 480 JPEG, one face)");
    println!(
        "| engine | p50 (1 thread) | p99 | p50 ({cores} threads) | images/s ({cores} workers × 1 thread) | images/s (1 worker × {cores} threads) | top-1 | false accepts at {DEFAULT_MATCH_THRESHOLD} | detection recall (testing.xml, IoU ≥ 0.5) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1} ms"));
    let rate = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    for (engine, s) in &summaries {
        println!(
            "| {engine} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(s.p50_ms),
            ms(s.p99_ms),
            ms(s.latency_mode_p50_ms),
            rate(s.throughput),
            rate(s.latency_mode),
            text(&s.top1),
            text(&s.false_accepts),
            text(&s.detection_recall)
        );
        println!(
            "engine engine={engine} p50_ms={} p50_all_threads_ms={} throughput={} top1={} false_accepts={} detection_recall={}",
            s.p50_ms.map_or("nan".into(), |v| format!("{v:.2}")),
            s.latency_mode_p50_ms.map_or("nan".into(), |v| format!("{v:.2}")),
            s.throughput.map_or("nan".into(), |v| format!("{v:.1}")),
            text(&s.top1).replace(' ', ""),
            text(&s.false_accepts).replace(' ', ""),
            text(&s.detection_recall).replace(' ', "")
        );
    }
    Ok(())
}

fn accuracy(recognizer: &Recognizer, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    let photos = evaluation::labeled_photos(&args.data.join("johns"))?;
    let (faces, missed) = evaluation::embed_labeled(recognizer, &photos);
    println!(
        "\n## accuracy (dlib johns: {} photos, {} people; no face found in {})",
        photos.len(),
        faces
            .iter()
            .map(|f| &f.person)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        missed.len()
    );
    let (genuine, impostor) = evaluation::pair_scores(&faces);
    let max_impostor = impostor.iter().copied().fold(f32::MIN, f32::max);
    let min_genuine = genuine.iter().copied().fold(f32::MAX, f32::min);
    println!(
        "pairs: {} same-person (min similarity {min_genuine:.3}), {} different (max {max_impostor:.3})",
        genuine.len(),
        impostor.len()
    );
    println!("| threshold | TAR (same person accepted) | FAR (different people accepted) |");
    println!("|---|---|---|");
    let thresholds = [0.20, 0.25, 0.30, 0.363, 0.40, 0.45, 0.50, 0.55, 0.60];
    for p in evaluation::roc(&genuine, &impostor, &thresholds) {
        println!(
            "| {:.3} | {:.1}% | {:.2}% |",
            p.threshold,
            p.tar * 100.0,
            p.far * 100.0
        );
    }
    println!("\nidentification (enrol each person's first photo, identify the rest):");
    println!("| threshold | top-1 (no threshold) | correct at threshold | false accepts of non-enrolled faces |");
    println!("|---|---|---|---|");
    for t in [0.30, 0.363, 0.40, 0.45] {
        let r = evaluation::identification(&faces, t);
        if t == DEFAULT_MATCH_THRESHOLD {
            summary.top1 = Some(format!("{}/{}", r.top1_correct, r.queries));
            summary.false_accepts = Some(format!("{}/{}", r.false_accepts, r.impostor_queries));
        }
        println!(
            "| {t:.3} | {}/{} = {:.1}% | {}/{} = {:.1}% | {}/{} = {:.1}% |",
            r.top1_correct,
            r.queries,
            r.top1() * 100.0,
            r.correct_at_threshold,
            r.queries,
            r.accuracy_at_threshold() * 100.0,
            r.false_accepts,
            r.impostor_queries,
            r.false_accept_rate() * 100.0
        );
    }
    for xml in ["testing.xml", "training.xml"] {
        let path = args.data.join("faces").join(xml);
        for iou in [0.3f32, 0.5] {
            let c = evaluation::detection(recognizer, &path, iou)?;
            if xml == "testing.xml" && iou == 0.5 {
                summary.detection_recall = Some(format!(
                    "{}/{}",
                    c.true_positives,
                    c.true_positives + c.false_negatives
                ));
            }
            println!(
                "detection on faces/{xml} (IoU ≥ {iou}): recall {}/{} = {:.1}%, precision {}/{} = {:.1}%",
                c.true_positives,
                c.true_positives + c.false_negatives,
                c.recall() * 100.0,
                c.true_positives,
                c.true_positives + c.false_positives,
                c.precision() * 100.0
            );
        }
    }
    Ok(())
}

/// Detection and identification against face size: each johns photo shrunk so its face
/// is `w` pixels wide and pasted into a grey 640 × 480 frame (the latency image's size),
/// then recognised with the bench's `--max-side` against a gallery of each person's first
/// photo at full size. Shows the smallest face the detector's input size finds, and the
/// smallest SFace still names. Replaces `recognizer`'s gallery.
fn small_faces(recognizer: &Recognizer, args: &Args) -> anyhow::Result<()> {
    use opencv::core::{Rect, Scalar, Size, CV_8UC3};
    let photos = evaluation::labeled_photos(&args.data.join("johns"))?;
    let mut subjects = Vec::new();
    let mut enrolled = Vec::new();
    for (person, path) in &photos {
        let src = imgcodecs::imread(path, imgcodecs::IMREAD_COLOR)?;
        let Some(face) = (if src.empty() {
            None
        } else {
            recognizer.analyze_image(&src)?.into_iter().next()
        }) else {
            continue;
        };
        if enrolled.iter().any(|g: &GalleryFace| &g.person == person) {
            subjects.push((person, src, face.detection));
        } else {
            enrolled.push(GalleryFace {
                face_id: enrolled.len() as i64,
                person_id: enrolled.len() as i64,
                person: person.clone(),
                embedding: face.embedding.to_vec(),
            });
        }
    }
    recognizer.set_gallery(Gallery::build(enrolled, 1).0);
    let widths = [12.0f32, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0];
    println!(
        "\n## small faces ({} johns photos shrunk into a 640 × 480 frame; max side {})",
        subjects.len(),
        args.max_side
    );
    println!(
        "| face width | detected | named correctly (threshold {:.2}) |",
        recognizer.match_threshold()
    );
    println!("|---|---|---|");
    for w in widths {
        let (mut found, mut named) = (0, 0);
        for (person, src, face) in &subjects {
            let scale = w / face.bbox[2];
            let size = Size::new(
                ((src.cols() as f32 * scale).round() as i32).clamp(1, 640),
                ((src.rows() as f32 * scale).round() as i32).clamp(1, 480),
            );
            let mut small = Mat::default();
            imgproc::resize(src, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)?;
            let mut frame = Mat::new_rows_cols_with_default(480, 640, CV_8UC3, Scalar::all(128.0))?;
            small.copy_to(&mut Mat::roi_mut(
                &mut frame,
                Rect::new(0, 0, size.width, size.height),
            )?)?;
            let expected = face.bbox.map(|v| v * scale);
            let hit = recognizer
                .analyze_image(&frame)?
                .into_iter()
                .find(|f| facewire_recognition::detect::iou(&f.detection.bbox, &expected) >= 0.3);
            if let Some(hit) = hit {
                found += 1;
                if recognizer.identify(&hit.embedding).0.as_deref() == Some(person.as_str()) {
                    named += 1;
                }
            }
        }
        let n = subjects.len();
        println!("| {w} px | {found}/{n} | {named}/{n} |");
    }
    Ok(())
}

/// A 640 × 480 JPEG with one face: dlib's Tom Cruise photo resized.
fn one_face_vga(args: &Args) -> anyhow::Result<Vec<u8>> {
    let path = args.data.join("faces/Tom_Cruise_avp_2014_4.jpg");
    let src = imgcodecs::imread(&path, imgcodecs::IMREAD_COLOR)?;
    anyhow::ensure!(!src.empty(), "cannot read {}", path.display());
    let mut vga = Mat::default();
    imgproc::resize(
        &src,
        &mut vga,
        opencv::core::Size::new(640, 480),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )?;
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(".jpg", &vga, &mut buf, &Vector::new())?;
    Ok(buf.to_vec())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `iterations` full recognitions (decode + detect + embed + lookup) one after
/// another; returns sorted latencies.
fn time_recognize(
    recognizer: &Recognizer,
    image: &[u8],
    iterations: usize,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..10 {
        recognizer.recognize(image)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let faces = recognizer.recognize(image)?;
        times.push(start.elapsed());
        anyhow::ensure!(faces.len() == 1, "expected one face, found {}", faces.len());
    }
    times.sort();
    Ok(times)
}

/// Writes the aligned face of every face found in the group photos (`faces/*.jpg`) as a
/// binary PPM: RGB, 112 × 112, the picture SFace is fed.
fn crops(recognizer: &Recognizer, args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.crops_dir)?;
    let mut photos: Vec<PathBuf> = std::fs::read_dir(args.data.join("faces"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    let mut written = 0;
    for photo in &photos {
        let stem = photo
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        for (i, face) in recognizer
            .recognize(&std::fs::read(photo)?)?
            .iter()
            .enumerate()
        {
            let crop = imgcodecs::imdecode(
                &Vector::from_slice(&face.crop_jpeg),
                imgcodecs::IMREAD_COLOR,
            )?;
            let path = args.crops_dir.join(format!("{stem}-{i}.ppm"));
            let mut ppm = Vector::<u8>::new();
            imgcodecs::imencode(".ppm", &crop, &mut ppm, &Vector::new())?;
            std::fs::write(&path, ppm.as_slice())?;
            written += 1;
        }
    }
    println!(
        "\n## crops: {written} aligned faces from {} photos in {}",
        photos.len(),
        args.crops_dir.display()
    );
    Ok(())
}

fn latency(
    recognizer: &Recognizer,
    options: &RecognizerOptions,
    image: &[u8],
    iterations: usize,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    println!("\n## per image (640 × 480 JPEG, one face; decode + detect + embed + lookup, 10 people enrolled)");
    recognizer.set_gallery(synthetic_gallery(10));
    let cpu_before = cpu_seconds();
    let times = time_recognize(recognizer, image, iterations)?;
    let cpu = cpu_seconds() - cpu_before;
    let total: Duration = times.iter().sum();
    summary.p50_ms = Some(percentile(&times, 0.5));
    summary.p99_ms = Some(percentile(&times, 0.99));
    println!(
        "sequential, 1 worker: p50 {:.1} ms, p99 {:.1} ms, {:.1} images/s; CPU time {:.1} ms per image (all threads); load average {}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        iterations as f64 / total.as_secs_f64(),
        // includes the 10 warm-up runs
        cpu * 1000.0 / (iterations + 10) as f64,
        load_average()
    );
    // Throughput with one network instance and one caller per core, as the service runs
    // by default, then the other way to spend the cores: one worker whose inferences use
    // all of them (ONNX Runtime's intra-op threads; OpenCV always uses its whole pool).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (workers, threads) in [(cores, 1), (1, cores)] {
        let mut parallel = options.clone();
        parallel.workers = workers;
        parallel.engine.threads = threads;
        let shared = Arc::new(Recognizer::load(&parallel)?);
        shared.set_gallery(synthetic_gallery(10));
        for _ in 0..5 {
            shared.recognize(image)?;
        }
        let callers = workers;
        let per_caller = iterations / callers;
        if threads > 1 {
            // The latency mode's own per-image figure: one image at a time, every core on it.
            let times = time_recognize(&shared, image, iterations)?;
            summary.latency_mode_p50_ms = Some(percentile(&times, 0.5));
            println!(
                "sequential, 1 worker × {threads} threads: p50 {:.1} ms, p99 {:.1} ms",
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
        let cpu_before = cpu_seconds();
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..callers {
                let shared = &shared;
                s.spawn(move || {
                    for _ in 0..per_caller {
                        shared.recognize(image).expect("recognize");
                    }
                });
            }
        });
        let elapsed = start.elapsed().as_secs_f64();
        let done = (per_caller * callers) as f64;
        let rate = done / elapsed;
        if threads == 1 {
            summary.throughput = Some(rate);
        } else {
            summary.latency_mode = Some(rate);
        }
        println!(
            "{callers} callers, {workers} workers × {threads} threads: {rate:.1} images/s, {:.1} ms per image ({:.1} ms CPU per image)",
            elapsed * 1000.0 / done * callers as f64,
            (cpu_seconds() - cpu_before) * 1000.0 / done
        );
    }
    Ok(())
}

/// Where the time of one image goes: decode, detect (YuNet) and embed (align + SFace),
/// each timed alone on the recognizer's single worker.
fn stages(args: &Args, recognizer: &Recognizer, image: &[u8]) -> anyhow::Result<()> {
    use facewire_recognition::ImageLimits;
    println!(
        "\n## where the time goes (640 × 480, one face; median of {} runs)",
        args.iterations
    );
    println!("| decode | detect (YuNet) | embed (align + SFace) |");
    println!("|---|---|---|");
    let limits = ImageLimits::default();
    let median = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        for _ in 0..5 {
            f()?;
        }
        let mut times = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed());
        }
        times.sort();
        Ok(percentile(&times, 0.5))
    };
    let decoded = facewire_recognition::image::decode(image, &limits)?;
    let face = recognizer
        .detect_image(&decoded)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no face in the latency image"))?;
    let decode = median(&mut || {
        facewire_recognition::image::decode(image, &limits)?;
        Ok(())
    })?;
    let detect = median(&mut || {
        recognizer.detect_image(&decoded)?;
        Ok(())
    })?;
    let embed = median(&mut || {
        recognizer.embed_face(&decoded, &face)?;
        Ok(())
    })?;
    println!("| {decode:.1} ms | {detect:.1} ms | {embed:.1} ms |");
    Ok(())
}

/// The seed of every synthetic gallery, so runs compare.
const SYNTHETIC_SEED: u64 = 42;

/// People in a synthetic gallery of `n` faces: ten faces each, as in the index's measurements
/// (1 000 000 faces = 100 000 people), but at least ten people (a 10-face gallery is ten
/// people with one face each).
fn synthetic_people(n: usize) -> usize {
    (n / 10).max(n.min(10)).max(1)
}

/// `n` SFace-like faces (`facewire_index::synthetic`: same person ≈ 0.62, different ≈ 0)
/// of [`synthetic_people`]`(n)` people.
fn synthetic_gallery(n: usize) -> Gallery {
    let generator = FaceGenerator::new(Params::sface_like(synthetic_people(n), SYNTHETIC_SEED));
    Gallery::build((0..n).map(|i| GalleryFace::synthetic(&generator, i)), 1).0
}

/// One row of the scaling table.
struct ScalingRow {
    faces: usize,
    people: usize,
    /// Share of the faces named, while the gallery is served from the face index.
    shared: Option<f64>,
    build: Duration,
    approximate: bool,
    lookup_p50_us: f64,
    lookup_p99_us: f64,
    recall_at_1: f64,
    /// Recall@1 over the queries of named people only (while shared).
    recall_named: Option<f64>,
    /// Lookup p50 over the queries of named people only (while shared).
    lookup_p50_named_us: Option<f64>,
    full_p50_ms: f64,
    full_p99_ms: f64,
    full_ratio: f64,
    rss_mib: f64,
    index_mib: f64,
}

/// Who is named at a share: every `stride`-th person, taken whole.
#[derive(Clone, Copy)]
struct Naming {
    stride: usize,
}

impl Naming {
    fn new(share: f64) -> Self {
        Naming {
            stride: (1.0 / share).round().max(1.0) as usize,
        }
    }

    fn names(&self, identity: usize) -> bool {
        identity.is_multiple_of(self.stride)
    }
}

/// Brute force's best face for each query, kept up to date while the faces stream by.
struct BruteForce<'q> {
    queries: &'q [[f32; EMBEDDING_DIM]],
    best: Vec<(i64, f32)>,
}

impl<'q> BruteForce<'q> {
    fn new(queries: &'q [[f32; EMBEDDING_DIM]]) -> Self {
        BruteForce {
            queries,
            best: vec![(-1, f32::NEG_INFINITY); queries.len()],
        }
    }

    fn note(&mut self, face: &GalleryFace) {
        for (best, query) in self.best.iter_mut().zip(self.queries) {
            let s = facewire_index::dot(&face.embedding, query);
            if s > best.1 {
                *best = (face.face_id, s);
            }
        }
    }
}

/// What [`time_lookups`] found: every query's time (sorted), recall@1 over all queries,
/// and recall@1 and the p50 over the queries it was asked to count apart.
struct Lookups {
    times: Vec<Duration>,
    recall: f64,
    counted_recall: f64,
    counted_p50_us: f64,
}

/// `best_match` timed for every query (after 50 untimed), and how many found brute
/// force's best face, over all queries and over those `counted` picks.
fn time_lookups(
    gallery: &Gallery,
    queries: &[[f32; EMBEDDING_DIM]],
    exact: &BruteForce,
    counted: impl Fn(usize) -> bool,
) -> Lookups {
    for query in queries.iter().take(50) {
        std::hint::black_box(gallery.best_match(query));
    }
    let mut times = Vec::with_capacity(queries.len());
    let mut counted_times = Vec::new();
    let (mut hits, mut counted_hits) = (0usize, 0usize);
    for (j, query) in queries.iter().enumerate() {
        let start = Instant::now();
        let found = std::hint::black_box(gallery.best_match(std::hint::black_box(query)));
        let took = start.elapsed();
        times.push(took);
        let hit = found.map(|m| m.face_id) == Some(exact.best[j].0);
        hits += usize::from(hit);
        if counted(j) {
            counted_times.push(took);
            counted_hits += usize::from(hit);
        }
    }
    times.sort();
    counted_times.sort();
    Lookups {
        recall: hits as f64 / queries.len().max(1) as f64,
        counted_recall: counted_hits as f64 / counted_times.len().max(1) as f64,
        counted_p50_us: if counted_times.is_empty() {
            f64::NAN
        } else {
            percentile(&counted_times, 0.5) * 1000.0
        },
        times,
    }
}

/// Gallery size against lookup time, recall and the whole request. Per size: the gallery is
/// built from synthetic faces streamed into [`Gallery::build_with`] (start-up time; making the
/// faces and the brute-force reference are not timed), then `best_match` is timed for 1 000
/// held-out faces of gallery people (new photos, not in the gallery), every one of them
/// checked against brute force over every face, and the bench image recognised with that
/// gallery installed.
///
/// With `--scaling-named-share` the faces go into one face index instead, as a replica
/// holds them, and each share in turn names that part of the people and builds a gallery
/// on it (served from the face index once the share is large enough); the face index is
/// built once per size for all of them.
fn scaling(recognizer: &Recognizer, image: &[u8], args: &Args) -> anyhow::Result<()> {
    const LOOKUPS: usize = 1_000;
    let mut config = AutoConfig::default();
    if let Some(ef) = args.expansion_add {
        config.hnsw.expansion_add = ef;
    }
    if let Some(ef) = args.expansion_search {
        config.hnsw.expansion_search = ef;
    }
    println!(
        "\n## gallery scaling (synthetic SFace-like faces, 10 a person; exact below {} faces, HNSW f16 M = {}, ef_construction = {}, ef = {}, {} build threads; load average {})",
        config.threshold,
        config.hnsw.connectivity,
        config.hnsw.expansion_add,
        config.hnsw.expansion_search,
        config.hnsw.threads,
        load_average()
    );
    let namings: Vec<Naming> = args
        .scaling_named_share
        .iter()
        .map(|&share| Naming::new(share))
        .collect();
    let mut rows = Vec::new();
    let mut base_p50 = None;
    for &n in &args.scaling_sizes {
        // Free the previous gallery first, so RSS is this size's.
        recognizer.set_gallery(Gallery::default());
        let people = synthetic_people(n);
        let generator = FaceGenerator::new(Params::sface_like(people, SYNTHETIC_SEED));
        let queries: Vec<[f32; EMBEDDING_DIM]> = (0..LOOKUPS)
            .map(|j| {
                generator
                    .query(j)
                    .try_into()
                    .expect("synthetic faces have the embedding's dimension")
            })
            .collect();
        let mut untimed = Duration::ZERO;
        eprintln!("scaling: building {n} faces ...");
        let start = Instant::now();
        if namings.is_empty() {
            let mut exact = BruteForce::new(&queries);
            let (gallery, skipped) = Gallery::build_with(
                (0..n).map(|i| {
                    let t = Instant::now();
                    let face = GalleryFace::synthetic(&generator, i);
                    exact.note(&face);
                    untimed += t.elapsed();
                    face
                }),
                1,
                config.clone(),
            );
            let build = start.elapsed().saturating_sub(untimed);
            // The generator's identity table (51 MiB at 100 000 people) is not recognition's.
            drop(generator);
            anyhow::ensure!(
                skipped == 0 && gallery.len() == n,
                "synthetic gallery incomplete"
            );
            let index_mib = gallery.matrix_bytes() as f64 / (1024.0 * 1024.0);
            let approximate = gallery.is_approximate();
            recognizer.set_gallery(gallery);
            eprintln!(
                "scaling: {n} faces built in {:.1} s; timing lookups ...",
                build.as_secs_f64()
            );
            let Lookups {
                times: lookups,
                recall,
                ..
            } = time_lookups(&recognizer.gallery(), &queries, &exact, |_| true);
            let times = time_recognize(recognizer, image, args.iterations)?;
            let full_p50_ms = percentile(&times, 0.5);
            rows.push(ScalingRow {
                faces: n,
                people,
                shared: None,
                build,
                approximate,
                lookup_p50_us: percentile(&lookups, 0.5) * 1000.0,
                lookup_p99_us: percentile(&lookups, 0.99) * 1000.0,
                recall_at_1: recall,
                recall_named: None,
                lookup_p50_named_us: None,
                full_p50_ms,
                full_p99_ms: percentile(&times, 0.99),
                full_ratio: full_p50_ms / *base_p50.get_or_insert(full_p50_ms),
                rss_mib: rss_kib().unwrap_or(0) as f64 / 1024.0,
                index_mib,
            });
        } else {
            // The face index first (the service loads it, or its snapshot, first): every
            // face's vector and what grouping knows of it, a page at a time; a face is
            // named (manually) at the first share that names its person.
            let mut exact: Vec<BruteForce> =
                namings.iter().map(|_| BruteForce::new(&queries)).collect();
            let faces = facewire_recognition::grouping::FaceIndex::with_index(
                facewire_recognition::grouping::GroupingConfig::default(),
                config.clone(),
            );
            let mut page = Vec::with_capacity(10_000);
            for i in 0..n {
                let t = Instant::now();
                let face = GalleryFace::synthetic(&generator, i);
                let identity = generator.identity_of(i);
                let mut named = false;
                for (naming, exact) in namings.iter().zip(exact.iter_mut()) {
                    if naming.names(identity) {
                        exact.note(&face);
                        named = true;
                    }
                }
                let mut indexed = grouping_face(
                    face.face_id,
                    named.then_some(face.person_id),
                    face.embedding,
                );
                indexed.assigned = indexed
                    .person_id
                    .map(|_| facewire_storage::Assigned::Manual);
                page.push(indexed);
                untimed += t.elapsed();
                if page.len() == 10_000 || i + 1 == n {
                    faces.apply_page(std::mem::take(&mut page));
                }
            }
            let build = start.elapsed().saturating_sub(untimed);
            eprintln!(
                "scaling: face index of {n} faces built in {:.1} s",
                build.as_secs_f64()
            );
            // The same graph searched for every face, not only a gallery's: what a filter
            // costs.
            let mut plain: Vec<Duration> = queries
                .iter()
                .map(|query| {
                    let start = Instant::now();
                    std::hint::black_box(
                        faces.vectors().search(std::hint::black_box(query), 1).ok(),
                    );
                    start.elapsed()
                })
                .collect();
            plain.sort();
            println!(
                "\nscaling: {n} faces: the face index searched unfiltered: p50 {:.1} µs, p99 {:.1} µs",
                percentile(&plain, 0.5) * 1000.0,
                percentile(&plain, 0.99) * 1000.0,
            );
            let query_identities: Vec<usize> =
                (0..LOOKUPS).map(|j| generator.query_identity(j)).collect();
            for (naming, exact) in namings.iter().zip(&exact) {
                recognizer.set_gallery(Gallery::default());
                let loaded = Instant::now();
                let gallery = Gallery::build_with(Vec::new(), 1, config.clone()).0;
                gallery.share(faces.vectors());
                let report = gallery.sync(
                    (0..n)
                        .filter(|&i| naming.names(generator.identity_of(i)))
                        .map(|i| GalleryFace::synthetic(&generator, i)),
                    1,
                );
                let members = (0..n)
                    .filter(|&i| naming.names(generator.identity_of(i)))
                    .count();
                anyhow::ensure!(
                    report.skipped == 0 && gallery.len() == members,
                    "synthetic gallery incomplete"
                );
                eprintln!(
                    "scaling: {n} faces, {members} named: gallery loaded in {:.1} s (making them included), serving {:?}, {} vectors of its own",
                    loaded.elapsed().as_secs_f64(),
                    gallery.serving(),
                    gallery.own_vectors()
                );
                let index_mib = (gallery.matrix_bytes() + faces.vectors().memory_bytes()) as f64
                    / (1024.0 * 1024.0);
                let approximate = gallery.is_approximate();
                recognizer.set_gallery(gallery);
                let Lookups {
                    times: lookups,
                    recall,
                    counted_recall: recall_named,
                    counted_p50_us: named_p50_us,
                } = time_lookups(&recognizer.gallery(), &queries, exact, |j| {
                    naming.names(query_identities[j])
                });
                let times = time_recognize(recognizer, image, args.iterations)?;
                let full_p50_ms = percentile(&times, 0.5);
                rows.push(ScalingRow {
                    faces: n,
                    people,
                    shared: Some(members as f64 / n as f64),
                    build,
                    approximate,
                    lookup_p50_us: percentile(&lookups, 0.5) * 1000.0,
                    lookup_p99_us: percentile(&lookups, 0.99) * 1000.0,
                    recall_at_1: recall,
                    recall_named: Some(recall_named),
                    lookup_p50_named_us: Some(named_p50_us),
                    full_p50_ms,
                    full_p99_ms: percentile(&times, 0.99),
                    full_ratio: full_p50_ms / *base_p50.get_or_insert(full_p50_ms),
                    rss_mib: rss_kib().unwrap_or(0) as f64 / 1024.0,
                    index_mib,
                });
            }
        }
        if let Some(row) = rows.last() {
            eprintln!(
                "scaling: {n} faces: lookup p50 {:.1} µs, recall@1 {:.3}, full image p50 {:.2} ms, RSS {:.0} MiB",
                row.lookup_p50_us, row.recall_at_1, row.full_p50_ms, row.rss_mib
            );
        }
    }
    recognizer.set_gallery(Gallery::default());
    println!(
        "| faces | people | named | index | start-up (build) s | lookup p50 µs | lookup p99 µs | recall@1 vs exact | named people's queries: lookup p50 µs | recall@1 | full image p50 ms | × first size | full image p99 ms | RSS MiB | index MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let or_dash =
        |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.3} | {} | {} | {:.2} | {:.3} | {:.2} | {:.0} | {:.1} |",
            r.faces,
            r.people,
            or_dash(r.shared, 3),
            if r.approximate { "HNSW" } else { "exact" },
            r.build.as_secs_f64(),
            r.lookup_p50_us,
            r.lookup_p99_us,
            r.recall_at_1,
            or_dash(r.lookup_p50_named_us, 1),
            or_dash(r.recall_named, 3),
            r.full_p50_ms,
            r.full_ratio,
            r.full_p99_ms,
            r.rss_mib,
            r.index_mib
        );
    }
    for r in &rows {
        let shared = match (r.shared, r.recall_named, r.lookup_p50_named_us) {
            (Some(share), Some(named), Some(p50)) => format!(
                " named_share={share:.3} lookup_p50_named_us={p50:.1} recall_at_1_named={named:.3}"
            ),
            _ => String::new(),
        };
        println!(
            "scaling faces={} lookup_p50_us={:.1} recall_at_1={:.3} full_image_ratio={:.3} rss_mib={:.0}{shared}",
            r.faces, r.lookup_p50_us, r.recall_at_1, r.full_ratio, r.rss_mib
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process so far (from /proc, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let utime: f64 = rest.get(11)?.parse().ok()?;
            let stime: f64 = rest.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A face of the grouping part: big and sharp enough to start a person.
fn grouping_face(
    id: i64,
    person_id: Option<i64>,
    embedding: Vec<f32>,
) -> facewire_storage::grouping::IndexedFace {
    facewire_storage::grouping::IndexedFace {
        id,
        person_id,
        assigned: person_id.map(|_| facewire_storage::Assigned::Auto),
        image_id: Some(id),
        size: 120.0,
        detection_score: Some(0.95),
        embedding,
        updated_at: 0,
    }
}

/// Every face's decision in id order from lists worked out ahead, recorded as the service
/// records them: how long it took, the next person id and each face's person.
fn decide_in_order(
    index: &facewire_recognition::grouping::FaceIndex,
    ids: &[i64],
    ahead: &facewire_recognition::grouping::Neighbourhoods,
) -> (Duration, i64, HashMap<i64, i64>) {
    let mut person_of = HashMap::new();
    let mut next_person = 0i64;
    let t = Instant::now();
    for &id in ids {
        let decision = index.decide_among(id, &[], Some(ahead));
        record_decision(index, id, decision, &mut next_person, &mut person_of);
    }
    (t.elapsed(), next_person, person_of)
}

/// Records a decision in the index (meta only: a face already indexed keeps its vector) and
/// in `person_of`, as the service does after its database write.
fn record_decision(
    index: &facewire_recognition::grouping::FaceIndex,
    id: i64,
    decision: facewire_recognition::grouping::Decision,
    next_person: &mut i64,
    person_of: &mut HashMap<i64, i64>,
) {
    use facewire_recognition::grouping::Decision;
    let members: Vec<(i64, i64)> = match decision {
        Decision::Join(person, _) => vec![(id, person)],
        Decision::Start(faces) => {
            *next_person += 1;
            faces.into_iter().map(|(f, _)| (f, *next_person)).collect()
        }
        Decision::Wait => Vec::new(),
    };
    index.apply_page(
        members
            .iter()
            .map(|&(f, p)| grouping_face(f, Some(p), Vec::new()))
            .collect(),
    );
    person_of.extend(members);
}

/// BCubed precision and recall of `person_of` over faces `0..n` against the generator's
/// identities (a face left alone is a cluster of its own); and the number of clusters.
fn bcubed(person_of: &HashMap<i64, i64>, generator: &FaceGenerator, n: usize) -> (f64, f64, usize) {
    let identity = |i: usize| generator.identity_of(i) as i64;
    let mut cluster_size: HashMap<i64, usize> = HashMap::new();
    let mut overlap: HashMap<(i64, i64), usize> = HashMap::new();
    for (&f, &p) in person_of.iter().filter(|(&f, _)| (f as usize) < n) {
        *cluster_size.entry(p).or_default() += 1;
        *overlap.entry((p, identity(f as usize))).or_default() += 1;
    }
    let mut identity_size: HashMap<i64, usize> = HashMap::new();
    for i in 0..n {
        *identity_size.entry(identity(i)).or_default() += 1;
    }
    let (mut precision, mut recall) = (0.0, 0.0);
    for i in 0..n {
        let who = identity(i);
        let (same, size) = match person_of.get(&(i as i64)) {
            Some(&p) => (overlap[&(p, who)], cluster_size[&p]),
            None => (1, 1),
        };
        precision += same as f64 / size as f64;
        recall += same as f64 / identity_size[&who] as f64;
    }
    (precision / n as f64, recall / n as f64, cluster_size.len())
}

/// Times `count` new faces (faces `n..n + count`: new photos of known people) grouped one
/// at a time with `n` already indexed: insert, decide, record. Sorted durations.
fn one_new_face_at_a_time(
    index: &facewire_recognition::grouping::FaceIndex,
    generator: &FaceGenerator,
    n: usize,
    count: usize,
    next_person: &mut i64,
    person_of: &mut HashMap<i64, i64>,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    let mut inserts = Vec::with_capacity(count);
    for i in n..n + count {
        let embedding = generator.face(i);
        let one = Instant::now();
        let id = i as i64;
        index.apply_page(vec![grouping_face(id, None, embedding)]);
        inserts.push(one.elapsed());
        let decision = index.decide(id, &[]);
        record_decision(index, id, decision, next_person, person_of);
        times.push(one.elapsed());
    }
    times.sort();
    inserts.sort();
    eprintln!(
        "grouping: one new face with {n} indexed: p50 {:.2} ms, of which the insert {:.2} ms",
        percentile(&times, 0.5),
        percentile(&inserts, 0.5)
    );
    times
}

/// The grouping part's face index tuning: the service's, changed by the `--grouping-*`
/// flags.
fn grouping_tuning(args: &Args) -> facewire_index::AutoConfig {
    let mut tuning = facewire_index::AutoConfig::default();
    if let Some(m) = args.grouping_m {
        tuning.hnsw.connectivity = m;
    }
    if let Some(ef) = args.grouping_expansion_add {
        tuning.hnsw.expansion_add = ef;
    }
    if let Some(ef) = args.grouping_expansion_search {
        tuning.hnsw.expansion_search = ef;
    }
    tuning
}

/// Groups `n` synthetic faces (10 a person) from scratch with the service's rule and
/// defaults, in two ways, with database writes left out (one conditional UPDATE per
/// decision in the service):
///
/// - one face at a time as they would arrive (`--grouping-sizes`): insert into the face
///   index, decide, record the decision in the index; the p50/p99 of one new face over the
///   last 1 000 (with nearly `n` already indexed);
/// - as one backlog (`--grouping-bulk-sizes`), what the service's retry pass does with a
///   library of faces nobody grouped yet: the index built in bulk (as at start-up), every
///   neighbour list searched on every core, then the decisions in id order; then 1 000 new
///   faces one at a time on top, for the one-new-face time at that size.
///
/// Prints BCubed quality against the synthetic identities, and one `grouping ...` /
/// `grouping_bulk ...` line per size for scripts.
fn grouping(args: &Args) {
    use facewire_recognition::grouping::{FaceIndex, GroupingConfig, Neighbourhoods};

    let config = GroupingConfig::default();
    let tuning = grouping_tuning(args);
    println!(
        "\nface index: HNSW M = {}, ef_construction = {}, ef = {}",
        tuning.hnsw.connectivity, tuning.hnsw.expansion_add, tuning.hnsw.expansion_search
    );
    println!(
        "\n## grouping from scratch, one face at a time (synthetic SFace-like faces, 10 a person; min_faces {}, min_similarity {}; database writes left out; load average {})",
        config.min_faces,
        config.min_similarity,
        load_average()
    );
    println!("| faces | total | per face (mean) | one new face p50 | p99 | BCubed precision | BCubed recall | suggested people |");
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &args.grouping_sizes {
        let generator =
            FaceGenerator::new(Params::sface_like(synthetic_people(n), SYNTHETIC_SEED + 1));
        let index = FaceIndex::with_index(config, tuning.clone());
        let mut person_of: HashMap<i64, i64> = HashMap::new();
        let mut next_person = 0i64;
        let mut last = Vec::with_capacity(1_000);
        let mut untimed = Duration::ZERO;
        eprintln!("grouping: {n} faces ...");
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let embedding = generator.face(i);
            untimed += t.elapsed();
            let one = Instant::now();
            let id = i as i64;
            index.apply_page(vec![grouping_face(id, None, embedding)]);
            let decision = index.decide(id, &[]);
            record_decision(&index, id, decision, &mut next_person, &mut person_of);
            if i + 1_000 >= n {
                last.push(one.elapsed());
            }
            if (i + 1) % 100_000 == 0 {
                eprintln!(
                    "grouping: {} faces in {:.0} s",
                    i + 1,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        let total = start.elapsed().saturating_sub(untimed);
        last.sort();
        let (precision, recall, clusters) = bcubed(&person_of, &generator, n);
        let p50 = percentile(&last, 0.5);
        let p99 = percentile(&last, 0.99);
        println!(
            "| {n} | {:.1} s | {:.2} ms | {p50:.2} ms | {p99:.2} ms | {precision:.3} | {recall:.3} | {clusters} |",
            total.as_secs_f64(),
            total.as_secs_f64() * 1000.0 / n as f64,
        );
        println!(
            "grouping faces={n} total_s={:.1} one_face_p50_ms={p50:.3} one_face_p99_ms={p99:.3} bcubed_precision={precision:.3} bcubed_recall={recall:.3}",
            total.as_secs_f64()
        );
    }

    if args.grouping_bulk_sizes.is_empty() {
        return;
    }
    println!(
        "\n## grouping from scratch as one backlog (same data and rule; {} threads; load average {})",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    );
    println!("| faces | neighbour lists (join) | decisions | grouping total | then: graph build (start-up) | one new face p50 | p99 | BCubed precision | BCubed recall | suggested people | RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.grouping_bulk_sizes {
        let generator =
            FaceGenerator::new(Params::sface_like(synthetic_people(n), SYNTHETIC_SEED + 1));
        let index = FaceIndex::with_index(config, tuning.clone());
        eprintln!("grouping (backlog): {n} faces ...");
        // Grouping from scratch needs no graph: the faces (generated untimed, as reading
        // them from the database is not grouping), one similarity join over them, then the
        // decisions in id order, exactly as the service's retry pass does with its lists.
        let ids: Vec<i64> = (0..n as i64).collect();
        let mut vectors = Vec::with_capacity(n * facewire_recognition::EMBEDDING_DIM);
        for i in 0..n {
            vectors.extend(generator.face(i));
        }
        index.apply_page(
            ids.iter()
                .map(|&id| grouping_face(id, None, Vec::new()))
                .collect(),
        );
        let t = Instant::now();
        let mut join = facewire_index::join::JoinConfig::default();
        join.cell_size = args.join_cell_size.unwrap_or(join.cell_size);
        join.probes = args.join_probes.unwrap_or(join.probes);
        join.refine_rounds = args.join_refine_rounds.unwrap_or(join.refine_rounds);
        join.pivot_sets = args.join_pivot_sets.unwrap_or(join.pivot_sets);
        let ahead = Neighbourhoods::joined_with(
            &ids,
            &facewire_index::join::Dense::new(&vectors, facewire_recognition::EMBEDDING_DIM),
            config.min_similarity,
            &join,
        );
        let lists = t.elapsed();
        eprintln!(
            "grouping (backlog): {} neighbour lists in {:.0} s",
            ahead.len(),
            lists.as_secs_f64()
        );
        let (decide, mut next_person, mut person_of) = decide_in_order(&index, &ids, &ahead);
        drop(ahead);
        // Quality before the slow graph build, so a run stopped there still tells it.
        let (precision, recall, clusters) = bcubed(&person_of, &generator, n);
        eprintln!(
            "grouping (backlog): decided in {:.1} s; grouping took {:.0} s; BCubed precision {precision:.3}, recall {recall:.3}, {clusters} suggested people",
            decide.as_secs_f64(),
            (lists + decide).as_secs_f64()
        );
        if !args.grouping_then_graph {
            println!(
                "grouping_join faces={n} cell_size={} probes={} pivot_sets={} refine_rounds={} neighbours_s={:.1} decide_s={:.1} bcubed_precision={precision:.3} bcubed_recall={recall:.3} people={clusters}",
                join.cell_size,
                join.probes,
                join.pivot_sets,
                join.refine_rounds,
                lists.as_secs_f64(),
                decide.as_secs_f64()
            );
            continue;
        }
        // Then the graph every replica builds at start-up (in the pages it loads from the
        // database), for the faces that arrive afterwards, one at a time.
        drop(index);
        let dim = facewire_recognition::EMBEDDING_DIM;
        let index = FaceIndex::with_index(config, tuning.clone());
        let t = Instant::now();
        for page in ids.chunks(16_384) {
            index.apply_page(
                page.iter()
                    .map(|&id| {
                        let row = &vectors[id as usize * dim..(id as usize + 1) * dim];
                        grouping_face(id, person_of.get(&id).copied(), row.to_vec())
                    })
                    .collect(),
            );
        }
        let build = t.elapsed();
        drop(vectors);
        eprintln!(
            "grouping (backlog): graph built in {:.0} s",
            build.as_secs_f64()
        );
        let total = lists + decide;
        let rss = rss_kib().map_or(0.0, |k| k as f64 / 1024.0);
        let times = one_new_face_at_a_time(
            &index,
            &generator,
            n,
            1_000,
            &mut next_person,
            &mut person_of,
        );
        let p50 = percentile(&times, 0.5);
        let p99 = percentile(&times, 0.99);
        println!(
            "| {n} | {:.1} s | {:.1} s | **{:.1} s** | {:.0} s | {p50:.2} ms | {p99:.2} ms | {precision:.3} | {recall:.3} | {clusters} | {rss:.0} MiB |",
            lists.as_secs_f64(),
            decide.as_secs_f64(),
            total.as_secs_f64(),
            build.as_secs_f64(),
        );
        println!(
            "grouping_bulk faces={n} build_s={:.1} neighbours_s={:.1} decide_s={:.1} total_s={:.1} one_face_p50_ms={p50:.3} one_face_p99_ms={p99:.3} bcubed_precision={precision:.3} bcubed_recall={recall:.3} rss_mib={rss:.0}",
            build.as_secs_f64(),
            lists.as_secs_f64(),
            decide.as_secs_f64(),
            total.as_secs_f64(),
        );
        snapshot_start_up(&index, &tuning, &generator, n);
    }
}

/// The service's backlog pass over `n` faces nobody grouped, as a replica runs it: the face
/// index built a page at a time (start-up; the faces generated untimed), every neighbour
/// list from [`FaceIndex::neighbourhoods`] (the join reading the index in place), then the
/// decisions in id order. Peak RSS is read for the pass alone (the peak is reset after the
/// build), and again for the earlier way on the same index: every vector copied out as f32
/// and joined from the copy. Prints a table and one `grouping_pass ...` line.
fn grouping_pass(
    n: usize,
    config: facewire_recognition::grouping::GroupingConfig,
    tuning: &facewire_index::AutoConfig,
) {
    use facewire_recognition::grouping::{FaceIndex, Neighbourhoods};
    let generator = FaceGenerator::new(Params::sface_like(synthetic_people(n), SYNTHETIC_SEED + 1));
    let index = FaceIndex::with_index(config, tuning.clone());
    eprintln!("grouping (pass): building the face index of {n} faces ...");
    let mut untimed = Duration::ZERO;
    let start = Instant::now();
    let mut page = Vec::with_capacity(10_000);
    for i in 0..n {
        let t = Instant::now();
        page.push(grouping_face(i as i64, None, generator.face(i)));
        untimed += t.elapsed();
        if page.len() == 10_000 || i + 1 == n {
            index.apply_page(std::mem::take(&mut page));
        }
    }
    let build = start.elapsed().saturating_sub(untimed);
    let ids: Vec<i64> = (0..n as i64).collect();
    let rss_built = rss_mib("VmRSS:");
    reset_peak_rss();
    eprintln!(
        "grouping (pass): built in {:.0} s, RSS {rss_built:.0} MiB; joining in place ...",
        build.as_secs_f64()
    );
    let t = Instant::now();
    let ahead = index.neighbourhoods(&ids);
    let lists = t.elapsed();
    let peak_in_place = rss_mib("VmHWM:");
    // What the pass holds through its decisions: the index and every face's list.
    let rss_lists = rss_mib("VmRSS:");
    let (decide, _, person_of) = decide_in_order(&index, &ids, &ahead);
    let (precision, recall, clusters) = bcubed(&person_of, &generator, n);
    eprintln!(
        "grouping (pass): lists in {:.0} s (peak {peak_in_place:.0} MiB, {rss_lists:.0} MiB holding them), decided in {:.1} s; copying for the earlier way ...",
        lists.as_secs_f64(),
        decide.as_secs_f64()
    );
    drop(ahead);
    reset_peak_rss();
    let t = Instant::now();
    let copy: Vec<f32> = ids
        .iter()
        .flat_map(|&id| {
            index
                .embedding(id)
                .unwrap_or_else(|| vec![0.0; facewire_recognition::EMBEDDING_DIM])
        })
        .collect();
    let copied = Neighbourhoods::joined(&ids, &copy, config.min_similarity);
    let lists_copy = t.elapsed();
    let peak_copy = rss_mib("VmHWM:");
    drop((copied, copy));
    println!(
        "\n## the service's backlog pass ({n} faces nobody grouped, the face index built first; load average {})",
        load_average()
    );
    println!("| faces | start-up build | neighbour lists | decisions | BCubed precision | BCubed recall | suggested people | RSS built | peak during the pass | lists from an f32 copy | peak with the copy |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.0} s | {:.1} s | {:.1} s | {precision:.3} | {recall:.3} | {clusters} | {rss_built:.0} MiB | **{peak_in_place:.0} MiB** | {:.1} s | {peak_copy:.0} MiB |",
        build.as_secs_f64(),
        lists.as_secs_f64(),
        decide.as_secs_f64(),
        lists_copy.as_secs_f64(),
    );
    println!(
        "grouping_pass faces={n} build_s={:.1} neighbours_s={:.1} decide_s={:.1} bcubed_precision={precision:.3} bcubed_recall={recall:.3} rss_built_mib={rss_built:.0} peak_rss_mib={peak_in_place:.0} lists_rss_mib={rss_lists:.0} copy_neighbours_s={:.1} copy_peak_rss_mib={peak_copy:.0}",
        build.as_secs_f64(),
        lists.as_secs_f64(),
        decide.as_secs_f64(),
        lists_copy.as_secs_f64(),
    );
}

/// The start-up a snapshot buys: the graph saved, loaded back, and every face checked
/// against its vector as the service checks it against the database (reading the rows
/// left out). Prints a table row and one `snapshot ...` line.
fn snapshot_start_up(
    index: &facewire_recognition::grouping::FaceIndex,
    tuning: &facewire_index::AutoConfig,
    generator: &FaceGenerator,
    n: usize,
) {
    let path = std::env::temp_dir().join(format!("facewire-bench-{}.usearch", std::process::id()));
    let t = Instant::now();
    match index.save(&path) {
        Ok(true) => {}
        Ok(false) => return println!("snapshot faces={n}: exact index, nothing to save"),
        Err(e) => return println!("snapshot faces={n}: not saved ({e})"),
    }
    let save = t.elapsed();
    let bytes = ["", ".ids"]
        .iter()
        .filter_map(|suffix| {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            std::fs::metadata(file).ok().map(|m| m.len())
        })
        .sum::<u64>();
    let t = Instant::now();
    let restored = match facewire_index::Auto::restore(
        facewire_recognition::EMBEDDING_DIM,
        tuning.clone(),
        &path,
    ) {
        Ok(restored) => restored,
        Err(e) => return println!("snapshot faces={n}: not loaded ({e})"),
    };
    let load = t.elapsed();
    let mut check = Duration::ZERO;
    let mut held = 0usize;
    for i in 0..n {
        let face = generator.face(i);
        let t = Instant::now();
        held += usize::from(restored.holds(i as i64, &face));
        check += t.elapsed();
    }
    let _ = std::fs::remove_file(&path);
    let mut ids = path.into_os_string();
    ids.push(".ids");
    let _ = std::fs::remove_file(ids);
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "\nsnapshot at {n} faces: saved in {:.1} s ({mib:.0} MiB), loaded in {:.1} s, {held} faces checked against their vectors in {:.1} s",
        save.as_secs_f64(),
        load.as_secs_f64(),
        check.as_secs_f64()
    );
    println!(
        "snapshot faces={n} save_s={:.2} load_s={:.2} check_s={:.2} held={held} size_mib={mib:.0}",
        save.as_secs_f64(),
        load.as_secs_f64(),
        check.as_secs_f64()
    );
}

/// The 1-minute load average, to read the timings against.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// A memory line of /proc/self/status (`VmRSS:`, `VmHWM:` for the peak) in MiB.
fn rss_mib(field: &str) -> f64 {
    status_kib(field).map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// Starts peak RSS (`VmHWM`) over from the present RSS (Linux's clear_refs, value 5).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("peak RSS not reset: {e}");
    }
}

fn rss_kib() -> Option<u64> {
    status_kib("VmRSS:")
}

/// A line of /proc/self/status in KiB.
fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn memory(recognizer: &Recognizer) -> anyhow::Result<()> {
    println!("\n## memory");
    recognizer.set_gallery(Gallery::default());
    let before = rss_kib().unwrap_or(0);
    let gallery = synthetic_gallery(100_000);
    let bytes = gallery.matrix_bytes();
    recognizer.set_gallery(gallery);
    let after = rss_kib().unwrap_or(0);
    println!(
        "RSS with models loaded (1 worker), empty gallery: {:.0} MiB; with 100 000 faces: {:.0} MiB (index {:.1} MiB; the scaling part's rss_mib has larger galleries)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        bytes as f64 / (1024.0 * 1024.0)
    );
    recognizer.set_gallery(Gallery::default());
    Ok(())
}
