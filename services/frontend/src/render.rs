//! HTML rendering. Every page is a string built here, and every piece of outside text
//! (paths are user input; names, errors and RPC messages come from other services) goes
//! through [`escape`] on its way in. Rows are rendered only here: live updates carry
//! this same HTML to the browser, so the page script never builds markup itself.

use std::fmt::Write as _;

use facewire_proto::v1 as pb;
use serde::Serialize;

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved bytes).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The statuses a page can filter by, in pipeline order.
pub const FILTERS: [pb::ImageStatus; 5] = [
    pb::ImageStatus::Pending,
    pb::ImageStatus::Processing,
    pb::ImageStatus::Done,
    pb::ImageStatus::NoFace,
    pb::ImageStatus::Failed,
];

/// The short name of a status, as shown and as used in `?status=`.
pub fn status_name(status: pb::ImageStatus) -> &'static str {
    match status {
        pb::ImageStatus::Unspecified => "unknown",
        pb::ImageStatus::Pending => "pending",
        pb::ImageStatus::Processing => "processing",
        pb::ImageStatus::Done => "done",
        pb::ImageStatus::NoFace => "no_face",
        pb::ImageStatus::Failed => "failed",
    }
}

/// Parses `?status=`: empty or absent means every status.
pub fn parse_filter(raw: Option<&str>) -> Result<Option<pb::ImageStatus>, String> {
    match raw.map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(name) => FILTERS
            .into_iter()
            .find(|s| status_name(*s) == name)
            .map(Some)
            .ok_or_else(|| {
                let allowed: Vec<&str> = FILTERS.iter().map(|s| status_name(*s)).collect();
                format!(
                    "unknown status {name:?}; use one of: {}",
                    allowed.join(", ")
                )
            }),
    }
}

/// One image as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Image id.
    pub id: i64,
    /// Path relative to the image root.
    pub path: String,
    /// Status.
    pub status: pb::ImageStatus,
    /// The people column: names, "Pending…", "nobody".
    pub people: String,
    /// The last error, if any.
    pub error: String,
    /// When the record last changed (ms since the epoch): the page keeps the newest
    /// version of a row when a live update and a re-listing cross.
    pub version: i64,
}

impl Row {
    /// The row for an image record.
    pub fn from_image(image: &pb::Image) -> Self {
        let status = pb::ImageStatus::try_from(image.status).unwrap_or_default();
        Self {
            id: image.id,
            path: image.path.clone(),
            status,
            people: people_text(status, &image.people),
            error: image.last_error.clone(),
            version: image
                .updated_at
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                .unwrap_or(0),
        }
    }

    /// Whether the row belongs on a page filtered by `filter`.
    pub fn matches(&self, filter: Option<pb::ImageStatus>) -> bool {
        filter.is_none_or(|f| f == self.status)
    }
}

