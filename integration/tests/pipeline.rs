//! The whole pipeline on real photos: enroll people, run `facewire up`, submit photos
//! the gallery has never seen with the tutorial's body, and see the right names.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use facewire_integration::{facewire_bin, grpcurl, workspace_root, Backends, Service};
use facewire_proto::v1::{ImageStatus, WatchImagesRequest};

fn johns() -> PathBuf {
    let dir = workspace_root().join("testdata/dlib/johns");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-testdata",
        dir.display()
    );
    dir
}

fn photos(person: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(johns().join(person))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{person}/{n}")).collect()
}

fn env(backends: &Backends) -> HashMap<String, String> {
    let mut env = backends.env.clone();
    env.insert("FACEWIRE_IMAGE_ROOT".into(), johns().display().to_string());
    env.insert(
        "FACEWIRE_MODEL_DIR".into(),
        workspace_root().join("models").display().to_string(),
    );
    env.insert("FACEWIRE_RECOGNITION_ADDR".into(), "127.0.0.1:0".into());
    env.insert("FACEWIRE_LOG".into(), "warn".into());
    env
}

async fn facewire(args: &[&str], env: &HashMap<String, String>) -> std::process::Output {
    tokio::process::Command::new(facewire_bin())
        .args(args)
        .envs(env)
        .output()
        .await
        .expect("run facewire")
}

#[tokio::test]
async fn up_recognises_enrolled_people_in_photos_it_has_never_seen() {
    let backends = Backends::embedded();
    let env = env(&backends);
    // Enroll one photo each of two people, through the CLI on the embedded database.
    for person in ["John_Salley", "John_Simm"] {
        let first = johns().join(&photos(person)[0]);
        let out = facewire(&["enroll", person, first.to_str().unwrap()], &env).await;
        assert!(out.status.success(), "enroll {person}: {out:?}");
    }

    let up = Service::spawn(&["up"], &env).await;
    let addr = up.grpc_addr().to_string();
    let salley = photos("John_Salley")[1].clone();
    let simm = photos("John_Simm")[1].clone();
    let body = format!(r#"{{"paths":[{{"path":"{salley}"}},{{"path":"{simm}"}}]}}"#);
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "facewire.v1.ImageService/SubmitImages",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<i64> = (0..2)
        .map(|i| {
            v["results"][i]["image"]["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();

    let mut client = up.client().await;
    let mut stream = client
        .raw()
        .watch_images(WatchImagesRequest {
            ids: ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = HashMap::new();
    let watched = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(msg) = stream.message().await.unwrap() {
            let image = msg.image.unwrap();
            last.insert(image.id, image);
        }
    })
    .await;
    assert!(watched.is_ok(), "images did not finish: {last:?}");
    let first = &last[&ids[0]];
    let second = &last[&ids[1]];
    assert_eq!(first.status, ImageStatus::Done as i32, "{first:?}");
    assert_eq!(second.status, ImageStatus::Done as i32, "{second:?}");
    assert!(
        first.people.iter().any(|p| p.name == "John_Salley"),
        "{first:?}"
    );
    assert!(
        second.people.iter().any(|p| p.name == "John_Simm"),
        "{second:?}"
    );

    // The same through `facewire submit --wait`, which prints the table.
    let mut submit_env = env.clone();
    submit_env.insert("FACEWIRE_SERVER".into(), up.grpc_url());
    let third = photos("John_Salley")[2].clone();
    let out = facewire(&["submit", "--wait", &third], &submit_env).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        table.contains("done") && table.contains("John_Salley"),
        "{table}"
    );
}
