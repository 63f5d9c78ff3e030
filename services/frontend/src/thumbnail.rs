//! Thumbnails: the content type of an image file by its extension, a small downscaled
//! copy for the table (JPEG and PNG; other formats are served as they are), and the size
//! a browser shows an image at (for placing face boxes).

use std::{
    io::{Cursor, Read},
    path::Path,
};

use facewire_config::{CheckedPath, ImageRoot, PathError};

use image::{
    codecs::jpeg::JpegEncoder, metadata::Orientation, DynamicImage, ImageDecoder, ImageFormat,
    ImageReader, Limits,
};

/// Longest side of a thumbnail, in pixels (the table shows them at half this, so they
/// stay sharp on high-density screens).
pub const THUMBNAIL_SIZE: u32 = 160;
/// Decoding refuses images claiming more pixels than this per side, or needing more
/// memory than `MAX_DECODE_BYTES`, so a tiny file cannot make the server allocate gigabytes.
const MAX_SIDE: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// The content type for a file, guessed from its extension (case-insensitive).
/// Unknown types — including SVG, which could carry script — are served as opaque bytes.
pub fn content_type_for(path: &str) -> &'static str {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" | "jpe" | "jfif" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" | "dib" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The first `limit` bytes (all of them with `u64::MAX`) of the image file `raw` names
/// under `root`, read from the handle [`ImageRoot::open`] checked — never reopened by
/// path, so a file swapped for a FIFO, a device or a symlink out of the root after the
/// check is refused instead of blocking the server or leaking a file. Blocking: call
/// from a blocking thread.
pub fn read_image(
    root: &ImageRoot,
    raw: &str,
    limit: u64,
) -> Result<(CheckedPath, Vec<u8>), PathError> {
    let (checked, file) = root.open(raw)?;
    let mut bytes = Vec::with_capacity(checked.size.min(limit) as usize);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| PathError::Unreadable {
            path: raw.to_string(),
            reason: e.to_string(),
        })?;
    Ok((checked, bytes))
}

/// A thumbnail of `bytes` with its content type, or `None` when the bytes are not a
/// JPEG or PNG this can decode (the caller then serves the original). Images already
/// small enough are returned as `None` too: the original is the best thumbnail.
/// CPU-bound: call from a blocking thread.
pub fn thumbnail(bytes: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    if !matches!(reader.format(), Some(ImageFormat::Jpeg | ImageFormat::Png)) {
        return None;
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoded = reader.decode().ok()?;
    if decoded.width() <= THUMBNAIL_SIZE && decoded.height() <= THUMBNAIL_SIZE {
        return None;
    }
    let small = decoded.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE);
    let mut out = Vec::new();
    if small.color().has_alpha() {
        // Keep transparency: PNG.
        small
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .ok()?;
        Some((out, "image/png"))
    } else {
        let rgb = DynamicImage::ImageRgb8(small.to_rgb8());
        JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&rgb)
            .ok()?;
        Some((out, "image/jpeg"))
    }
}

/// How many leading bytes of a file [`display_size`] needs at most: the header and the
/// EXIF block (at most 64 KiB) come first.
pub const SIZE_PREFIX_BYTES: usize = 256 * 1024;

/// The width and height a browser shows a JPEG or PNG at, from its header alone (a
/// prefix of the file will do): the stored size, turned when the EXIF orientation
/// rotates by a quarter. Browsers, like the recognition service's decoder, apply the
/// orientation, so face boxes are in these coordinates. `None` for other formats or an
/// unreadable header.
pub fn display_size(prefix: &[u8]) -> Option<(u32, u32)> {
    let reader = ImageReader::new(Cursor::new(prefix))
        .with_guessed_format()
        .ok()?;
    if !matches!(reader.format(), Some(ImageFormat::Jpeg | ImageFormat::Png)) {
        return None;
    }
    let mut decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return None;
    }
    let turned = matches!(
        decoder.orientation(),
        Ok(Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH)
    );
    Some(if turned {
        (height, width)
    } else {
        (width, height)
    })
}

