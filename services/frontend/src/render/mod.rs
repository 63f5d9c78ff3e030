//! HTML rendering, with maud: every page and fragment is a typed template, so all
//! outside text (paths are user input; names, errors and RPC messages come from other
//! services) is escaped by default, and raw HTML would be a type one must ask for
//! (`maud::PreEscaped`, which nothing here needs). Rows are rendered only here: live
//! updates carry this same HTML to the browser, so the page script never builds markup
//! itself.

pub mod image;
pub mod people;
pub mod search;

use std::fmt::Write as _;

use facewire_proto::v1 as pb;
use maud::{html, Markup, DOCTYPE};
use serde::Serialize;

/// Percent-encodes a query-string or path-segment value (everything but RFC 3986
/// unreserved bytes).
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

/// Where a person's page is.
pub fn person_href(person_id: i64) -> String {
    format!("/people/{person_id}")
}

/// Where an image's page is.
pub fn image_href(image_id: i64) -> String {
    format!("/images/{image_id}")
}

/// Where the picture of one face is (any face: enrolled or detected).
pub fn face_crop_href(face_id: i64) -> String {
    format!("/faces/{face_id}/crop.jpg")
}

/// One image as the images table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Image id.
    pub id: i64,
    /// Path relative to the image root.
    pub path: String,
    /// Status.
    pub status: pb::ImageStatus,
    /// The people column.
    pub people: PeopleCell,
    /// The last error, if any.
    pub error: String,
    /// When the record last changed (ms since the epoch): the page keeps the newest
    /// version of a row when a live update and a re-listing cross.
    pub version: i64,
}

/// The people column of a row: who was found, or why nobody is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeopleCell {
    /// Not processed yet.
    Pending,
    /// Processed, and nobody is in it.
    Nobody,
    /// The faces found, in the order the receiver lists them.
    Found(Vec<Found>),
    /// Nothing to say (failed).
    Blank,
}

/// One person found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The person's id; 0 for a face nobody is assigned to.
    pub person_id: i64,
    /// The person's name; empty for an unknown face or an unnamed person.
    pub name: String,
}

impl Found {
    /// What the table shows for this face.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            "unknown face"
        } else {
            &self.name
        }
    }
}

impl PeopleCell {
    /// The cell for an image in `status` with these people.
    pub fn of(status: pb::ImageStatus, people: &[pb::Person]) -> Self {
        match status {
            pb::ImageStatus::Pending | pb::ImageStatus::Processing => Self::Pending,
            pb::ImageStatus::NoFace => Self::Nobody,
            pb::ImageStatus::Done if people.is_empty() => Self::Nobody,
            pb::ImageStatus::Done => Self::Found(
                people
                    .iter()
                    .map(|p| Found {
                        person_id: p.person_id,
                        name: p.name.clone(),
                    })
                    .collect(),
            ),
            pb::ImageStatus::Failed | pb::ImageStatus::Unspecified => Self::Blank,
        }
    }

    /// The cell as plain text, as a reader sees it.
    pub fn text(&self) -> String {
        match self {
            Self::Pending => "Pending…".into(),
            Self::Nobody => "nobody".into(),
            Self::Found(found) => found
                .iter()
                .map(Found::label)
                .collect::<Vec<_>>()
                .join(", "),
            Self::Blank => String::new(),
        }
    }

