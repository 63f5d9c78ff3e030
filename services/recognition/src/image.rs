//! Image decoding with the limits checked before any pixel is decoded.
//!
//! The dimensions come from the file header (read by `imagesize`, which parses headers
//! only), so a decompression bomb — a few kilobytes claiming 50 000 × 50 000 pixels — is
//! refused before OpenCV allocates anything. Every accepted image is decoded to 8-bit
//! BGR, whatever it was (grayscale, 16-bit, with alpha; of a GIF, the first frame).
//!
//! Decoded pixels are the service's largest allocation by far — a 300 KB PNG can claim
//! 40 million pixels — so they are also budgeted per process: [`DecodeBudget`] is
//! acquired, for the decoded size the header promises, before any pixel is decoded, and
//! work waits for it in a queue instead of decoding side by side.

use std::{sync::Arc, time::Duration};

use opencv::{core::Mat, imgcodecs, imgproc, prelude::*};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ImageError;

/// The longest side OpenCV can work on: its remap (behind every affine warp, so behind
/// every face alignment) asserts that both sides are below `SHRT_MAX` (32 767). A wider
/// image would decode, and then fail with OpenCV's assertion text only when a face is
/// found in it, so it is refused up front from the header.
pub const MAX_SIDE: u64 = i16::MAX as u64 - 1;

/// The default decode budget, in MiB: with the models and one image per worker in
/// flight, it keeps the service's peak RSS under 1 GiB whatever images arrive (see
/// the README's reliability section for the measurement).
pub const DEFAULT_DECODE_BUDGET_MIB: u64 = 512;

/// The default longest wait for the decode budget before an image is refused.
pub const DEFAULT_DECODE_WAIT: Duration = Duration::from_secs(30);

/// What to do with an image whose header says it has more pixels than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OversizePolicy {
    /// Refuse it with [`ImageError::TooLarge`].
    #[default]
    Refuse,
    /// Decode a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg reduces while decoding, so the
    /// full-size bitmap never exists). Other formats, and JPEGs that would still be over
    /// the limit at 1/8, are refused: their decoders can only produce the full bitmap.
    Downscale,
}

impl std::str::FromStr for OversizePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(Self::Refuse),
            "downscale" => Ok(Self::Downscale),
            other => Err(format!(
                "unknown oversize policy {other:?}: expected \"refuse\" or \"downscale\""
            )),
        }
    }
}

/// Limits applied to every image before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most encoded bytes accepted.
    pub max_bytes: usize,
    /// Most pixels (width × height, from the header) decoded.
    pub max_pixels: u64,
    /// What happens above `max_pixels`.
    pub oversize: OversizePolicy,
    /// Decoded bytes in flight per process; see [`DecodeBudget`].
    pub decode_budget_bytes: u64,
    /// Longest wait in the queue for the decode budget.
    pub decode_wait: Duration,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_bytes: facewire_config::DEFAULT_MAX_IMAGE_BYTES as usize,
            // 40 MP covers every phone camera; a decoded 40 MP BGR image is 120 MB.
            max_pixels: 40_000_000,
            oversize: OversizePolicy::Refuse,
            decode_budget_bytes: DEFAULT_DECODE_BUDGET_MIB << 20,
            decode_wait: DEFAULT_DECODE_WAIT,
        }
    }
}

/// Header facts about an encoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// The container format.
    pub format: imagesize::ImageType,
    /// Width in pixels, as the header claims.
    pub width: u64,
    /// Height in pixels, as the header claims.
    pub height: u64,
}

/// Reads the format and dimensions from the header without decoding pixels.
pub fn read_header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = imagesize::image_type(bytes).map_err(|_| {
        ImageError::Undecodable(
            "not a recognised image format (expected JPEG, PNG, BMP, WebP, TIFF, ...)".into(),
        )
    })?;
    let size = imagesize::blob_size(bytes)
        .map_err(|e| ImageError::Undecodable(format!("cannot read the {format:?} header: {e}")))?;
    if size.width == 0 || size.height == 0 {
        return Err(ImageError::Undecodable(format!(
            "the {format:?} header claims an empty image ({} × {})",
            size.width, size.height
        )));
    }
    Ok(ImageHeader {
        format,
        width: size.width as u64,
        height: size.height as u64,
    })
}

