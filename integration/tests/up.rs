//! `facewire up` on the embedded default answers the tutorial's calls.

use facewire_integration::{grpcurl, image_dir, Backends, Service};
use serde_json::Value;

#[tokio::test]
async fn up_accepts_the_tutorial_body_on_the_embedded_default() {
    let backends = Backends::embedded();
    let images = image_dir();
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    let up = Service::spawn(&["up"], &env).await;
    let addr = up.grpc_addr().to_string();
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"paths":[{"path":"unknown4456.jpg"}]}"#,
        &addr,
        "facewire.v1.ImageService/SubmitImages",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["path"], "unknown4456.jpg");
    assert!(v["results"][0]["image"]["id"].is_string(), "{v}");
    // The SQLite file lives in the data dir.
    assert!(backends.data_dir.path().join("facewire.db").exists());
}
