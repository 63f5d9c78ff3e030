//! The people CLI contract, end to end: the real `facewire` binary against `facewire up`
//! (`--server`) and on the embedded data dir, with real photos.

use std::{collections::HashMap, path::Path};

use facewire_integration::{cli, facewire_bin, photos, run_cli, workspace_root, Backends, Service};
use serde_json::Value;

/// Like [`cli`], but expects failure and returns stderr.
async fn cli_fails(dir: &Path, env: &HashMap<String, String>, args: &[&str]) -> String {
    let out = run_cli(dir, env, args).await;
    assert!(!out.status.success(), "facewire {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ids(v: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

fn person<'a>(people: &'a Value, name: &str) -> &'a Value {
    people
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {people}"))
}

#[tokio::test]
async fn the_people_workflow_embedded_and_served() {
    let backends = Backends::embedded();
    let root = tempfile::tempdir().unwrap();
    for who in ["John_Salley", "John_Simm"] {
        let dir = root.path().join(who);
        std::fs::create_dir_all(&dir).unwrap();
        for p in photos(who).iter().take(4) {
            std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let dir = root.path();
    let mut env = backends.env.clone();
    env.insert("FACEWIRE_IMAGE_ROOT".into(), dir.display().to_string());
    // This is the hand-naming workflow: John_Simm's faces must stay unassigned until named.
    // With grouping on, the background pass may turn them into a suggested person at any
    // moment (tests/grouping.rs in services/recognition covers that), so it is off here.
    env.insert("FACEWIRE_GROUPING".into(), "false".into());
    // Enrol one person embedded, before anything runs.
    let first = photos("John_Salley")[0].clone();
    let out = tokio::process::Command::new(facewire_bin())
        .args(["enroll", "John_Salley"])
        .arg(&first)
        .envs(&env)
        .env("FACEWIRE_MODEL_DIR", workspace_root().join("models"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let up = Service::spawn(&["up"], &env).await;
    let server = up.grpc_url();
    let s = ["--server", server.as_str(), "--json"];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(s.iter().map(|a| a.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| {
        let env = env.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(dir, &env, &refs).await
        }
    };
    let out = tokio::process::Command::new(facewire_bin())
        .args([
            "submit",
            "--wait",
            "--server",
            &server,
            "John_Salley",
            "John_Simm",
        ])
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Every photo of John_Salley, and nobody else's.
    let salley = run(with(&["images", "--person", "John_Salley"])).await;
    assert_eq!(salley.as_array().unwrap().len(), 4, "{salley}");
    assert!(salley
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["path"].as_str().unwrap().starts_with("John_Salley/")));
    // John_Simm's faces are unassigned; name one of them by hand.
    let unassigned = run(with(&["faces", "--unassigned"])).await;
    assert_eq!(unassigned.as_array().unwrap().len(), 4, "{unassigned}");
    assert!(unassigned[0]["person"].is_null() && unassigned[0]["assigned"].is_null());
    assert!(unassigned[0]["box"]["width"].as_f64().unwrap() > 20.0);
    let face = unassigned[0]["id"].as_i64().unwrap().to_string();
    run(vec![
        "assign".into(),
        face.clone(),
        "--to".into(),
        "John_Simm".into(),
        "--server".into(),
        server.clone(),
    ])
    .await;
    // The re-check named the other photos of John_Simm without reprocessing them.
    let simm = run(with(&["faces", "--person", "John_Simm"])).await;
    assert_eq!(simm.as_array().unwrap().len(), 4, "{simm}");
    let manual: Vec<_> = simm
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["assigned"] == "manual")
        .collect();
    assert_eq!(manual.len(), 1);
    assert_eq!(manual[0]["id"].to_string(), face);

    // Take a face away from John_Salley by hand: a re-run never gives it back.
    let salley_faces = run(with(&["faces", "--person", "John_Salley"])).await;
    let detected = salley_faces
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["image_id"].is_i64() && f["assigned"] == "auto")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    run(vec![
        "unassign".into(),
        detected.clone(),
        "--server".into(),
        server.clone(),
    ])
    .await;
    let job = run(with(&["rerun", "recognition", "--all", "--wait"])).await;
    assert_eq!(job["state"], "done", "{job}");
    let simm_after = run(with(&["faces", "--person", "John_Simm"])).await;
    assert!(simm_after
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == face.parse::<i64>().unwrap() && f["assigned"] == "manual"));
    let unassigned = run(with(&["faces", "--unassigned"])).await;
    assert_eq!(ids(&unassigned), vec![detected.parse::<i64>().unwrap()]);
    let jobs = run(with(&["jobs"])).await;
    assert_eq!(jobs[0]["kind"], "recognition");

    // Merge, then undo: both people exactly as before.
    let before = run(with(&["people"])).await;
    let named = run(with(&["people", "--named"])).await;
    assert_eq!(named, before);
    let merge = run(with(&["merge", "John_Salley", "John_Simm"])).await;
    let merged = run(with(&["people"])).await;
    assert_eq!(merged.as_array().unwrap().len(), 1);
    assert_eq!(person(&merged, "John_Salley")["images"], 7, "{merged}");
    let merge_id = merge["merge_id"].as_i64().unwrap().to_string();
    run(vec![
        "unmerge".into(),
        merge_id.clone(),
        "--server".into(),
        server.clone(),
    ])
    .await;
    assert_eq!(run(with(&["people"])).await, before);
    let again = cli_fails(dir, &env, &["unmerge", &merge_id, "--server", &server]).await;
    assert!(again.contains("undone already"), "{again}");

    // Rename and hide.
    run(vec![
        "rename".into(),
        "John_Simm".into(),
        "John Simm".into(),
        "--server".into(),
        server.clone(),
    ])
    .await;
    let both = run(with(&[
        "images",
        "--person",
        "John_Salley",
        "--person",
        "John Simm",
    ]))
    .await;
    assert!(both.as_array().unwrap().is_empty());
    let simm_id = person(&run(with(&["people"])).await, "John Simm")["id"].to_string();
    run(vec![
        "hide".into(),
        simm_id,
        "--server".into(),
        server.clone(),
    ])
    .await;
    assert_eq!(run(with(&["people"])).await.as_array().unwrap().len(), 1);
    let bad = cli_fails(
        dir,
        &env,
        &["assign", &face, "--to", "<b>x</b>", "--server", &server],
    )
    .await;
    assert!(bad.contains("invalid name"), "{bad}");
    drop(up);

    // The same data from the embedded data dir, no server.
    let embedded = cli(dir, &env, &["people", "--json", "--hidden"]).await;
    assert_eq!(embedded.as_array().unwrap().len(), 2);
    let simm = cli(dir, &env, &["images", "--person", "John Simm", "--json"]).await;
    assert_eq!(simm.as_array().unwrap().len(), 4);
    assert!(simm[0]["people"]
        .as_array()
        .unwrap()
        .contains(&Value::from("John Simm")));
    let faces = cli(
        dir,
        &env,
        &["faces", "--image", &simm[0]["id"].to_string(), "--json"],
    )
    .await;
    assert_eq!(faces[0]["person"], "John Simm");
    let merge = cli(dir, &env, &["merge", "John_Salley", "John Simm", "--json"]).await;
    let unmerged = cli(
        dir,
        &env,
        &["unmerge", &merge["merge_id"].to_string(), "--json"],
    )
    .await;
    assert_eq!(unmerged.as_array().unwrap().len(), 2);
    let job = cli(
        dir,
        &env,
        &["rerun", "recognition", "--missing", "--wait", "--json"],
    )
    .await;
    assert_eq!(job["state"], "done");
}