/// Decodes `bytes` to an 8-bit, 3-channel BGR image within `limits`.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Mat, ImageError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge(format!(
            "{} bytes; at most {} are accepted",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let header = read_header(bytes)?;
    check_sides(&header)?;
    let is_jpeg = header.format == imagesize::ImageType::Jpeg;
    let pixels = header.width.saturating_mul(header.height);
    let mut flags = imgcodecs::IMREAD_COLOR;
    if pixels > limits.max_pixels {
        let refuse = || {
            ImageError::TooLarge(format!(
                "{} × {} = {pixels} pixels; at most {} are decoded",
                header.width, header.height, limits.max_pixels
            ))
        };
        if limits.oversize == OversizePolicy::Refuse || !is_jpeg {
            return Err(refuse());
        }
        flags = [
            (2, imgcodecs::IMREAD_REDUCED_COLOR_2),
            (4, imgcodecs::IMREAD_REDUCED_COLOR_4),
            (8, imgcodecs::IMREAD_REDUCED_COLOR_8),
        ]
        .into_iter()
        .find(|(f, _)| pixels / (f * f) <= limits.max_pixels)
        .map(|(_, flag)| flag)
        .ok_or_else(refuse)?;
    }
    // libjpeg fills a truncated file's missing rows with grey and only warns; a face
    // search on half an image would silently answer wrong, so insist on the end marker.
    if is_jpeg
        && !bytes
            .windows(2)
            .rev()
            .take(64 * 1024)
            .any(|w| w == [0xFF, 0xD9])
    {
        return Err(ImageError::Undecodable(
            "truncated JPEG: no end-of-image marker".into(),
        ));
    }
    if header.format == imagesize::ImageType::Gif {
        return decode_gif_first_frame(bytes, &header);
    }
    let buf = Mat::from_slice(bytes)
        .map_err(|e| ImageError::Undecodable(format!("cannot wrap the bytes: {e}")))?;
    let mat = imgcodecs::imdecode(&buf, flags)
        .map_err(|e| ImageError::Undecodable(format!("{:?} decoder failed: {e}", header.format)))?;
    if mat.empty() {
        return Err(ImageError::Undecodable(format!(
            "corrupt or unsupported {:?} data",
            header.format
        )));
    }
    Ok(mat)
}

/// Refuses an image with a side OpenCV cannot work on ([`MAX_SIDE`]).
fn check_sides(header: &ImageHeader) -> Result<(), ImageError> {
    if header.width > MAX_SIDE || header.height > MAX_SIDE {
        return Err(ImageError::TooLarge(format!(
            "{} × {} pixels; each side must be at most {MAX_SIDE} pixels",
            header.width, header.height
        )));
    }
    Ok(())
}

/// The first frame of a GIF as 8-bit BGR. OpenCV 4.6 has no GIF decoder; the `image`
/// crate's reads the first frame only, composited to RGBA.
fn decode_gif_first_frame(bytes: &[u8], header: &ImageHeader) -> Result<Mat, ImageError> {
    let undecodable =
        |e: image::ImageError| ImageError::Undecodable(format!("GIF decoder failed: {e}"));
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Gif);
    // The header was checked against the pixel limit; this keeps the decoder to it.
    let mut limits = image::Limits::default();
    limits.max_image_width = u32::try_from(header.width).ok();
    limits.max_image_height = u32::try_from(header.height).ok();
    limits.max_alloc = Some(gif_decoded_bytes(header.width, header.height));
    reader.limits(limits);
    let rgb = reader.decode().map_err(undecodable)?.into_rgb8();
    let rows = i32::try_from(rgb.height())
        .map_err(|_| ImageError::TooLarge(format!("{} rows", rgb.height())))?;
    let wrap =
        |e: opencv::Error| ImageError::Undecodable(format!("cannot convert the GIF frame: {e}"));
    let flat = Mat::from_slice(rgb.as_raw()).map_err(wrap)?;
    let rgb_mat = flat.reshape(3, rows).map_err(wrap)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb_mat, &mut bgr, imgproc::COLOR_RGB2BGR).map_err(wrap)?;
    Ok(bgr)
}

/// What decoding a GIF frame allocates: the RGBA canvas, the RGB copy and the BGR Mat.
fn gif_decoded_bytes(width: u64, height: u64) -> u64 {
    width.saturating_mul(height).saturating_mul(4 + 3 + 3)
}

