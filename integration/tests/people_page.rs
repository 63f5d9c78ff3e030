//! The people workflow in a real browser against `facewire up`: name a face on the
//! image page (in place, no reload), then find the photo on that person's page.

use std::time::Duration;

use facewire_integration::{browser::Browser, photos, Backends, Service};
use facewire_proto::v1 as pb;
use serde_json::{json, Value};

const SHOW: Duration = Duration::from_secs(20);

#[tokio::test]
async fn name_a_face_on_the_image_page_then_find_the_photo_on_the_person_page() {
    let backends = Backends::embedded();
    let root = tempfile::tempdir().unwrap();
    let simm = photos("John_Simm");
    for p in simm.iter().take(2) {
        std::fs::copy(p, root.path().join(p.file_name().unwrap())).unwrap();
    }
    let names: Vec<String> = simm
        .iter()
        .take(2)
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        root.path().display().to_string(),
    );
    let up = Service::spawn(&["up"], &env).await;
    let mut client = up.client().await;
    let results = client
        .submit_images(names.iter().map(String::as_str))
        .await
        .unwrap();
    let ids: Vec<i64> = results
        .iter()
        .map(|r| match &r.outcome {
            Some(pb::submit_result::Outcome::Image(i)) => i.id,
            other => panic!("refused: {other:?}"),
        })
        .collect();
    // Wait until both are recognised (nobody is enrolled: one unknown face each).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let image = client.get_image(*id).await.unwrap();
            if image.status == pb::ImageStatus::Done as i32 {
                assert_eq!(image.faces.len(), 1, "{image:?}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "image {id} not done: {image:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let browser = Browser::launch().await;
    browser
        .goto(&format!("{}/images/{}", up.web_url(), ids[0]))
        .await;
    let face = browser
        .wait_for(
            "the face box to be placed",
            "const f = document.querySelector('#photo .face.placed'); \
             return f ? f.dataset.faceId : null;",
            json!([]),
            SHOW,
        )
        .await;
    let face = face.as_str().unwrap().to_string();
    browser
        .execute("window.__noReload = true; return true;", json!([]))
        .await;
    // Click the face, type a name, save.
    browser
        .execute(
            "document.querySelector(`#photo .face[data-face-id=\"${arguments[0]}\"]`).click(); \
             document.querySelector('#face-name').value = arguments[1]; \
             document.querySelector('#face-save').click(); return true;",
            json!([face, "John Simm"]),
        )
        .await;
    let named = browser
        .wait_for(
            "the face to be labelled John Simm",
            "const f = document.querySelector(`#photo .face[data-face-id=\"${arguments[0]}\"]`); \
             return f && f.querySelector('.face-name').textContent.trim() === 'John Simm' \
               && f.dataset.personId !== '0' \
               ? { person: f.dataset.personId, noReload: window.__noReload === true } : null;",
            json!([face]),
            SHOW,
        )
        .await;
    assert_eq!(named["noReload"], Value::Bool(true), "the page reloaded");
    let person = named["person"].as_str().unwrap().to_string();

    // The person's page lists the photo named by hand, and the other photo of him that
    // the re-check named from its stored embedding.
    browser
        .goto(&format!("{}/people/{person}", up.web_url()))
        .await;
    let photos = browser
        .wait_for(
            "the person page's photos",
            "const links = [...document.querySelectorAll('#photos a[href^=\"/images/\"]')]; \
             return links.length >= 2 ? links.map(a => a.getAttribute('href')) : null;",
            json!([]),
            SHOW,
        )
        .await;
    for id in &ids {
        let href = format!("/images/{id}");
        assert!(
            photos
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == &Value::from(href.clone())),
            "{href} not on the person page: {photos}"
        );
    }
    let title = browser
        .execute(
            "return document.querySelector('#person-name').textContent.trim();",
            json!([]),
        )
        .await;
    assert_eq!(title, "John Simm");
    browser.close().await;

    // Search by an uploaded photo: a third photo of him, never submitted, finds the face
    // named above, under his name.
    let query = std::fs::read(&simm[2]).unwrap();
    let boundary = "facewire-search-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"simm.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&query);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // The search index follows the database every second: the naming may take that
    // long to show in its results.
    let found = format!("data-face-id=\"{face}\" data-person-id=\"{person}\"");
    let deadline = std::time::Instant::now() + SHOW;
    loop {
        let response = reqwest::Client::new()
            .post(format!("{}/search", up.web_url()))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page = response.text().await.unwrap();
        assert!(page.contains("Faces like the one in simm.jpg"), "{page}");
        if page.contains(&found) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{found} not among the results: {page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
