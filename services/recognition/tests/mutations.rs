//! A bounded, deterministic stand-in for the fuzzer that runs on stable Rust in every
//! test run: hundreds of mutated real images (bit flips, truncations, spliced chunks,
//! forged header dimensions) through decode + detect + embed. Each must end in an
//! answer or an error — never a panic, an abort or a runaway allocation — and the
//! recognizer must still work afterwards.

mod support;

use support::*;

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(16) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let at = rng.below(b.len());
            let junk: Vec<u8> = (0..rng.below(512)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
        }
        3 => {
            // Overwrite bytes near the start, where headers and dimensions live.
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len().min(64));
                b[i] = rng.next() as u8;
            }
        }
        _ => {
            let from = rng.below(b.len());
            let len = rng.below(b.len() - from);
            let chunk = b[from..from + len].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
    }
    b
}

#[test]
fn mutated_images_never_crash_the_recognizer() {
    let r = recognizer();
    let jpeg = std::fs::read(&johns("John_Salley")[0]).unwrap();
    let png = {
        use opencv::{core::Vector, imgcodecs, prelude::*};
        let m =
            imgcodecs::imdecode(&Mat::from_slice(&jpeg).unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        let mut buf = Vector::<u8>::new();
        imgcodecs::imencode(".png", &m, &mut buf, &Vector::new()).unwrap();
        buf.to_vec()
    };
    let bmp = {
        use opencv::{core::Vector, imgcodecs, prelude::*};
        let m =
            imgcodecs::imdecode(&Mat::from_slice(&jpeg).unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        let mut buf = Vector::<u8>::new();
        imgcodecs::imencode(".bmp", &m, &mut buf, &Vector::new()).unwrap();
        buf.to_vec()
    };
    let seeds = [jpeg.clone(), png, bmp];
    let mut rng = Rng(0x5EED_F00D_CAFE_BEEF);
    let (mut ok, mut err) = (0, 0);
    for i in 0..600 {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(seed, &mut rng);
        match r.recognize(&input) {
            Ok(faces) => {
                ok += 1;
                for f in faces {
                    assert!(f.detection.bbox.iter().all(|v| v.is_finite()), "case {i}");
                }
            }
            Err(_) => err += 1,
        }
    }
    eprintln!("600 mutated images: {ok} answered, {err} refused");
    // Both paths were exercised, and the recognizer is intact.
    assert!(ok > 0 && err > 0);
    assert_eq!(r.recognize(&jpeg).unwrap().len(), 1);
}