/// What decoding an image with this header holds at its peak, in bytes, the encoded
/// bytes included: the 8-bit BGR result plus, for the formats OpenCV cannot decode
/// straight into it, the decoder's own buffers.
pub fn decoded_cost(header: &ImageHeader, encoded_len: usize) -> u64 {
    let pixels = header.width.saturating_mul(header.height);
    let decoded = match header.format {
        imagesize::ImageType::Gif => gif_decoded_bytes(header.width, header.height),
        // OpenCV decodes JPEG, PNG (16-bit and alpha stripped by libpng while reading),
        // BMP and PNM rows straight into the 8-bit BGR image.
        imagesize::ImageType::Jpeg
        | imagesize::ImageType::Png
        | imagesize::ImageType::Bmp
        | imagesize::ImageType::Pnm => pixels.saturating_mul(3),
        // The others (TIFF, WebP, EXR, ...) may decode to a full-size buffer of up to four
        // 32-bit channels first.
        _ => pixels.saturating_mul(3 + 16),
    };
    decoded.saturating_add(encoded_len as u64)
}

/// Why an image was not admitted to decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Bigger than the whole budget: it could never be decoded here.
    #[error(
        "decoding this image needs {needed_mib} MiB, more than the whole decode budget of \
         {budget_mib} MiB (FACEWIRE_DECODE_BUDGET_MIB)"
    )]
    NeverFits {
        /// What the image needs, in MiB (rounded up).
        needed_mib: u64,
        /// The budget, in MiB.
        budget_mib: u64,
    },
    /// The budget stayed taken by other images for the whole wait.
    #[error(
        "the decode budget of {budget_mib} MiB (FACEWIRE_DECODE_BUDGET_MIB) stayed in use \
         for {waited_secs} s (FACEWIRE_DECODE_WAIT_SECONDS); this image needs {needed_mib} MiB; \
         retry later"
    )]
    Busy {
        /// What the image needs, in MiB (rounded up).
        needed_mib: u64,
        /// The budget, in MiB.
        budget_mib: u64,
        /// How long it waited, in seconds.
        waited_secs: u64,
    },
    /// The image was refused from its header (size, format): no budget was needed.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The decoded bytes one process may hold at once, shared by every request: a weighted,
/// fair (first come, first served) semaphore counted in KiB. An image takes its
/// [`decoded_cost`] before it is decoded and gives it back when its analysis is done.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    semaphore: Arc<Semaphore>,
    total_kib: u32,
    wait: Duration,
}

/// A share of the [`DecodeBudget`], returned when dropped.
#[derive(Debug)]
pub struct DecodePermit {
    _permit: Option<OwnedSemaphorePermit>,
}

const KIB: u64 = 1024;

