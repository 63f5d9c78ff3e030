use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "facewire/v1/image.proto",
        "facewire/v1/recognition.proto",
        "facewire/v1/people.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("facewire_v1_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
