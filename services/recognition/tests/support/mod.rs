//! Shared test support: the models, the dlib photos, one recognizer per test binary.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use facewire_recognition::{Recognizer, RecognizerOptions};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `FACEWIRE_MODEL_DIR` or the repo's `models/` (installed by scripts/setup).
pub fn model_dir() -> PathBuf {
    std::env::var_os("FACEWIRE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"))
}

/// The dlib photos fetched by scripts/fetch-testdata.
pub fn data_dir() -> PathBuf {
    let dir = repo_root().join("testdata/dlib");
    assert!(
        dir.join("johns").is_dir() && dir.join("faces/testing.xml").is_file(),
        "test photos missing in {}: run scripts/fetch-testdata",
        dir.display()
    );
    dir
}

/// A photo from the dlib data, by path relative to it.
pub fn photo(rel: &str) -> Vec<u8> {
    let path = data_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sorted photos of one of the johns.
pub fn johns(person: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir().join("johns").join(person))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The five people of the johns set.
pub const JOHNS: [&str; 5] = [
    "John_Salley",
    "John_Savage",
    "John_Schneider",
    "John_Shimkus",
    "John_Simm",
];

/// Default options with the test model dir and two workers.
pub fn options() -> RecognizerOptions {
    let mut o = RecognizerOptions::new(model_dir());
    o.workers = 2;
    o
}

/// A recognizer of its own, for a test that installs a gallery: the gallery lives in the
/// recognizer, so two tests sharing one would overwrite each other's enrolments.
pub fn own_recognizer() -> Arc<Recognizer> {
    Arc::new(
        Recognizer::load(&options())
            .unwrap_or_else(|e| panic!("{e} (run scripts/setup to install the models)")),
    )
}

/// One recognizer shared by the tests of a binary (the models take a while to load).
/// Only for tests that never change its gallery.
pub fn recognizer() -> Arc<Recognizer> {
    static R: OnceLock<Arc<Recognizer>> = OnceLock::new();
    R.get_or_init(|| {
        Arc::new(
            Recognizer::load(&options())
                .unwrap_or_else(|e| panic!("{e} (run scripts/setup to install the models)")),
        )
    })
    .clone()
}
