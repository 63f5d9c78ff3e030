//! The web page in a real browser (headless Chromium through chromedriver): images
//! submitted to the real receiver show up pending, then change live — without a
//! reload — when their records change in the database.
//!
//! Until the processor and recognition run in these tests, the changes are made the
//! way a processor makes them: `Store::claim` then `Store::finish` on the same database.

use std::{collections::HashMap, path::Path, time::Duration};

use facewire_integration::{browser::Browser, image_dir, workspace_root, Backends, Service};
use facewire_proto::v1::submit_result::Outcome as Submitted;
use facewire_storage::{DetectedFace, Outcome, Store, StoreOptions};
use serde_json::{json, Value};

/// How long the page may take to show a change (a bound on polling, not a measurement).
const SHOW: Duration = Duration::from_secs(30);

/// A file name that is also markup: the page must show it as text and run nothing.
const HOSTILE: &str = "<img src=x onerror=window.__pwned=1>.jpg";

/// Reads one row of the images table (by id): status, people and path as the user
/// sees them, and whether the page has been reloaded since the test marked it.
const READ_ROW_FN: &str = r#"(function (id) {
    const tr = document.getElementById('image-' + id);
    if (!tr) return null;
    const cell = (c) => tr.querySelector('td.' + c).textContent;
    return { status: cell('status'), people: cell('people'), path: cell('path'),
             noReload: window.__noReload === true };
})"#;

async fn read_row(browser: &Browser, id: i64) -> Value {
    browser
        .execute(&format!("return {READ_ROW_FN}(arguments[0]);"), json!([id]))
        .await
}

struct Site {
    receiver: Service,
    frontend: Service,
    backends: Backends,
    _images: tempfile::TempDir,
}

impl Site {
    /// A receiver on a fresh SQLite database and a frontend in front of it, with a
    /// recognition URL where nothing listens.
    async fn start() -> Self {
        let backends = Backends::embedded();
        let images = image_dir();
        let faces = workspace_root().join("testdata/dlib/faces");
        std::fs::create_dir_all(images.path().join("team")).unwrap();
        for (from, to) in [
            ("2008_001009.jpg", "team/ada.jpg"),
            ("2008_002079.jpg", "crowd.jpg"),
            ("2009_004587.jpg", HOSTILE),
        ] {
            std::fs::copy(faces.join(from), images.path().join(to)).unwrap();
        }
        let mut env: HashMap<String, String> = backends.env.clone();
        env.insert(
            "FACEWIRE_IMAGE_ROOT".into(),
            images.path().display().to_string(),
        );
        let receiver = Service::spawn(&["receiver"], &env).await;
        env.insert("FACEWIRE_RECEIVER_URL".into(), receiver.grpc_url());
        env.insert(
            "FACEWIRE_RECOGNITION_URL".into(),
            "http://127.0.0.1:1".into(),
        );
        let frontend = Service::spawn(&["frontend"], &env).await;
        Self {
            receiver,
            frontend,
            backends,
            _images: images,
        }
    }

    /// Submits paths through the receiver; returns their ids in order.
    async fn submit(&self, paths: &[&str]) -> Vec<i64> {
        let results = self
            .receiver
            .client()
            .await
            .submit_images(paths.iter().copied())
            .await
            .expect("SubmitImages");
        results
            .into_iter()
            .map(|r| match r.outcome {
                Some(Submitted::Image(image)) => image.id,
                other => panic!("{} refused: {other:?}", r.path),
            })
            .collect()
    }

    /// Moves images through processing to `outcome`, as a processor would.
    async fn process(&self, ids: &[i64], outcome: Outcome) {
        let store = Store::open(&self.backends.database_url(), StoreOptions::default())
            .await
            .expect("open the receiver's database");
        let claims = store.claim(ids.to_vec()).await.expect("claim");
        assert_eq!(claims.len(), ids.len(), "every image claimed");
        let applied = store
            .finish(claims.into_iter().map(|c| (c, outcome.clone())).collect())
            .await
            .expect("finish");
        assert!(applied.iter().all(|a| *a), "every outcome applied");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.frontend.http_url())
    }
}

