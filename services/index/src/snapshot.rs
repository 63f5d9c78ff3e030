//! Saving the approximate index to disk and loading it back.
//!
//! Building the HNSW graph of a million faces takes minutes; loading a saved one takes
//! seconds. A snapshot is only a cache of the database: whoever loads one checks every
//! entry against the database ([`crate::Auto::holds`]) and moves those that differ, so a
//! stale snapshot costs time, never correctness, and one that cannot be read is rebuilt.
//!
//! Two files: the usearch graph at the path given and, beside it (`<path>.ids`), the ids
//! it holds (usearch cannot list its keys), headed by the graph file's length so that a
//! graph and ids from two different saves are told apart. Each is written to a temporary
//! name and renamed into place.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::IndexError;

/// Heads the ids file: its format, version 1.
const MAGIC: &[u8; 8] = b"FWIDS\x00\x00\x01";
const HEADER: usize = MAGIC.len() + 8 + 8;

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Where the ids of the graph at `path` are kept.
pub(crate) fn ids_path(path: &Path) -> PathBuf {
    suffixed(path, ".ids")
}

/// A temporary name beside `path`, this save's own: replicas sharing a volume (where each
/// container's process is often pid 1) never write the same temporary file.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let save = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    suffixed(
        path,
        &format!(".tmp-{}-{nanos:x}-{save}", std::process::id()),
    )
}

/// usearch takes paths as UTF-8 strings.
pub(crate) fn utf8(path: &Path) -> Result<&str, IndexError> {
    path.to_str()
        .ok_or_else(|| mismatch("its path is not valid UTF-8"))
}

pub(crate) fn failed(error: impl std::fmt::Display) -> IndexError {
    IndexError::Snapshot(error.to_string())
}

pub(crate) fn mismatch(why: &str) -> IndexError {
    IndexError::Snapshot(why.to_string())
}

/// Flushes the file at `path` to disk and returns its length.
pub(crate) fn sync_len(path: &Path) -> Result<u64, IndexError> {
    let file = File::open(path).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    Ok(file.metadata().map_err(failed)?.len())
}

pub(crate) fn write_ids(
    path: &Path,
    graph_bytes: u64,
    ids: &HashSet<i64>,
) -> Result<(), IndexError> {
    let file = File::create(path).map_err(failed)?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC).map_err(failed)?;
    out.write_all(&graph_bytes.to_le_bytes()).map_err(failed)?;
    out.write_all(&(ids.len() as u64).to_le_bytes())
        .map_err(failed)?;
    for id in ids {
        out.write_all(&id.to_le_bytes()).map_err(failed)?;
    }
    let file = out.into_inner().map_err(|e| failed(e.error()))?;
    file.sync_all().map_err(failed)
}

/// The ids and the graph length [`write_ids`] wrote.
pub(crate) fn read_ids(path: &Path) -> Result<(Vec<i64>, u64), IndexError> {
    let bytes = std::fs::read(path).map_err(failed)?;
    let word = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(mismatch("its ids file is not one facewire wrote"));
    }
    let graph_bytes = word(MAGIC.len());
    let count = word(MAGIC.len() + 8);
    if (bytes.len() - HEADER) as u64 != count.saturating_mul(8) {
        return Err(mismatch("its ids file is truncated"));
    }
    let ids: Vec<i64> = (0..count as usize)
        .map(|i| word(HEADER + i * 8) as i64)
        .collect();
    if ids.iter().any(|&id| id < 0) {
        return Err(mismatch("its ids file holds a negative id"));
    }
    Ok((ids, graph_bytes))
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), IndexError> {
    std::fs::rename(from, to).map_err(failed)
}