impl DecodeBudget {
    /// A budget of `limits.decode_budget_bytes`, waited for at most `limits.decode_wait`.
    pub fn new(limits: &ImageLimits) -> Self {
        let total_kib = u32::try_from(limits.decode_budget_bytes.div_ceil(KIB))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            wait: limits.decode_wait,
        }
    }

    /// The whole budget, in MiB.
    pub fn total_mib(&self) -> u64 {
        u64::from(self.total_kib).div_ceil(KIB)
    }

    /// Reads the header of `bytes` and waits (at most the configured wait, first come
    /// first served) for its decoded size. Bytes whose header is unreadable or over the
    /// per-image limits are let through without a share: decoding refuses them before
    /// allocating anything.
    pub async fn admit(&self, bytes: &[u8]) -> Result<DecodePermit, AdmissionError> {
        let header = match read_header(bytes) {
            Ok(header) => header,
            Err(_) => return Ok(DecodePermit { _permit: None }),
        };
        check_sides(&header)?;
        self.admit_cost(decoded_cost(&header, bytes.len())).await
    }

    /// Waits for `cost` bytes of the budget.
    pub async fn admit_cost(&self, cost: u64) -> Result<DecodePermit, AdmissionError> {
        let needed_kib = cost.div_ceil(KIB).max(1);
        let needed_mib = needed_kib.div_ceil(KIB);
        let budget_mib = self.total_mib();
        let permits = match u32::try_from(needed_kib) {
            Ok(n) if n <= self.total_kib => n,
            _ => {
                return Err(AdmissionError::NeverFits {
                    needed_mib,
                    budget_mib,
                })
            }
        };
        let acquire = self.semaphore.clone().acquire_many_owned(permits);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(DecodePermit {
                _permit: Some(permit),
            }),
            // The semaphore is never closed; treat it like a full budget all the same.
            Ok(Err(_)) | Err(_) => Err(AdmissionError::Busy {
                needed_mib,
                budget_mib,
                waited_secs: self.wait.as_secs(),
            }),
        }
    }

    /// KiB of the budget free right now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, Vector, CV_16UC1, CV_8UC1, CV_8UC3, CV_8UC4};

    fn encode(mat: &Mat, ext: &str) -> Vec<u8> {
        let mut buf = Vector::<u8>::new();
        assert!(imgcodecs::imencode(ext, mat, &mut buf, &Vector::new()).unwrap());
        buf.to_vec()
    }

    fn solid(rows: i32, cols: i32, typ: i32, value: f64) -> Mat {
        Mat::new_rows_cols_with_default(rows, cols, typ, Scalar::all(value)).unwrap()
    }

    /// A PNG whose header claims `w` × `h` pixels, followed by no image data.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        b.extend_from_slice(&13u32.to_be_bytes());
        b.extend_from_slice(b"IHDR");
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn empty_bytes_are_refused() {
        assert_eq!(
            decode(&[], &ImageLimits::default()).unwrap_err(),
            ImageError::Empty
        );
    }

    #[test]
    fn random_bytes_and_text_are_undecodable() {
        let text = b"this is a text file named photo.jpg\n".repeat(10);
        assert!(matches!(
            decode(&text, &ImageLimits::default()),
            Err(ImageError::Undecodable(_))
        ));
        // A fixed pseudo-random sequence (xorshift), so the test is repeatable.
        let mut x = 0x2545F4914F6CDD1Du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(matches!(
            decode(&noise, &ImageLimits::default()),
            Err(ImageError::Undecodable(_))
        ));
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        let bomb = png_header(50_000, 50_000);
        match decode(&bomb, &ImageLimits::default()) {
            Err(ImageError::TooLarge(msg)) => assert!(msg.contains("50000 × 50000"), "{msg}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Downscaling cannot help a PNG: still refused, still before decoding.
        let limits = ImageLimits {
            oversize: OversizePolicy::Downscale,
            ..ImageLimits::default()
        };
        assert!(matches!(
            decode(&bomb, &limits),
            Err(ImageError::TooLarge(_))
        ));
    }

    #[test]
    fn oversize_jpeg_is_downscaled_or_refused_by_policy() {
        let jpeg = encode(&solid(400, 600, CV_8UC3, 128.0), ".jpg");
        let mut limits = ImageLimits {
            max_pixels: 50_000,
            ..ImageLimits::default()
        };
        assert!(matches!(
            decode(&jpeg, &limits),
            Err(ImageError::TooLarge(_))
        ));
        limits.oversize = OversizePolicy::Downscale;
        let mat = decode(&jpeg, &limits).unwrap();
        // 240 000 pixels over a 50 000 limit: 1/2 (60 000) is still too many, 1/4 fits.
        assert_eq!((mat.cols(), mat.rows()), (150, 100));
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let jpeg = encode(&solid(200, 200, CV_8UC3, 90.0), ".jpg");
        let cut = &jpeg[..jpeg.len() / 2];
        match decode(cut, &ImageLimits::default()) {
            Err(ImageError::Undecodable(msg)) => assert!(msg.contains("truncated"), "{msg}"),
            other => panic!("expected Undecodable, got {other:?}"),
        }
    }

    #[test]
    fn truncated_png_is_refused() {
        let png = encode(&solid(200, 200, CV_8UC3, 90.0), ".png");
        assert!(matches!(
            decode(&png[..png.len() / 2], &ImageLimits::default()),
            Err(ImageError::Undecodable(_))
        ));
    }

    #[test]
    fn alpha_grey_and_16_bit_pngs_become_8_bit_bgr() {
        for (typ, value) in [(CV_8UC4, 200.0), (CV_8UC1, 77.0), (CV_16UC1, 40_000.0)] {
            let png = encode(&solid(30, 40, typ, value), ".png");
            let mat = decode(&png, &ImageLimits::default()).unwrap();
            assert_eq!(mat.typ(), CV_8UC3, "from type {typ}");
            assert_eq!((mat.cols(), mat.rows()), (40, 30));
        }
    }

    #[test]
    fn sides_over_opencv_limit_are_refused_from_the_header() {
        for (w, h) in [(40_000, 10), (10, 32_767)] {
            match decode(&png_header(w, h), &ImageLimits::default()) {
                Err(ImageError::TooLarge(msg)) => {
                    assert!(msg.contains("at most 32766 pixels"), "{msg}")
                }
                other => panic!("{w} × {h}: expected TooLarge, got {other:?}"),
            }
        }
    }

    #[test]
    fn first_frame_of_a_gif_is_decoded_to_bgr() {
        use image::{codecs::gif::GifEncoder, Delay, Frame, Rgba, RgbaImage};
        let mut gif = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut gif);
            for colour in [[200, 30, 10, 255], [0, 0, 255, 255]] {
                let frame = Frame::from_parts(
                    RgbaImage::from_pixel(40, 30, Rgba(colour)),
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                );
                encoder.encode_frame(frame).unwrap();
            }
        }
        let mat = decode(&gif, &ImageLimits::default()).unwrap();
        assert_eq!(mat.typ(), CV_8UC3);
        assert_eq!((mat.cols(), mat.rows()), (40, 30));
        // The first (red) frame, in BGR order.
        let px = *mat.at_2d::<opencv::core::Vec3b>(5, 5).unwrap();
        assert_eq!((px[0], px[1], px[2]), (10, 30, 200));
        // Truncated GIF data is undecodable, not a panic.
        assert!(matches!(
            decode(&gif[..gif.len() / 2], &ImageLimits::default()),
            Err(ImageError::Undecodable(_))
        ));
    }

    #[test]
    fn decoded_cost_counts_the_bitmap_not_the_file() {
        let png = encode(&solid(100, 200, CV_16UC1, 1.0), ".png");
        let header = read_header(&png).unwrap();
        assert_eq!(
            decoded_cost(&header, png.len()),
            100 * 200 * 3 + png.len() as u64
        );
    }

    fn budget(mib: u64, wait_ms: u64) -> DecodeBudget {
        DecodeBudget::new(&ImageLimits {
            decode_budget_bytes: mib << 20,
            decode_wait: Duration::from_millis(wait_ms),
            ..ImageLimits::default()
        })
    }

    #[tokio::test]
    async fn budget_queues_then_refuses_naming_the_limit() {
        let budget = budget(10, 50);
        assert_eq!(budget.total_mib(), 10);
        let first = budget.admit_cost(8 << 20).await.unwrap();
        // 4 MiB more does not fit while the first holds 8: it waits, then is refused.
        match budget.admit_cost(4 << 20).await {
            Err(e @ AdmissionError::Busy { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("FACEWIRE_DECODE_BUDGET_MIB"), "{msg}");
                assert!(msg.contains("10 MiB"), "{msg}");
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        assert_eq!(budget.available_kib(), 10 * 1024);
        let _second = budget.admit_cost(4 << 20).await.unwrap();
        // More than the whole budget is refused at once, without waiting.
        assert_eq!(
            budget.admit_cost(11 << 20).await.unwrap_err(),
            AdmissionError::NeverFits {
                needed_mib: 11,
                budget_mib: 10
            }
        );
    }

    #[tokio::test]
    async fn budget_is_taken_from_the_header() {
        let budget = budget(1, 10);
        // 1000 × 1000 pixels are 3 MB decoded, whatever the file weighs.
        assert!(matches!(
            budget.admit(&png_header(1000, 1000)).await,
            Err(AdmissionError::NeverFits { needed_mib: 3, .. })
        ));
        let small = encode(&solid(100, 100, CV_8UC3, 1.0), ".png");
        let permit = budget.admit(&small).await.unwrap();
        assert!(budget.available_kib() < 1024);
        drop(permit);
        assert_eq!(budget.available_kib(), 1024);
        assert!(matches!(
            budget.admit(&png_header(40_000, 10)).await,
            Err(AdmissionError::Image(ImageError::TooLarge(_)))
        ));
        // Unreadable headers take no share; decoding refuses them.
        assert!(budget.admit(b"junk").await.is_ok());
    }

    #[test]
    fn byte_limit_is_enforced() {
        let png = encode(&solid(30, 40, CV_8UC3, 1.0), ".png");
        let limits = ImageLimits {
            max_bytes: 10,
            ..ImageLimits::default()
        };
        assert!(matches!(
            decode(&png, &limits),
            Err(ImageError::TooLarge(_))
        ));
    }
}