    /// The distinct people in the cell (for the page's person filter).
    pub fn person_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = match self {
            Self::Found(found) => found
                .iter()
                .map(|f| f.person_id)
                .filter(|id| *id > 0)
                .collect(),
            _ => Vec::new(),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Row {
    /// The row for an image record.
    pub fn from_image(image: &pb::Image) -> Self {
        let status = pb::ImageStatus::try_from(image.status).unwrap_or_default();
        Self {
            id: image.id,
            path: image.path.clone(),
            status,
            people: PeopleCell::of(status, &image.people),
            error: image.last_error.clone(),
            version: image
                .updated_at
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                .unwrap_or(0),
        }
    }

    /// Whether the row belongs on a page filtered by `filter` and showing only images
    /// of every one of `persons`.
    pub fn matches(&self, filter: Option<pb::ImageStatus>, persons: &[i64]) -> bool {
        let people = self.people.person_ids();
        filter.is_none_or(|f| f == self.status) && persons.iter().all(|p| people.contains(p))
    }
}

fn people_cell(cell: &PeopleCell) -> Markup {
    html! {
        @match cell {
            PeopleCell::Found(found) => {
                @for (i, f) in found.iter().enumerate() {
                    @if i > 0 { ", " }
                    @if f.person_id > 0 {
                        a href=(person_href(f.person_id)) { (f.label()) }
                    } @else {
                        (f.label())
                    }
                }
            }
            other => (other.text()),
        }
    }
}

/// One table row, `<tr id="image-ID">…</tr>`: the path and thumbnail lead to the
/// image's page, names to their person's page.
pub fn row(row: &Row) -> Markup {
    let status = status_name(row.status);
    let page = image_href(row.id);
    let people_ids = row
        .people
        .person_ids()
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        tr id={ "image-" (row.id) } data-status=(status) data-version=(row.version)
            data-people=(people_ids) {
            td class="id" { (row.id) }
            td class="path" { a href=(page) { (row.path) } }
            td class="thumb" {
                a href=(page) tabindex="-1" {
                    img src={ (page) "/thumbnail" } alt="" loading="lazy";
                }
            }
            td class="people" { (people_cell(&row.people)) }
            td class="status" { span class={ "badge st-" (status) } { (status) } }
            td class="error" { (row.error) }
        }
    }
}

/// A row as live updates and `/api/images` carry it: the browser places it by id,
/// status and people, and inserts the server-rendered HTML as is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowUpdate {
    /// Image id.
    pub id: i64,
    /// Status name.
    pub status: &'static str,
    /// The people in the image (for pages filtered by person).
    pub person_ids: Vec<i64>,
    /// When the record last changed (ms since the epoch).
    pub version: i64,
    /// The `<tr>`.
    pub html: String,
}

impl From<&Row> for RowUpdate {
    fn from(r: &Row) -> Self {
        Self {
            id: r.id,
            status: status_name(r.status),
            person_ids: r.people.person_ids(),
            version: r.version,
            html: row(r).into_string(),
        }
    }
}

/// Which top-level page is shown (for the navigation bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/` and the image pages.
    Images,
    /// `/people` and the person pages.
    People,
    /// An error page.
    None,
}

/// Settings the page script reads from `<body data-…>` (so no inline script is needed
/// and the CSP can forbid them). Unset ones are left out.
#[derive(Debug, Clone, Default)]
pub struct BodyData<'a> {
    /// Which page this is: `images`, `image`, `people`, `person`, or none.
    pub page: Option<&'a str>,
    /// The images page's status filter (empty for all).
    pub status: Option<&'a str>,
    /// The images page's page token.
    pub token: Option<&'a str>,
    /// The images page's person filter, ids separated by commas.
    pub persons: Option<String>,
    /// The image of an image page.
    pub image: Option<i64>,
    /// The person of a person page.
    pub person: Option<i64>,
}