/// Removes a snapshot (both files), if there is one.
pub(crate) fn remove(path: &Path) -> Result<(), IndexError> {
    for file in [path.to_path_buf(), ids_path(path)] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{FaceGenerator, Params};
    use crate::{Auto, AutoConfig, HnswConfig, VectorIndex};

    #[test]
    fn every_save_writes_under_a_temporary_name_of_its_own() {
        let path = Path::new("/data/face-index.usearch");
        let (a, b) = (temporary(path), temporary(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        assert!(a
            .to_string_lossy()
            .starts_with("/data/face-index.usearch.tmp-"));
    }

    fn config(connectivity: usize) -> AutoConfig {
        AutoConfig {
            threshold: 500,
            hnsw: HnswConfig {
                connectivity,
                ..HnswConfig::default()
            },
        }
    }

    /// 2 000 clustered faces in an approximate index.
    fn built(generator: &FaceGenerator, ids: std::ops::Range<usize>) -> Auto {
        let auto = Auto::with_config(128, config(32));
        auto.extend(ids.map(|i| (i as i64, generator.face(i))))
            .unwrap();
        assert!(auto.is_approximate());
        auto
    }

    fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
        ids.sort_unstable();
        ids
    }

    fn expect_refused(result: Result<Auto, IndexError>, what: &str) {
        match result {
            Err(IndexError::Snapshot(why)) => println!("{what}: refused ({why})"),
            Err(other) => panic!("{what}: wrong error {other}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }

    #[test]
    fn a_saved_index_loads_back_with_the_same_answers_and_stays_writable() {
        let generator = FaceGenerator::new(Params::sface_like(200, 21));
        let original = built(&generator, 0..2_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.usearch");
        assert!(original.save(&path).unwrap());
        assert!(path.exists() && ids_path(&path).exists());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file is left behind");

        let loaded = Auto::restore(128, config(32), &path).unwrap();
        assert!(loaded.is_approximate());
        assert_eq!(sorted(loaded.ids()), sorted(original.ids()));
        for q in 0..100 {
            let query = generator.query(q);
            let want: Vec<i64> = original
                .search(&query, 5)
                .unwrap()
                .iter()
                .map(|n| n.id)
                .collect();
            let got: Vec<i64> = loaded
                .search(&query, 5)
                .unwrap()
                .iter()
                .map(|n| n.id)
                .collect();
            assert_eq!(got, want, "query {q}");
        }
        for id in (0..2_000).step_by(7) {
            assert!(loaded.holds(id as i64, &generator.face(id)), "face {id}");
            assert!(
                !loaded.holds(id as i64, &generator.face(id + 1)),
                "face {id}"
            );
        }
        assert!(
            !loaded.holds(5_000, &generator.face(0)),
            "an id never stored"
        );
        // Writes go on after a load: a new face, a replaced one, a removed one.
        loaded.upsert(2_000, &generator.face(2_000)).unwrap();
        loaded.upsert(3, &generator.face(3_000)).unwrap();
        assert!(loaded.remove(4).unwrap());
        assert_eq!(
            loaded.search(&generator.face(2_000), 1).unwrap()[0].id,
            2_000
        );
        assert!(loaded.holds(3, &generator.face(3_000)));
        assert!(!loaded.contains(4));
        assert_eq!(loaded.len(), 2_000);
    }

    #[test]
    fn snapshots_that_do_not_belong_are_refused() {
        let generator = FaceGenerator::new(Params::sface_like(200, 22));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.usearch");
        expect_refused(Auto::restore(128, config(32), &path), "missing");

        // The ids of one save beside the graph of another.
        let first = built(&generator, 0..1_000);
        assert!(first.save(&path).unwrap());
        let first_ids = std::fs::read(ids_path(&path)).unwrap();
        let second = built(&generator, 0..1_200);
        assert!(second.save(&path).unwrap());
        Auto::restore(128, config(32), &path).unwrap();
        std::fs::write(ids_path(&path), &first_ids).unwrap();
        expect_refused(Auto::restore(128, config(32), &path), "mixed saves");

        // Other settings than the ones saved with.
        assert!(second.save(&path).unwrap());
        expect_refused(
            Auto::restore(128, config(16), &path),
            "other links per node",
        );
        expect_refused(Auto::restore(64, config(32), &path), "other dimension");

        // Cut short: the ids file, then the graph (its length no longer matches).
        let ids = std::fs::read(ids_path(&path)).unwrap();
        std::fs::write(ids_path(&path), &ids[..ids.len() - 4]).unwrap();
        expect_refused(Auto::restore(128, config(32), &path), "truncated ids");
        std::fs::write(ids_path(&path), &ids).unwrap();
        let graph = std::fs::read(&path).unwrap();
        std::fs::write(&path, &graph[..graph.len() / 2]).unwrap();
        expect_refused(Auto::restore(128, config(32), &path), "truncated graph");
        std::fs::write(ids_path(&path), b"not an ids file at all, not at all").unwrap();
        expect_refused(Auto::restore(128, config(32), &path), "foreign ids file");
    }

    #[test]
    fn an_exact_index_saves_nothing_and_clears_a_stale_snapshot() {
        let generator = FaceGenerator::new(Params::sface_like(50, 23));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.usearch");
        assert!(built(&generator, 0..600).save(&path).unwrap());
        let small = Auto::with_config(128, config(32));
        small
            .extend((0..100).map(|i| (i as i64, generator.face(i))))
            .unwrap();
        assert!(!small.save(&path).unwrap());
        assert!(!path.exists() && !ids_path(&path).exists());
        assert!(!small.save(&path).unwrap(), "nothing to remove is fine too");
    }
}