/// The people column: who was found, or why nobody is shown.
pub fn people_text(status: pb::ImageStatus, people: &[pb::Person]) -> String {
    match status {
        pb::ImageStatus::Pending | pb::ImageStatus::Processing => "Pending…".into(),
        pb::ImageStatus::NoFace => "nobody".into(),
        pb::ImageStatus::Done if people.is_empty() => "nobody".into(),
        pb::ImageStatus::Done => people
            .iter()
            .map(|p| {
                if p.name.is_empty() {
                    "unknown face"
                } else {
                    p.name.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        pb::ImageStatus::Failed | pb::ImageStatus::Unspecified => String::new(),
    }
}

/// One table row, `<tr id="image-ID">…</tr>`.
pub fn row_html(row: &Row) -> String {
    let status = status_name(row.status);
    format!(
        concat!(
            "<tr id=\"image-{id}\" data-status=\"{status}\" data-version=\"{version}\">",
            "<td class=\"id\">{id}</td>",
            "<td class=\"path\">{path}</td>",
            "<td class=\"thumb\"><a href=\"/images/{id}/thumbnail?full=1\">",
            "<img src=\"/images/{id}/thumbnail\" alt=\"\" loading=\"lazy\"></a></td>",
            "<td class=\"people\">{people}</td>",
            "<td class=\"status\"><span class=\"badge st-{status}\">{status}</span></td>",
            "<td class=\"error\">{error}</td>",
            "</tr>"
        ),
        id = row.id,
        status = status,
        version = row.version,
        path = escape(&row.path),
        people = escape(&row.people),
        error = escape(&row.error),
    )
}

/// A row as live updates and `/api/images` carry it: the browser places it by id and
/// status and inserts the server-rendered HTML as is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowUpdate {
    /// Image id.
    pub id: i64,
    /// Status name.
    pub status: &'static str,
    /// When the record last changed (ms since the epoch).
    pub version: i64,
    /// The `<tr>`.
    pub html: String,
}

impl From<&Row> for RowUpdate {
    fn from(row: &Row) -> Self {
        Self {
            id: row.id,
            status: status_name(row.status),
            version: row.version,
            html: row_html(row),
        }
    }
}

/// Which top-level page is shown (for the navigation bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Images,
    /// `/people`.
    People,
    /// An error page.
    None,
}

/// The page frame: head, navigation, `body`. `data` goes on `<body>` as
/// `data-*` attributes (the page script reads its settings there, so no inline script
/// is needed and the CSP can forbid them).
pub fn layout(title: &str, nav: Nav, data: &[(&str, &str)], body: &str) -> String {
    let mut attrs = String::new();
    for (k, v) in data {
        let _ = write!(attrs, " data-{}=\"{}\"", escape(k), escape(v));
    }
    let link = |href: &str, label: &str, this: Nav| {
        let current = if nav == this {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    format!(
        concat!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<title>{title} · facewire</title>",
            "<link rel=\"stylesheet\" href=\"/assets/style.css\"></head>",
            "<body{attrs}><header><span class=\"brand\">facewire</span><nav>{images}{people}</nav></header>",
            "<main>{body}</main></body></html>\n"
        ),
        title = escape(title),
        attrs = attrs,
        images = link("/", "Images", Nav::Images),
        people = link("/people", "People", Nav::People),
        body = body,
    )
}

/// A notice box: `kind` is `error`, `ok` or `info`.
pub fn notice(kind: &str, text: &str) -> String {
    format!(
        "<div class=\"notice {kind}\" role=\"status\">{}</div>",
        escape(text)
    )
}

/// What the images page shows.
#[derive(Debug, Clone)]
pub struct ImagesPage {
    /// The status filter, if any.
    pub filter: Option<pb::ImageStatus>,
    /// The page token this page was fetched with (empty for the first page).
    pub page_token: String,
    /// The rows, or why they could not be listed.
    pub rows: Result<Vec<Row>, String>,
    /// Token of the next (older) page, empty on the last.
    pub next_page_token: String,
}

/// The images page: filter links, the table, paging, and the live-update script.
pub fn images_page(page: &ImagesPage) -> String {
    let filter_name = page.filter.map(status_name).unwrap_or("");
    let mut body = String::new();
    body.push_str("<h1>Images</h1><p class=\"filters\">Status: ");
    let mut filter_link = |label: &str, value: Option<pb::ImageStatus>| {
        let href = match value {
            Some(s) => format!("/?status={}", status_name(s)),
            None => "/".to_string(),
        };
        let current = if value == page.filter {
            " aria-current=\"true\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a class=\"filter\" href=\"{href}\"{current}>{}</a> ",
            escape(label)
        );
    };
    filter_link("all", None);
    for s in FILTERS {
        filter_link(status_name(s), Some(s));
    }
    body.push_str("</p>");
    // Filled by the page script when the live feed is down or the receiver is unreachable.
    body.push_str("<div id=\"live\" class=\"notice info\" role=\"status\" hidden></div>");
    match &page.rows {
        Ok(_) => body.push_str("<div id=\"list-error\" class=\"notice error\" hidden></div>"),
        Err(e) => body.push_str(&format!(
            "<div id=\"list-error\" class=\"notice error\" role=\"alert\">{}</div>",
            escape(e)
        )),
    }
    body.push_str(concat!(
        "<table id=\"images\"><thead><tr><th>id</th><th>path</th><th>thumbnail</th>",
        "<th>people</th><th>status</th><th>error</th></tr></thead><tbody>"
    ));
    if let Ok(rows) = &page.rows {
        for row in rows {
            body.push_str(&row_html(row));
        }
    }
    body.push_str("</tbody></table>");
    let empty = matches!(&page.rows, Ok(rows) if rows.is_empty());
    let _ = write!(
        body,
        "<p id=\"empty\" class=\"empty\"{}>No images{}.</p>",
        if empty { "" } else { " hidden" },
        if filter_name.is_empty() {
            String::new()
        } else {
            format!(" with status {filter_name}")
        }
    );
    body.push_str("<p class=\"paging\">");
    if !page.page_token.is_empty() {
        let _ = write!(
            body,
            "<a href=\"{}\">← newest</a> ",
            page_href(page.filter, "")
        );
    }
    if !page.next_page_token.is_empty() {
        let _ = write!(
            body,
            "<a id=\"older\" href=\"{}\">older →</a>",
            escape(&page_href(page.filter, &page.next_page_token))
        );
    }
    body.push_str("</p><script src=\"/assets/page.js\" defer></script>");
    layout(
        "Images",
        Nav::Images,
        &[
            ("page", "images"),
            ("status", filter_name),
            ("token", &page.page_token),
        ],
        &body,
    )
}

/// The URL of an images page.
pub fn page_href(filter: Option<pb::ImageStatus>, token: &str) -> String {
    let mut query = Vec::new();
    if let Some(s) = filter {
        query.push(format!("status={}", status_name(s)));
    }
    if !token.is_empty() {
        query.push(format!("page={}", encode_query_value(token)));
    }
    if query.is_empty() {
        "/".into()
    } else {
        format!("/?{}", query.join("&"))
    }
}

/// One enrolled person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Name.
    pub name: String,
    /// How many faces are enrolled.
    pub face_count: i32,
    /// The enrolled faces, or `None` when they could not be listed.
    pub faces: Option<Vec<FaceThumb>>,
}

/// One enrolled face of a person on the people page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceThumb {
    /// The face's id.
    pub id: i64,
    /// False for faces enrolled before pictures of them were kept.
    pub has_crop: bool,
}