/// The page frame: head, navigation, `body`.
pub fn layout(title: &str, nav: Nav, data: &BodyData<'_>, body: Markup) -> Markup {
    let current = |this: Nav| (nav == this).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · facewire" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/page.js" defer {}
            }
            body data-page=[data.page] data-status=[data.status] data-token=[data.token]
                data-persons=[data.persons.as_deref()] data-image=[data.image]
                data-person=[data.person] {
                header {
                    span class="brand" { "facewire" }
                    nav {
                        a href="/" aria-current=[current(Nav::Images)] { "Images" }
                        a href="/people" aria-current=[current(Nav::People)] { "People" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A notice box: `kind` is `error`, `ok` or `info`.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! {
        div class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) {
            (text)
        }
    }
}

/// A person the images list is filtered by, as its chip shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonChip {
    /// The person's id.
    pub id: i64,
    /// Their name, or a stand-in when they have none or could not be looked up.
    pub label: String,
}

/// What the images page shows.
#[derive(Debug, Clone)]
pub struct ImagesPage {
    /// The status filter, if any.
    pub filter: Option<pb::ImageStatus>,
    /// Only images showing every one of these people.
    pub persons: Vec<PersonChip>,
    /// The page token this page was fetched with (empty for the first page).
    pub page_token: String,
    /// The rows, or why they could not be listed.
    pub rows: Result<Vec<Row>, String>,
    /// Token of the next (older) page, empty on the last.
    pub next_page_token: String,
}

/// The images page: filter links and chips, the table, paging, and the live updates.
pub fn images_page(page: &ImagesPage) -> Markup {
    let filter_name = page.filter.map(status_name).unwrap_or("");
    let ids: Vec<i64> = page.persons.iter().map(|p| p.id).collect();
    let filter_links = std::iter::once(("all", None))
        .chain(FILTERS.into_iter().map(|s| (status_name(s), Some(s))));
    let empty = matches!(&page.rows, Ok(rows) if rows.is_empty());
    let body = html! {
        h1 { "Images" }
        p class="filters" {
            "Status: "
            @for (label, value) in filter_links {
                a class="filter" href=(page_href(value, &ids, ""))
                    aria-current=[(value == page.filter).then_some("true")] { (label) }
                " "
            }
        }
        @if !page.persons.is_empty() {
            p id="person-filter" class="chips" {
                "Showing: "
                @for chip in &page.persons {
                    @let others: Vec<i64> = ids.iter().copied().filter(|id| *id != chip.id).collect();
                    span class="chip" data-person-id=(chip.id) {
                        a href=(person_href(chip.id)) { (chip.label) }
                        " "
                        a class="chip-remove" href=(page_href(page.filter, &others, ""))
                            title="Remove this filter" aria-label={ "Stop filtering by " (chip.label) } { "×" }
                    }
                    " "
                }
            }
        }
        // Filled by the page script when the live feed is down or the receiver is unreachable.
        div id="live" class="notice info" role="status" hidden {}
        @match &page.rows {
            Ok(_) => div id="list-error" class="notice error" hidden {},
            Err(e) => div id="list-error" class="notice error" role="alert" { (e) },
        }
        table id="images" {
            thead {
                tr { th { "id" } th { "path" } th { "thumbnail" } th { "people" } th { "status" } th { "error" } }
            }
            tbody {
                @if let Ok(rows) = &page.rows {
                    @for r in rows { (row(r)) }
                }
            }
        }
        p id="empty" class="empty" hidden[!empty] {
            "No images"
            @if !filter_name.is_empty() { " with status " (filter_name) }
            @if !page.persons.is_empty() { " showing everyone chosen" }
            "."
        }
        p class="paging" {
            @if !page.page_token.is_empty() {
                a href=(page_href(page.filter, &ids, "")) { "← newest" }
                " "
            }
            @if !page.next_page_token.is_empty() {
                a id="older" href=(page_href(page.filter, &ids, &page.next_page_token)) { "older →" }
            }
        }
    };
    let persons = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    layout(
        "Images",
        Nav::Images,
        &BodyData {
            page: Some("images"),
            status: Some(filter_name),
            token: Some(&page.page_token),
            persons: Some(persons),
            ..Default::default()
        },
        body,
    )
}

/// The URL of an images page.
pub fn page_href(filter: Option<pb::ImageStatus>, persons: &[i64], token: &str) -> String {
    let mut query = Vec::new();
    if let Some(s) = filter {
        query.push(format!("status={}", status_name(s)));
    }
    for p in persons {
        query.push(format!("person={p}"));
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

/// A whole-page error (bad request, missing image), with a way back.
pub fn error_page(title: &str, message: &str) -> Markup {
    let body = html! {
        h1 { (title) }
        (notice("error", message))
        p { a href="/" { "Back to the images" } }
    };
    layout(title, Nav::None, &BodyData::default(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn image(
        id: i64,
        path: &str,
        status: pb::ImageStatus,
        people: &[&str],
    ) -> pb::Image {
        pb::Image {
            id,
            path: path.into(),
            status: status as i32,
            people: people
                .iter()
                .map(|n| pb::Person {
                    name: n.to_string(),
                    similarity: 0.9,
                    person_id: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn row_html(r: &Row) -> String {
        row(r).into_string()
    }

    #[test]
    fn markup_in_text_and_attributes_is_escaped() {
        let html = notice("error", r#"<a href="x" onclick='y'>&</a>"#).into_string();
        assert!(html.contains("&lt;a href=&quot;x&quot; onclick='y'&gt;&amp;&lt;/a&gt;"));
        let page = layout(
            "t",
            Nav::None,
            &BodyData {
                token: Some("\"><script>"),
                ..Default::default()
            },
            html! {},
        )
        .into_string();
        assert!(
            page.contains("data-token=\"&quot;&gt;&lt;script&gt;\""),
            "{page}"
        );
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
        let text = |status, people: &[&str]| {
            Row::from_image(&image(1, "a", status, people))
                .people
                .text()
        };
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
    fn row_links_to_the_image_page_and_the_people() {
        let mut img = image(42, "x.jpg", pb::ImageStatus::Done, &["ada", ""]);
        img.people[0].person_id = 3;
        let r = Row::from_image(&img);
        let html = row_html(&r);
        assert!(html.starts_with(
            "<tr id=\"image-42\" data-status=\"done\" data-version=\"0\" data-people=\"3\">"
        ));
        assert!(html.contains("<td class=\"path\"><a href=\"/images/42\">x.jpg</a></td>"));
        assert!(html.contains("<img src=\"/images/42/thumbnail\""));
        assert!(
            html.contains("<td class=\"people\"><a href=\"/people/3\">ada</a>, unknown face</td>")
        );
        assert!(html.contains("<span class=\"badge st-done\">done</span>"));
        assert_eq!(RowUpdate::from(&r).person_ids, vec![3]);
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
        let mut img = image(1, "a", pb::ImageStatus::Done, &["ada", "bob"]);
        img.people[0].person_id = 3;
        img.people[1].person_id = 4;
        let done = Row::from_image(&img);
        assert!(done.matches(None, &[]));
        assert!(done.matches(Some(pb::ImageStatus::Done), &[3, 4]));
        assert!(!done.matches(Some(pb::ImageStatus::Pending), &[]));
        assert!(!done.matches(None, &[3, 5]));
    }

    #[test]
    fn images_page_marks_the_current_filter_and_escapes_the_token() {
        let page = images_page(&ImagesPage {
            filter: Some(pb::ImageStatus::Failed),
            persons: Vec::new(),
            page_token: "\"><script>".into(),
            rows: Ok(vec![Row::from_image(&image(
                3,
                "a.jpg",
                pb::ImageStatus::Failed,
                &[],
            ))]),
            next_page_token: "abc=&<".into(),
        })
        .into_string();
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
    fn images_page_shows_removable_person_filters() {
        let page = images_page(&ImagesPage {
            filter: Some(pb::ImageStatus::Done),
            persons: vec![
                PersonChip {
                    id: 3,
                    label: "<i>ada</i>".into(),
                },
                PersonChip {
                    id: 5,
                    label: "bob".into(),
                },
            ],
            page_token: String::new(),
            rows: Ok(Vec::new()),
            next_page_token: "t".into(),
        })
        .into_string();
        assert!(page.contains("data-persons=\"3,5\""), "{page}");
        assert!(page.contains("<a href=\"/people/3\">&lt;i&gt;ada&lt;/i&gt;</a>"));
        // Removing ada keeps the status and bob; the status links keep both people.
        assert!(page.contains("<a class=\"chip-remove\" href=\"/?status=done&amp;person=5\""));
        assert!(page.contains("href=\"/?status=done&amp;person=3&amp;person=5&amp;page=t\""));
        assert!(page.contains("<a class=\"filter\" href=\"/?person=3&amp;person=5\">all</a>"));
        assert!(!page.contains("<i>"));
    }

    #[test]
    fn images_page_renders_when_the_receiver_is_down() {
        let page = images_page(&ImagesPage {
            filter: None,
            persons: Vec::new(),
            page_token: String::new(),
            rows: Err("The receiver at http://127.0.0.1:1 is unreachable: <refused>".into()),
            next_page_token: String::new(),
        })
        .into_string();
        assert!(page.contains("role=\"alert\">The receiver at http://127.0.0.1:1 is unreachable: &lt;refused&gt;</div>"));
        assert!(page.contains("<table id=\"images\">"));
        assert!(page.contains("/assets/page.js"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode_query_value("ü"), "%C3%BC");
        assert_eq!(page_href(None, &[], ""), "/");
        assert_eq!(
            page_href(Some(pb::ImageStatus::Done), &[7], "t 1"),
            "/?status=done&person=7&page=t%201"
        );
    }
}
