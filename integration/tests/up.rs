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

/// `facewire submit --wait DIR` waits for any number of files (more than a server
/// watches in one stream), with one table at the end.
#[tokio::test]
async fn submit_waits_for_more_files_than_one_watch_takes() {
    let backends = Backends::embedded();
    let images = tempfile::tempdir().unwrap();
    let dir = images.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    // Not real photos: each fails at recognition at once, which is a final status too.
    for i in 0..1100 {
        std::fs::write(dir.join(format!("{i:04}.jpg")), format!("not a jpeg {i}")).unwrap();
    }
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    let up = Service::spawn(&["up"], &env).await;
    let out = tokio::process::Command::new(facewire_integration::facewire_bin())
        .args(["submit", "--wait", "--server", &up.grpc_url(), "many"])
        .current_dir(images.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("the limit is"), "{stderr}");
    let failed = stdout.lines().filter(|l| l.contains(" failed ")).count();
    assert_eq!(
        failed,
        1100,
        "{stderr}\n{}",
        &stdout[..stdout.len().min(2000)]
    );
}