/// Where the page loads the picture of face `id` of `person` from.
pub fn face_crop_href(person: &str, id: i64) -> String {
    format!("/people/{}/faces/{id}.jpg", encode_query_value(person))
}

/// The pictures of a person's faces, with a placeholder for faces without one.
fn face_crops(person: &str, faces: &[FaceThumb]) -> String {
    let mut out = String::new();
    for face in faces {
        if face.has_crop {
            let _ = write!(
                out,
                "<img class=\"crop\" src=\"{src}\" alt=\"face {id} of {name}\" width=\"56\" height=\"56\">",
                src = escape(&face_crop_href(person, face.id)),
                id = face.id,
                name = escape(person),
            );
        } else {
            let _ = write!(
                out,
                "<span class=\"crop missing\" title=\"face {id}: enrolled before face pictures were kept\">?</span>",
                id = face.id,
            );
        }
    }
    out
}

/// The outcome of one uploaded photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollLine {
    /// The uploaded file's name.
    pub file: String,
    /// What happened: `Ok(text)` or `Err(reason)`.
    pub outcome: Result<String, String>,
}

/// What the people page shows.
#[derive(Debug, Clone, Default)]
pub struct PeoplePage {
    /// Enrolled people, or why they could not be listed.
    pub people: Option<Result<Vec<Person>, String>>,
    /// A message about the last action (removed, enrolled, refused).
    pub notice: Option<(&'static str, String)>,
    /// Per-photo results of an enrolment.
    pub enrolled: Vec<EnrollLine>,
    /// The name typed in the enrol form, kept when it must be corrected.
    pub name: String,
}

/// The people page: the gallery, the enrol form and per-photo results.
pub fn people_page(page: &PeoplePage) -> String {
    let mut body = String::from("<h1>People</h1>");
    if let Some((kind, text)) = &page.notice {
        body.push_str(&notice(kind, text));
    }
    if !page.enrolled.is_empty() {
        body.push_str(
            "<table id=\"enrolled\"><thead><tr><th>photo</th><th>result</th></tr></thead><tbody>",
        );
        for line in &page.enrolled {
            let (class, text) = match &line.outcome {
                Ok(t) => ("ok", t),
                Err(e) => ("error", e),
            };
            let _ = write!(
                body,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td></tr>",
                escape(&line.file),
                escape(text)
            );
        }
        body.push_str("</tbody></table>");
    }
    match &page.people {
        Some(Ok(people)) if people.is_empty() => {
            body.push_str("<p class=\"empty\">Nobody is enrolled yet.</p>")
        }
        Some(Ok(people)) => {
            body.push_str(concat!(
                "<table id=\"people\"><thead><tr><th>name</th><th>faces</th><th></th><th></th></tr>",
                "</thead><tbody>"
            ));
            for p in people {
                let _ = write!(
                    body,
                    concat!(
                        "<tr><td class=\"name\">{name}</td><td class=\"faces\">{count}</td>",
                        "<td class=\"crops\">{crops}</td><td>",
                        "<form method=\"post\" action=\"/people/remove\" class=\"remove\">",
                        "<input type=\"hidden\" name=\"name\" value=\"{name}\">",
                        "<button type=\"submit\">Remove</button></form></td></tr>"
                    ),
                    name = escape(&p.name),
                    count = p.face_count,
                    crops = p
                        .faces
                        .as_deref()
                        .map_or_else(String::new, |faces| face_crops(&p.name, faces)),
                );
            }
            body.push_str("</tbody></table>");
        }
        Some(Err(e)) => body.push_str(&format!(
            "<div class=\"notice error\" role=\"alert\">{}</div>",
            escape(e)
        )),
        None => {}
    }
    let _ = write!(
        body,
        concat!(
            "<h2>Enrol someone</h2>",
            "<form method=\"post\" action=\"/people/enroll\" enctype=\"multipart/form-data\" class=\"enroll\">",
            "<label>Name <input name=\"name\" required value=\"{name}\"></label> ",
            "<label>Photos (one face each) <input type=\"file\" name=\"photos\" accept=\"image/*\" multiple required></label> ",
            "<button type=\"submit\">Enrol</button></form>"
        ),
        name = escape(&page.name)
    );
    layout("People", Nav::People, &[("page", "people")], &body)
}

/// A whole-page error (bad request, missing image), with a way back.
pub fn error_page(title: &str, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1>{}<p><a href=\"/\">Back to the images</a></p>",
        escape(title),
        notice("error", message)
    );
    layout(title, Nav::None, &[], &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: i64, path: &str, status: pb::ImageStatus, people: &[&str]) -> pb::Image {
        pb::Image {
            id,
            path: path.into(),
            status: status as i32,
            people: people
                .iter()
                .map(|n| pb::Person {
                    name: n.to_string(),
                    similarity: 0.9,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ü.jpg"), "plain ü.jpg");
    }

    #[test]
    fn hostile_path_is_escaped_in_the_row() {
        let evil = "<script>alert(1)</script>\"onerror=\"x.jpg";
        let html = row_html(&Row::from_image(&image(
            7,
            evil,
            pb::ImageStatus::Pending,
            &[],
        )));
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("\"onerror"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onerror=&quot;x.jpg"));
    }

    #[test]
    fn hostile_names_and_errors_are_escaped() {
        let mut img = image(1, "a.jpg", pb::ImageStatus::Done, &["<b>eve</b>"]);
        img.last_error = "<img src=x onerror=alert(1)>".into();
        let html = row_html(&Row::from_image(&img));
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn people_column_says_pending_nobody_or_names() {
        let text = |status, people: &[&str]| Row::from_image(&image(1, "a", status, people)).people;
        assert_eq!(text(pb::ImageStatus::Pending, &[]), "Pending…");
        assert_eq!(text(pb::ImageStatus::Processing, &[]), "Pending…");
        assert_eq!(text(pb::ImageStatus::NoFace, &[]), "nobody");
        assert_eq!(
            text(pb::ImageStatus::Done, &["ada", "", "bob"]),
            "ada, unknown face, bob"
        );
        assert_eq!(text(pb::ImageStatus::Failed, &[]), "");
    }

    #[test]
    fn row_carries_id_status_and_thumbnail() {
        let html = row_html(&Row::from_image(&image(
            42,
            "x.jpg",
            pb::ImageStatus::Done,
            &["ada"],
        )));
        assert!(html.starts_with("<tr id=\"image-42\" data-status=\"done\" data-version=\"0\">"));
        assert!(html.contains("<img src=\"/images/42/thumbnail\""));
        assert!(html.contains("<td class=\"people\">ada</td>"));
        assert!(html.contains("<span class=\"badge st-done\">done</span>"));
    }

    #[test]
    fn filters_parse_and_match() {
        assert_eq!(parse_filter(None), Ok(None));
        assert_eq!(parse_filter(Some("")), Ok(None));
        assert_eq!(parse_filter(Some("all")), Ok(None));
        assert_eq!(
            parse_filter(Some("no_face")),
            Ok(Some(pb::ImageStatus::NoFace))
        );
        let err = parse_filter(Some("<bogus>")).unwrap_err();
        assert!(
            err.contains("pending, processing, done, no_face, failed"),
            "{err}"
        );
        let done = Row::from_image(&image(1, "a", pb::ImageStatus::Done, &[]));
        assert!(done.matches(None));
        assert!(done.matches(Some(pb::ImageStatus::Done)));
        assert!(!done.matches(Some(pb::ImageStatus::Pending)));
    }

    #[test]
    fn images_page_marks_the_current_filter_and_escapes_the_token() {
        let page = images_page(&ImagesPage {
            filter: Some(pb::ImageStatus::Failed),
            page_token: "\"><script>".into(),
            rows: Ok(vec![Row::from_image(&image(
                3,
                "a.jpg",
                pb::ImageStatus::Failed,
                &[],
            ))]),
            next_page_token: "abc=&<".into(),
        });
        assert!(page.contains(
            "<a class=\"filter\" href=\"/?status=failed\" aria-current=\"true\">failed</a>"
        ));
        assert!(page.contains("<a class=\"filter\" href=\"/\">all</a>"));
        assert!(page.contains("data-status=\"failed\""));
        assert!(page.contains("data-token=\"&quot;&gt;&lt;script&gt;\""));
        assert!(!page.contains("<script>"));
        assert!(page.contains("href=\"/?status=failed&amp;page=abc%3D%26%3C\""));
        assert!(page.contains("id=\"image-3\""));
        assert!(page.contains("<p id=\"empty\" class=\"empty\" hidden>"));
    }

    #[test]
    fn images_page_renders_when_the_receiver_is_down() {
        let page = images_page(&ImagesPage {
            filter: None,
            page_token: String::new(),
            rows: Err("The receiver at http://127.0.0.1:1 is unreachable: <refused>".into()),
            next_page_token: String::new(),
        });
        assert!(page.contains("role=\"alert\">The receiver at http://127.0.0.1:1 is unreachable: &lt;refused&gt;</div>"));
        assert!(page.contains("<table id=\"images\">"));
        assert!(page.contains("/assets/page.js"));
    }

    #[test]
    fn people_page_lists_people_results_and_errors() {
        let page = people_page(&PeoplePage {
            people: Some(Ok(vec![
                Person {
                    name: "o'neil <x>".into(),
                    face_count: 2,
                    faces: Some(vec![
                        FaceThumb {
                            id: 7,
                            has_crop: true,
                        },
                        FaceThumb {
                            id: 9,
                            has_crop: false,
                        },
                    ]),
                },
                Person {
                    name: "ada".into(),
                    face_count: 1,
                    faces: None,
                },
            ])),
            notice: Some(("ok", "Enrolled \"o'neil\"".into())),
            enrolled: vec![
                EnrollLine {
                    file: "a<1>.jpg".into(),
                    outcome: Ok("enrolled as face 4".into()),
                },
                EnrollLine {
                    file: "b.jpg".into(),
                    outcome: Err("found 2 faces; need exactly one".into()),
                },
            ],
            name: "o'neil".into(),
        });
        assert!(
            page.contains("<td class=\"name\">o&#39;neil &lt;x&gt;</td><td class=\"faces\">2</td>")
        );
        assert!(page.contains("name=\"name\" value=\"o&#39;neil &lt;x&gt;\""));
        // The picture's address is percent-encoded, then escaped; a face without a
        // picture gets a placeholder; faces that could not be listed show nothing.
        assert!(page.contains(concat!(
            "<td class=\"crops\"><img class=\"crop\" src=\"/people/o%27neil%20%3Cx%3E/faces/7.jpg\" ",
            "alt=\"face 7 of o&#39;neil &lt;x&gt;\" width=\"56\" height=\"56\">",
            "<span class=\"crop missing\" title=\"face 9: enrolled before face pictures were kept\">?</span></td>"
        )));
        assert!(page.contains("<td class=\"faces\">1</td><td class=\"crops\"></td>"));
        assert!(page.contains(
            "<tr class=\"error\"><td>b.jpg</td><td>found 2 faces; need exactly one</td></tr>"
        ));
        assert!(page.contains("<td>a&lt;1&gt;.jpg</td>"));
        assert!(page.contains("Enrolled &quot;o&#39;neil&quot;"));

        let down = people_page(&PeoplePage {
            people: Some(Err(
                "The recognition service at http://x is unreachable".into()
            )),
            ..Default::default()
        });
        assert!(down.contains("role=\"alert\">The recognition service at http://x is unreachable"));
        assert!(down.contains("action=\"/people/enroll\""));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode_query_value("ü"), "%C3%BC");
        assert_eq!(page_href(None, ""), "/");
        assert_eq!(
            page_href(Some(pb::ImageStatus::Done), "t 1"),
            "/?status=done&page=t%201"
        );
    }
}
