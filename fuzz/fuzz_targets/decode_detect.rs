//! Fuzzes the recognition entry point: arbitrary bytes → header check → decode →
//! detect → embed. It must never crash, hang or allocate beyond the limits, whatever
//! the bytes; an `Err` is a fine answer.
#![no_main]

use std::sync::OnceLock;

use facewire_recognition::{image::ImageLimits, Recognizer, RecognizerOptions};
use libfuzzer_sys::fuzz_target;

fn recognizer() -> &'static Recognizer {
    static R: OnceLock<Recognizer> = OnceLock::new();
    R.get_or_init(|| {
        let dir = std::env::var("FACEWIRE_MODEL_DIR").unwrap_or_else(|_| "../models".into());
        let mut options = RecognizerOptions::new(dir);
        options.workers = 1;
        // Small limits keep each run fast and make the limit paths reachable.
        options.limits = ImageLimits {
            max_bytes: 1 << 20,
            max_pixels: 4_000_000,
            ..ImageLimits::default()
        };
        Recognizer::load(&options).expect("models (run scripts/setup)")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = recognizer().recognize(data);
});
