//! Stage 4: open the claimed files through the image root (what was opened is checked: a
//! file swapped for a FIFO is refused, not waited on), read them just before their call,
//! and hash what was read. Failures here are permanent.
//!
//! The hash recorded at submission may no longer describe the file: it can be replaced
//! between submission and processing. What is recognised is what is read now, so when the
//! two differ the new hash is kept to be recorded with the outcome (and the change is
//! logged); the faces on record then always belong to the bytes of the recorded hash.

use std::{fs::File, io::Read};

use facewire_config::ImageRoot;
use sha2::{Digest, Sha256};

/// Opens each path (blocking): its size and open file, or why it cannot be read.
pub fn open_all(root: &ImageRoot, paths: &[String]) -> Vec<Result<(u64, File), String>> {
    paths
        .iter()
        .map(|p| {
            root.open(p)
                .map(|(checked, file)| (checked.size, file))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// A file to read, with the hash on record for it.
#[derive(Debug)]
pub struct ToRead {
    /// The image's index in the batch.
    pub index: usize,
    /// The opened file.
    pub file: File,
    /// The content hash on record.
    pub recorded_hash: String,
}

/// A file read.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The image's bytes.
    pub bytes: Vec<u8>,
    /// The hash of `bytes` when it is not the one on record: the file changed after it
    /// was recorded.
    pub changed_hash: Option<String>,
}

/// Reads each file to the end (blocking) and rechecks its hash; per index, the bytes or
/// why they could not be read.
pub fn read_all(files: Vec<ToRead>) -> Vec<(usize, Result<Loaded, String>)> {
    files
        .into_iter()
        .map(|mut f| {
            let mut bytes = Vec::new();
            let read = match f.file.read_to_end(&mut bytes) {
                Ok(_) => Ok(Loaded {
                    changed_hash: changed_hash(&f.recorded_hash, &bytes),
                    bytes,
                }),
                Err(e) => Err(format!("reading the image: {e}")),
            };
            (f.index, read)
        })
        .collect()
}

/// Hex SHA-256 of `bytes`, as the receiver records it.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hash of `bytes` if it differs from `recorded` (compared without regard to case).
pub fn changed_hash(recorded: &str, bytes: &[u8]) -> Option<String> {
    let now = content_hash(bytes);
    (!now.eq_ignore_ascii_case(recorded)).then_some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_receivers_sha256() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_unchanged_file_keeps_its_hash_and_a_replaced_one_gets_a_new_one() {
        let recorded = content_hash(b"first photo");
        assert_eq!(changed_hash(&recorded, b"first photo"), None);
        assert_eq!(changed_hash(&recorded.to_uppercase(), b"first photo"), None);
        assert_eq!(
            changed_hash(&recorded, b"second photo"),
            Some(content_hash(b"second photo"))
        );
    }

    #[test]
    fn files_are_opened_inside_the_root_and_read_with_their_hash_rechecked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same.jpg"), b"same").unwrap();
        std::fs::write(dir.path().join("swapped.jpg"), b"after").unwrap();
        let root = ImageRoot::new(dir.path(), 1_000).unwrap();
        let paths = ["same.jpg", "gone.jpg", "swapped.jpg", "../outside.jpg"].map(String::from);
        let opened = open_all(&root, &paths);
        assert_eq!(opened.len(), 4);
        assert!(opened[1].is_err() && opened[3].is_err(), "{opened:?}");

        let recorded = [content_hash(b"same"), content_hash(b"before")];
        let files = opened
            .into_iter()
            .enumerate()
            .filter_map(|(index, o)| o.ok().map(|(_, file)| (index, file)))
            .zip(recorded)
            .map(|((index, file), recorded_hash)| ToRead {
                index,
                file,
                recorded_hash,
            })
            .collect();
        let read = read_all(files);
        assert_eq!(
            read,
            vec![
                (
                    0,
                    Ok(Loaded {
                        bytes: b"same".to_vec(),
                        changed_hash: None
                    })
                ),
                (
                    2,
                    Ok(Loaded {
                        bytes: b"after".to_vec(),
                        changed_hash: Some(content_hash(b"after"))
                    })
                ),
            ]
        );
    }
}
