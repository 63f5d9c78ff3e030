//! What the pipeline benchmarks share: the photos, the image root, submitting, waiting
//! for the rows, and reading throughput off the rows' own timestamps.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use facewire_proto::v1::{
    recognition_service_client::RecognitionServiceClient, submit_result::Outcome, BatchImage,
    RecognizeBatchRequest,
};
use facewire_storage::{ImageRecord, ImageStatus, Store};

use crate::{workspace_root, Service};

/// The labeled photos of dlib's johns set, every file under `testdata/dlib/johns`.
pub fn johns_photos() -> Vec<PathBuf> {
    let root = workspace_root().join("testdata/dlib/johns");
    let mut all = Vec::new();
    for person in std::fs::read_dir(&root).expect("run scripts/fetch-testdata") {
        let dir = person.expect("read johns").path();
        for photo in std::fs::read_dir(&dir).expect("read person") {
            let path = photo.expect("read photo").path();
            if path.extension().is_some_and(|e| e == "jpg") {
                all.push(path);
            }
        }
    }
    all.sort();
    all
}

/// `count` images named `img<i>.jpg` in `dir`, cycling through the photos; returns the
/// bytes of each distinct photo.
pub fn fill_image_root(dir: &Path, photos: &[PathBuf], count: usize) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    for i in 0..count {
        let data = std::fs::read(&photos[i % photos.len()]).expect("read photo");
        std::fs::write(dir.join(format!("img{i}.jpg")), &data).expect("write image");
        if i < photos.len() {
            bytes.push(data);
        }
    }
    bytes
}

/// Images/s of `RecognizeBatch` straight at recognition: `calls` calls of `batch` images,
/// `concurrency` in flight per URL (the processor's batch and workers), no queue, no
/// database.
pub async fn recognition_capacity(
    urls: &[String],
    photos: &[Vec<u8>],
    batch: usize,
    concurrency: usize,
    calls: usize,
) -> f64 {
    let tasks_total = concurrency * urls.len();
    let per_task = calls.div_ceil(tasks_total);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_total {
        let mut client = RecognitionServiceClient::connect(urls[t % urls.len()].clone())
            .await
            .expect("connect to recognition")
            .max_decoding_message_size(64 * 1024 * 1024);
        let photos = photos.to_vec();
        tasks.push(tokio::spawn(async move {
            for c in 0..per_task {
                let images = (0..batch)
                    .map(|i| {
                        let n = (t * per_task + c) * batch + i;
                        BatchImage {
                            key: n.to_string(),
                            image: photos[n % photos.len()].clone(),
                        }
                    })
                    .collect();
                let response = client
                    .recognize_batch(RecognizeBatchRequest { images })
                    .await
                    .expect("RecognizeBatch");
                assert_eq!(response.into_inner().results.len(), batch);
            }
        }));
    }
    for t in tasks {
        t.await.expect("capacity task");
    }
    (per_task * tasks_total * batch) as f64 / started.elapsed().as_secs_f64()
}

/// Submits `paths` in batches of 100 and returns the accepted ids.
pub async fn submit(receiver: &Service, paths: &[String]) -> Vec<i64> {
    let mut client = receiver.client().await;
    let mut ids = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(100) {
        for result in client.submit_images(chunk.to_vec()).await.expect("submit") {
            match result.outcome {
                Some(Outcome::Image(image)) => ids.push(image.id),
                other => panic!("refused: {other:?}"),
            }
        }
    }
    ids
}

/// Waits until every one of `ids` is terminal and returns their rows.
pub async fn wait_all(store: &Store, ids: &[i64]) -> Vec<ImageRecord> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows = store.get_many(ids.to_vec()).await.expect("read rows");
        let terminal = rows.iter().all(|r| {
            matches!(
                r.status,
                ImageStatus::Done | ImageStatus::NoFace | ImageStatus::Failed
            )
        });
        if terminal && rows.len() == ids.len() {
            return rows;
        }
        assert!(Instant::now() < deadline, "images did not finish in 10 min");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Throughput of a whole run from the rows' timestamps: first created to last updated.
pub fn rows_per_second(rows: &[ImageRecord]) -> f64 {
    let first = rows.iter().map(|r| r.created_at).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.updated_at).max().unwrap_or(0);
    rows.len() as f64 / ((last - first).max(1) as f64 / 1000.0)
}

/// Processing throughput of rows submitted before any processor ran: from the first
/// row finished to the last, scaled by n/(n−1) for the interval the first one took.
pub fn processing_rate(rows: &[ImageRecord]) -> f64 {
    let first = rows.iter().map(|r| r.updated_at).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.updated_at).max().unwrap_or(0);
    (rows.len().saturating_sub(1)) as f64 / ((last - first).max(1) as f64 / 1000.0)
}

/// The value at quantile `q` of an ascending slice.
pub fn percentile(sorted: &[i64], q: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

/// "`done`/`total` done".
pub fn describe(rows: &[ImageRecord]) -> String {
    let done = rows
        .iter()
        .filter(|r| r.status == ImageStatus::Done)
        .count();
    format!("{done}/{} done", rows.len())
}