#[cfg(test)]
mod tests {
    use facewire_config::testing::{mkfifo, release_readers, FifoSwap};

    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    /// `read_image` on its own thread, or `None` when it is still blocked after 5 s.
    fn read_within(
        root: &ImageRoot,
        raw: &str,
    ) -> Option<Result<(CheckedPath, Vec<u8>), PathError>> {
        let (root, raw) = (root.clone(), raw.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_image(&root, &raw, u64::MAX));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5)).ok()
    }

    #[test]
    fn reads_only_regular_files_inside_the_root() {
        let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(dir.path().join("a.jpg"), b"jpeg bytes").unwrap();
        mkfifo(&dir.path().join("pipe.jpg"));
        mkfifo(&outside.path().join("pipe.jpg"));
        std::fs::write(outside.path().join("secret.jpg"), b"secret").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("pipe.jpg"),
            dir.path().join("out-pipe.jpg"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.jpg"),
            dir.path().join("out-file.jpg"),
        )
        .unwrap();
        let root = ImageRoot::new(dir.path(), 1 << 20).unwrap();

        let (checked, bytes) = read_image(&root, "a.jpg", u64::MAX).unwrap();
        assert_eq!(
            (checked.relative.as_str(), &bytes[..]),
            ("a.jpg", &b"jpeg bytes"[..])
        );
        assert_eq!(read_image(&root, "a.jpg", 4).unwrap().1, b"jpeg");
        let pipe = read_within(&root, "pipe.jpg");
        if pipe.is_none() {
            release_readers(&dir.path().join("pipe.jpg"));
        }
        assert!(
            matches!(pipe, Some(Err(PathError::NotAFile(_)))),
            "a FIFO in the root: {pipe:?}"
        );
        for (raw, what) in [("out-pipe.jpg", "a FIFO"), ("out-file.jpg", "a file")] {
            let got = read_within(&root, raw);
            if got.is_none() {
                release_readers(&outside.path().join("pipe.jpg"));
            }
            assert!(
                matches!(got, Some(Err(PathError::OutsideRoot(_)))),
                "a symlink to {what} outside the root: {got:?}"
            );
        }
    }

    #[test]
    fn a_file_swapped_for_a_fifo_never_blocks_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().to_path_buf();
        let root = ImageRoot::new(&dir_path, 1 << 20).unwrap();
        // Swap photo.jpg between a regular file and a FIFO as fast as rename allows.
        let swap = FifoSwap::start(&dir_path, "photo.jpg", b"jpeg");
        let (mut read, mut refused, mut hung) = (0, 0, false);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < until {
            match read_within(&root, "photo.jpg") {
                Some(Ok((_, bytes))) => {
                    assert_eq!(bytes, b"jpeg");
                    read += 1;
                }
                Some(Err(PathError::NotAFile(_) | PathError::NotFound(_))) => refused += 1,
                Some(Err(e)) => panic!("unexpected refusal {e:?}"),
                None => {
                    hung = true;
                    break;
                }
            }
        }
        swap.stop(hung);
        assert!(
            !hung,
            "a read blocked on the FIFO (after {read} read, {refused} refused)"
        );
        assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type_for("a/b/photo.JPG"), "image/jpeg");
        assert_eq!(content_type_for("x.jpeg"), "image/jpeg");
        assert_eq!(content_type_for("x.png"), "image/png");
        assert_eq!(content_type_for("x.webp"), "image/webp");
        assert_eq!(content_type_for("x.svg"), "application/octet-stream");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }

    #[test]
    fn large_jpeg_is_downscaled_keeping_its_aspect() {
        let big = RgbImage::from_pixel(640, 320, Rgb([200, 30, 30]));
        let bytes = encode(DynamicImage::ImageRgb8(big), ImageFormat::Jpeg);
        let (thumb, ct) = thumbnail(&bytes).expect("a thumbnail");
        assert_eq!(ct, "image/jpeg");
        assert!(thumb.len() < bytes.len());
        let back = image::load_from_memory(&thumb).unwrap();
        assert_eq!((back.width(), back.height()), (160, 80));
    }

    #[test]
    fn transparent_png_stays_png() {
        let big = RgbaImage::from_pixel(400, 400, Rgba([0, 0, 255, 128]));
        let bytes = encode(DynamicImage::ImageRgba8(big), ImageFormat::Png);
        let (thumb, ct) = thumbnail(&bytes).expect("a thumbnail");
        assert_eq!(ct, "image/png");
        let back = image::load_from_memory(&thumb).unwrap();
        assert_eq!((back.width(), back.height()), (160, 160));
    }

    #[test]
    fn display_size_reads_the_header_of_a_prefix() {
        let jpeg = encode(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(640, 320, Rgb([9, 9, 9]))),
            ImageFormat::Jpeg,
        );
        assert_eq!(display_size(&jpeg), Some((640, 320)));
        // A file cut short in its pixel data still has its header.
        let cut = &jpeg[..jpeg.len() - jpeg.len() / 4];
        assert_eq!(display_size(cut), Some((640, 320)));
        // EXIF orientation 6 (turn 90° clockwise): shown 320 wide, 640 high.
        let mut turned = jpeg[..2].to_vec();
        turned.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x22]);
        turned.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08");
        turned.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        turned.extend_from_slice(&jpeg[2..]);
        assert_eq!(display_size(&turned), Some((320, 640)));
        let png = encode(
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(30, 50, Rgba([0, 0, 0, 0]))),
            ImageFormat::Png,
        );
        assert_eq!(display_size(&png), Some((30, 50)));
        assert_eq!(display_size(b"GIF89a...."), None);
        assert_eq!(display_size(b"\xff\xd8\xff\xe0 not really a jpeg"), None);
    }

    #[test]
    fn small_garbage_and_other_formats_are_served_as_they_are() {
        let small = RgbImage::from_pixel(32, 32, Rgb([1, 2, 3]));
        assert!(thumbnail(&encode(DynamicImage::ImageRgb8(small), ImageFormat::Png)).is_none());
        assert!(thumbnail(b"\xff\xd8\xff\xe0 not really a jpeg").is_none());
        assert!(thumbnail(b"GIF89a....").is_none());
        assert!(thumbnail(b"").is_none());
    }
}
