use facewire_recognition::*;
use std::time::Instant;
fn main() {
    let r = Recognizer::load(&RecognizerOptions {
        workers: 1,
        ..RecognizerOptions::new("models")
    })
    .unwrap();
    let bytes = std::fs::read("testdata/dlib/faces/Tom_Cruise_avp_2014_4.jpg").unwrap();
    let img = image::decode(&bytes, &ImageLimits::default()).unwrap();
    println!("threads {}", opencv::core::get_num_threads().unwrap());
    for _ in 0..3 {
        let t = Instant::now();
        let d = r.detect(&bytes).unwrap();
        let t1 = t.elapsed();
        let t = Instant::now();
        let a = r.analyze_image(&img).unwrap();
        let t2 = t.elapsed();
        println!(
            "detect+decode {:?} analyze {:?} faces {} {}",
            t1,
            t2,
            d.len(),
            a.len()
        );
    }
}