async fn wait_row(browser: &Browser, id: i64, status: &str, people: &str) -> Value {
    let script = format!(
        "const row = {READ_ROW_FN}(arguments[0]); \
         return row && row.status === arguments[1] && row.people === arguments[2] ? row : null;"
    );
    browser
        .wait_for(
            &format!("image {id} to show {status} / {people}"),
            &script,
            json!([id, status, people]),
            SHOW,
        )
        .await
}

async fn wait_gone(browser: &Browser, id: i64) {
    browser
        .wait_for(
            &format!("image {id} to leave the filtered table"),
            "return document.getElementById('image-' + arguments[0]) === null \
             && document.body.dataset.live === 'on';",
            json!([id]),
            SHOW,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_images_show_pending_then_change_live() {
    let site = Site::start().await;
    let http = reqwest::Client::new();
    let ready = http.get(site.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "ready with the receiver up");

    let ids = site
        .submit(&["team/ada.jpg", "crowd.jpg", HOSTILE, "unknown4456.jpg"])
        .await;
    let (ada, crowd, hostile, fake) = (ids[0], ids[1], ids[2], ids[3]);

    let browser = Browser::launch().await;
    browser.goto(&site.url("/")).await;
    for id in &ids {
        wait_row(&browser, *id, "pending", "Pending…").await;
    }
    // A reload would clear this; it must survive every live change below.
    browser
        .execute("window.__noReload = true; return true;", json!([]))
        .await;

    // The path is shown as text, exactly, and its markup never ran.
    let row = read_row(&browser, hostile).await;
    assert_eq!(row["path"], HOSTILE);
    let pwned = browser
        .execute("return window.__pwned === undefined && document.querySelectorAll('td.path img').length === 0;", json!([]))
        .await;
    assert_eq!(pwned, Value::Bool(true), "markup in a path ran or rendered");

    let store = Store::open(&site.backends.database_url(), StoreOptions::default())
        .await
        .unwrap();
    site.process(&[ada], named_face(&store, "ada", 0.91).await)
        .await;
    let row = wait_row(&browser, ada, "done", "ada").await;
    assert_eq!(row["noReload"], Value::Bool(true), "the page reloaded");
    site.process(
        &[hostile],
        Outcome::Failed("cannot decode the image".into()),
    )
    .await;
    wait_row(&browser, hostile, "failed", "").await;
    let error = browser
        .execute(
            "return document.querySelector('#image-' + arguments[0] + ' td.error').textContent;",
            json!([hostile]),
        )
        .await;
    assert_eq!(error, "cannot decode the image");
    let row = wait_row(&browser, crowd, "pending", "Pending…").await;
    assert_eq!(row["noReload"], Value::Bool(true));

    // Thumbnails have loaded (real JPEGs, downscaled) before the screenshot.
    browser
        .wait_for(
            "the thumbnails to load",
            "const img = document.querySelector('#image-' + arguments[0] + ' img'); \
             return img && img.complete && img.naturalWidth > 0 && img.naturalWidth <= 160;",
            json!([ada]),
            SHOW,
        )
        .await;
    browser.screenshot(Path::new("/tmp/frontend.png")).await;

    // Filtered by status: only pending rows; a row that stops being pending leaves live.
    browser.goto(&site.url("/?status=pending")).await;
    wait_row(&browser, crowd, "pending", "Pending…").await;
    wait_row(&browser, fake, "pending", "Pending…").await;
    let absent = browser
        .execute(
            "return document.getElementById('image-' + arguments[0]) === null;",
            json!([ada]),
        )
        .await;
    assert_eq!(
        absent,
        Value::Bool(true),
        "a done image on the pending page"
    );
    browser
        .execute("window.__noReload = true; return true;", json!([]))
        .await;
    site.process(&[crowd], Outcome::NoFace).await;
    wait_gone(&browser, crowd).await;
    let row = read_row(&browser, fake).await;
    assert_eq!(row["noReload"], Value::Bool(true));

    browser.goto(&site.url("/?status=no_face")).await;
    wait_row(&browser, crowd, "no_face", "nobody").await;

    // The people page renders and says recognition is unreachable.
    browser.goto(&site.url("/people")).await;
    let text = browser
        .execute(
            "return document.querySelector('main').textContent;",
            json!([]),
        )
        .await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("recognition service at http://127.0.0.1:1 is unreachable"),
        "{text}"
    );
    browser.close().await;

    // Thumbnails: a real JPEG comes back downscaled; a file that is not really a JPEG
    // comes back as it is; an unknown id is 404.
    let original = std::fs::metadata(workspace_root().join("testdata/dlib/faces/2008_001009.jpg"))
        .unwrap()
        .len();
    let thumb = http
        .get(site.url(&format!("/images/{ada}/thumbnail")))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status().as_u16(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let bytes = thumb.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\xff\xd8") && (bytes.len() as u64) < original);
    let full = http
        .get(site.url(&format!("/images/{ada}/thumbnail?full=1")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(full.len() as u64, original);
    let raw = http
        .get(site.url(&format!("/images/{fake}/thumbnail")))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "image/jpeg");
    assert_eq!(
        &raw.bytes().await.unwrap()[..],
        b"\xff\xd8\xff\xe0 not really a jpeg"
    );
    let missing = http
        .get(site.url("/images/999999/thumbnail"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_receiver_is_down_and_recovers() {
    let site = Site::start().await;
    let id = site.submit(&["crowd.jpg"]).await[0];
    let browser = Browser::launch().await;
    browser.goto(&site.url("/")).await;
    wait_row(&browser, id, "pending", "Pending…").await;
    browser
        .execute("window.__noReload = true; return true;", json!([]))
        .await;

    // Crash the receiver: the open page says live updates are paused, and names it.
    // (SIGKILL, not SIGTERM: a crash is what the page must survive, and the receiver's
    // graceful shutdown currently waits for open WatchImages streams to end.)
    let receiver_url = site.receiver.grpc_url();
    let pid = site.receiver.pid().expect("receiver running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the receiver");
    let Site {
        mut receiver,
        frontend,
        backends,
        _images: images,
    } = site;
    receiver
        .wait(Duration::from_secs(30))
        .await
        .expect("receiver exits");
    let banner = browser
        .wait_for(
            "the page to say the receiver is unreachable",
            "const live = document.getElementById('live'); \
             return live.hidden ? null : live.textContent;",
            json!([]),
            SHOW,
        )
        .await;
    let banner = banner.as_str().unwrap_or_default();
    assert!(
        banner.contains(&format!("The receiver at {receiver_url}")),
        "{banner}"
    );

    // A fresh load still renders, saying what is unreachable; readiness fails.
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/", frontend.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains(&format!("The receiver at {receiver_url} is unreachable")),
        "{body}"
    );
    let ready = http
        .get(format!("{}/readyz", frontend.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    // Change the image while the receiver is down, then bring the receiver back on the
    // same address: the open page reconnects and catches up without a reload.
    let store = Store::open(&backends.database_url(), StoreOptions::default())
        .await
        .unwrap();
    let claims = store.claim(vec![id]).await.unwrap();
    store
        .finish(vec![(
            claims[0].clone(),
            named_face(&store, "grace", 0.8).await,
        )])
        .await
        .unwrap();
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert(
        "FACEWIRE_GRPC_ADDR".into(),
        receiver_url.trim_start_matches("http://").into(),
    );
    let _receiver = Service::spawn(&["receiver"], &env).await;
    let row = wait_row(&browser, id, "done", "grace").await;
    assert_eq!(row["noReload"], Value::Bool(true), "the page reloaded");
    browser
        .wait_for(
            "the paused banner to go away",
            "return document.getElementById('live').hidden;",
            json!([]),
            SHOW,
        )
        .await;
    browser.close().await;
}

/// The photos of one person in dlib's johns set, relative to the johns directory.
fn johns_photos(person: &str) -> Vec<String> {
    let dir = workspace_root().join("testdata/dlib/johns").join(person);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-testdata)", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{person}/{n}")).collect()
}

/// No shortcuts: `facewire up` (receiver, queue, processor, recognition, frontend) with
/// two people enrolled through the CLI; photos the gallery has never seen are submitted
/// through the tutorial's JSON endpoint, and the open page shows them turn `done` with
/// the right names, live. The people page lists whom it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pipeline_shows_the_right_names_live() {
    let backends = Backends::embedded();
    let johns = workspace_root().join("testdata/dlib/johns");
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert("FACEWIRE_IMAGE_ROOT".into(), johns.display().to_string());
    for person in ["John_Salley", "John_Simm"] {
        let first = johns.join(&johns_photos(person)[0]);
        let out = tokio::process::Command::new(facewire_integration::facewire_bin())
            .args(["enroll", person])
            .arg(&first)
            .envs(&env)
            .env("FACEWIRE_MODEL_DIR", workspace_root().join("models"))
            .output()
            .await
            .expect("run facewire enroll");
        assert!(out.status.success(), "enroll {person}: {out:?}");
    }
    let up = Service::spawn(&["up"], &env).await;
    let web = format!("http://{}", up.addrs["web"]);

    let browser = Browser::launch().await;
    browser.goto(&format!("{web}/")).await;
    browser
        .wait_for(
            "the page to go live",
            "return document.body.dataset.live === 'on';",
            json!([]),
            SHOW,
        )
        .await;
    browser
        .execute("window.__noReload = true; return true;", json!([]))
        .await;

    let (salley, simm) = (
        johns_photos("John_Salley")[1].clone(),
        johns_photos("John_Simm")[1].clone(),
    );
    let response = reqwest::Client::new()
        .post(format!("{}/images/post", up.http_url()))
        .json(&json!({"paths": [{"path": salley}, {"path": simm}]}))
        .send()
        .await
        .expect("POST /images/post");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let ids: Vec<i64> = (0..2)
        .map(|i| {
            body["results"][i]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id in {body}"))
        })
        .collect();

    for (id, name) in ids.iter().zip(["John_Salley", "John_Simm"]) {
        let row = wait_row(&browser, *id, "done", name).await;
        assert_eq!(row["noReload"], Value::Bool(true), "the page reloaded");
    }
    browser
        .screenshot(Path::new("/tmp/frontend-pipeline.png"))
        .await;

    browser.goto(&format!("{web}/people")).await;
    let text = browser
        .wait_for(
            "the people page to list both people",
            "const t = document.querySelector('main').textContent; \
             return t.includes('John_Salley') && t.includes('John_Simm') ? t : null;",
            json!([]),
            SHOW,
        )
        .await;
    assert!(
        !text.as_str().unwrap_or_default().contains("unreachable"),
        "{text}"
    );
    // Each person shows the face they were enrolled with: a loaded 112 x 112 crop.
    for name in ["John_Salley", "John_Simm"] {
        let width = browser
            .wait_for(
                &format!("a loaded face picture of {name}"),
                "const row = [...document.querySelectorAll('#people tbody tr')]                    .find(r => r.querySelector('td.name').textContent === arguments[0]);                  const img = row && [...row.querySelectorAll('td.crops img')]                    .find(i => i.complete && i.naturalWidth > 0);                  return img ? img.naturalWidth : null;",
                json!([name]),
                SHOW,
            )
            .await;
        assert_eq!(width, json!(112), "{name}");
    }
    browser
        .screenshot(Path::new("/tmp/frontend-people.png"))
        .await;
    browser.close().await;
}

/// The outcome of recognising one face of `name` (the person is created if new).
async fn named_face(store: &Store, name: &str, similarity: f32) -> Outcome {
    let (person, _) = store.person_for_name(name).await.unwrap();
    Outcome::Done(vec![DetectedFace {
        bbox: [10.0, 10.0, 80.0, 90.0],
        score: 0.9,
        matched: Some((person, similarity)),
        ..DetectedFace::default()
    }])
}
