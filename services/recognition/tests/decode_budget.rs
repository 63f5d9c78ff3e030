//! Small files that decode to huge bitmaps, images too wide for OpenCV, and GIFs, sent to
//! a real recognition server (in process, on 127.0.0.1, over a temp SQLite database).

mod support;

use std::net::SocketAddr;

use clap::Parser;
use facewire_proto::v1 as pb;
use facewire_recognition::{Recognition, RecognitionConfig};
use facewire_server::CancellationToken;
use facewire_storage::{Store, StoreOptions};
use opencv::{
    core::{Mat, Scalar, Vector, CV_16UC4, CV_8UC3},
    imgcodecs,
    prelude::*,
};
use pb::{batch_result::Outcome, recognition_service_client::RecognitionServiceClient};
use support::*;
use tonic::{transport::Channel, Code};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: RecognitionConfig,
}

struct Service {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/budget.db", dir.path().display());
        let mut args = vec![
            "recognition".to_string(),
            "--database-url".into(),
            url.clone(),
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--model-dir".into(),
            model_dir().display().to_string(),
            "--workers".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Cli::parse_from(args).config;
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let service = Recognition::build(&config, store).await.unwrap();
        let addr = service.grpc_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { service.run_until_stopped(stop).await.unwrap() });
        Self {
            addr,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn client(&self) -> RecognitionServiceClient<Channel> {
        RecognitionServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

fn encode(mat: &Mat, ext: &str) -> Vec<u8> {
    let mut buf = Vector::<u8>::new();
    assert!(imgcodecs::imencode(ext, mat, &mut buf, &Vector::new()).unwrap());
    buf.to_vec()
}

/// The attack file of the issue: a 6320 × 6320 16-bit RGBA PNG, a few hundred KB that
/// decode to 320 MB at 16 bits (120 MB as 8-bit BGR).
fn huge_16_bit_png() -> Vec<u8> {
    let mat = Mat::new_rows_cols_with_default(6320, 6320, CV_16UC4, Scalar::all(0.0)).unwrap();
    let png = encode(&mat, ".png");
    assert!(png.len() < 2 << 20, "{} bytes", png.len());
    png
}

fn batch(images: Vec<Vec<u8>>) -> pb::RecognizeBatchRequest {
    pb::RecognizeBatchRequest {
        images: images
            .into_iter()
            .enumerate()
            .map(|(i, image)| pb::BatchImage {
                key: i.to_string(),
                image,
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_bitmap_over_the_decode_budget_is_resource_exhausted() {
    let service = Service::start(&["--decode-budget-mib", "64"]).await;
    let mut client = service.client().await;
    let png = huge_16_bit_png();

    let status = client
        .recognize(pb::RecognizeRequest { image: png.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("64 MiB")
            && status.message().contains("FACEWIRE_DECODE_BUDGET_MIB"),
        "{}",
        status.message()
    );

    // In a batch, only that image is refused; the photo beside it is recognised.
    let photo = std::fs::read(&johns("John_Simm")[0]).unwrap();
    let r = client
        .recognize_batch(batch(vec![png, photo]))
        .await
        .unwrap()
        .into_inner();
    match &r.results[0].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.code, pb::ImageErrorCode::TooLarge as i32);
            assert!(
                e.message.contains("FACEWIRE_DECODE_BUDGET_MIB"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&r.results[1].outcome, Some(Outcome::Faces(f)) if f.faces.len() == 1),
        "{:?}",
        r.results[1]
    );

    // Searching with a photo decodes it too: within the same budget.
    let mut people =
        pb::people_service_client::PeopleServiceClient::connect(format!("http://{}", service.addr))
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20);
    let status = people
        .search_faces(pb::SearchFacesRequest {
            query: Some(pb::search_faces_request::Query::Image(huge_16_bit_png())),
            limit: 5,
            min_similarity: 0.0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    service.stop().await;
}

#[tokio::test]
async fn sixteen_huge_bitmaps_in_one_batch_queue_for_the_budget() {
    // Room for two decoded at once: the other fourteen wait, none is refused.
    let service = Service::start(&["--decode-budget-mib", "256"]).await;
    let mut client = service.client().await;
    let png = huge_16_bit_png();
    let r = client
        .recognize_batch(batch(vec![png; 16]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 16);
    for result in &r.results {
        assert!(
            matches!(&result.outcome, Some(Outcome::Faces(f)) if f.faces.is_empty()),
            "{result:?}"
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn an_image_wider_than_opencv_allows_is_invalid_argument() {
    let service = Service::start(&[]).await;
    let mut client = service.client().await;
    let wide = Mat::new_rows_cols_with_default(10, 40_000, CV_8UC3, Scalar::all(128.0)).unwrap();
    let status = client
        .recognize(pb::RecognizeRequest {
            image: encode(&wide, ".png"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let msg = status.message();
    assert!(
        msg.contains("40000 × 10") && msg.contains("at most 32766 pixels"),
        "{msg}"
    );
    assert!(!msg.contains("OpenCV") && !msg.contains("cv::"), "{msg}");
    service.stop().await;
}

#[tokio::test]
async fn the_first_frame_of_a_gif_is_recognised() {
    let service = Service::start(&[]).await;
    let mut client = service.client().await;
    // A labeled photo re-encoded as a GIF by the image crate (quantised to 256 colours).
    let jpeg = std::fs::read(&johns("John_Simm")[0]).unwrap();
    let rgba = image::load_from_memory(&jpeg).unwrap().into_rgba8();
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut gif, 10);
        encoder
            .encode_frame(image::Frame::new(rgba.clone()))
            .unwrap();
        // A second, blank frame: only the first is analysed.
        let blank = image::RgbaImage::from_pixel(rgba.width(), rgba.height(), image::Rgba([0; 4]));
        encoder.encode_frame(image::Frame::new(blank)).unwrap();
    }
    assert!(gif.starts_with(b"GIF89a"));
    let faces = client
        .recognize(pb::RecognizeRequest { image: gif })
        .await
        .unwrap()
        .into_inner()
        .faces;
    assert_eq!(faces.len(), 1, "{faces:?}");
    service.stop().await;
}
