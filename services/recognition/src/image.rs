//! Image decoding with the limits checked before any pixel is decoded.
//!
//! The dimensions come from the file header (read by `imagesize`, which parses headers
//! only), so a decompression bomb — a few kilobytes claiming 50 000 × 50 000 pixels — is
//! refused before OpenCV allocates anything. Every accepted image is decoded to 8-bit
//! BGR, whatever it was (grayscale, 16-bit, with alpha).

use opencv::{core::Mat, imgcodecs, prelude::*};

use crate::ImageError;

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
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_bytes: facewire_config::DEFAULT_MAX_IMAGE_BYTES as usize,
            // 40 MP covers every phone camera; a decoded 40 MP BGR image is 120 MB.
            max_pixels: 40_000_000,
            oversize: OversizePolicy::Refuse,
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
