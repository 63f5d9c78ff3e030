//! An image's page: the photo with every face's box drawn and labelled, and the list of
//! its faces with a form each to name or unassign it.

use facewire_proto::v1 as pb;
use maud::{html, Markup};
use serde::Serialize;

use super::{
    face_crop_href, image_href, layout, notice, person_href, search::similar_href, status_name,
    BodyData, Nav,
};

/// A face box in pixels of the image: x, y, width, height.
pub type PixelBox = [f32; 4];

/// One face, as the image page and the face endpoints show it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceView {
    /// The face's id.
    pub id: i64,
    /// Its person; 0 when nobody is assigned.
    pub person_id: i64,
    /// The person's name; empty when unassigned or unnamed.
    pub person_name: String,
    /// How the person was assigned.
    pub assigned: pb::FaceAssignment,
    /// For automatic assignments, how similar the face is to the gallery's.
    pub similarity: f32,
    /// Where the face is; `None` for faces carried over without a box.
    pub bbox: Option<PixelBox>,
}

fn pixel_box(b: Option<&pb::BoundingBox>) -> Option<PixelBox> {
    b.filter(|b| b.width > 0.0 && b.height > 0.0)
        .map(|b| [b.x, b.y, b.width, b.height])
}

impl From<&pb::ImageFace> for FaceView {
    fn from(f: &pb::ImageFace) -> Self {
        Self {
            id: f.id,
            person_id: f.person_id,
            person_name: f.person_name.clone(),
            assigned: pb::FaceAssignment::try_from(f.assigned).unwrap_or_default(),
            similarity: f.similarity,
            bbox: pixel_box(f.r#box.as_ref()),
        }
    }
}

impl From<&pb::FaceRecord> for FaceView {
    fn from(f: &pb::FaceRecord) -> Self {
        Self {
            id: f.id,
            person_id: f.person_id,
            person_name: f.person_name.clone(),
            assigned: pb::FaceAssignment::try_from(f.assigned).unwrap_or_default(),
            similarity: f.similarity,
            bbox: pixel_box(f.r#box.as_ref()),
        }
    }
}

impl FaceView {
    /// Who the face is: a name, "unnamed person" or "unknown".
    pub fn label(&self) -> String {
        if self.person_id == 0 {
            "unknown".into()
        } else if self.person_name.is_empty() {
            format!("unnamed person #{}", self.person_id)
        } else {
            self.person_name.clone()
        }
    }

    /// How the person was assigned: `auto 0.87`, `manual`, `enrolled`; empty for an
    /// unknown face.
    pub fn how(&self) -> String {
        if self.person_id == 0 {
            return String::new();
        }
        match self.assigned {
            pb::FaceAssignment::Auto => format!("auto {:.2}", self.similarity),
            pb::FaceAssignment::Manual => "manual".into(),
            pb::FaceAssignment::Enrolled => "enrolled".into(),
            pb::FaceAssignment::Unspecified => String::new(),
        }
    }

    /// The person's page, when the face has a person.
    pub fn person_href(&self) -> Option<String> {
        (self.person_id > 0).then(|| person_href(self.person_id))
    }
}

/// A face as the JSON endpoints return it: what the page needs to relabel it in place.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaceJson {
    /// The face's id.
    pub id: i64,
    /// Its person; 0 when nobody.
    pub person_id: i64,
    /// The person's name (empty when unassigned or unnamed).
    pub person_name: String,
    /// The label to show (`FaceView::label`).
    pub label: String,
    /// How assigned (`FaceView::how`).
    pub how: String,
    /// The person's page, if any.
    pub person_href: Option<String>,
}

impl From<&FaceView> for FaceJson {
    fn from(f: &FaceView) -> Self {
        Self {
            id: f.id,
            person_id: f.person_id,
            person_name: f.person_name.clone(),
            label: f.label(),
            how: f.how(),
            person_href: f.person_href(),
        }
    }
}

/// A face box as percentages of the image (left, top, width, height), so it scales with
/// the photo; clamped to the image.
pub fn percent_box(b: PixelBox, (width, height): (u32, u32)) -> [f64; 4] {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let left = (f64::from(b[0]) / w * 100.0).clamp(0.0, 100.0);
    let top = (f64::from(b[1]) / h * 100.0).clamp(0.0, 100.0);
    let right = (f64::from(b[0] + b[2]) / w * 100.0).clamp(0.0, 100.0);
    let bottom = (f64::from(b[1] + b[3]) / h * 100.0).clamp(0.0, 100.0);
    [left, top, right - left, bottom - top]
}

fn numbers<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an image page shows.
#[derive(Debug, Clone)]
pub struct ImagePage {
    /// The image's id.
    pub id: i64,
    /// Its path.
    pub path: String,
    /// Its status.
    pub status: pb::ImageStatus,
    /// Its last error.
    pub error: String,
    /// Its faces.
    pub faces: Vec<FaceView>,
    /// The photo's size in pixels as a browser shows it (orientation applied), when
    /// known: boxes are then placed in percent at once, else once the photo has loaded.
    pub size: Option<(u32, u32)>,
    /// Names of people, offered when naming a face (or why they could not be listed).
    pub names: Result<Vec<String>, String>,
    /// A message about the last action.
    pub notice: Option<(&'static str, String)>,
}

/// The label a face box and a face's list entry share: the name and how it was assigned.
fn face_label(f: &FaceView, name_link: bool) -> Markup {
    html! {
        @if name_link {
            a class="face-name" href=[f.person_href()] { (f.label()) }
        } @else {
            span class="face-name" { (f.label()) }
        }
        " "
        span class="face-how" { (f.how()) }
    }
}

/// The form that names or unassigns a face: one per face in the list, and the one the
/// script opens over the photo (`editor`).
fn face_form(image_id: i64, f: Option<&FaceView>) -> Markup {
    let face_id = f.map(|f| f.id);
    let action = face_id.map(|id| format!("{}/faces/{id}", image_href(image_id)));
    let editor = f.is_none();
    html! {
        form id=[editor.then_some("face-editor")] class={ "face-form" @if editor { " face-editor" } }
            method="post" action=[action] data-face-id=[face_id] hidden[editor] {
            @if editor {
                p id="face-editor-title" class="face-editor-title" { "Who is this?" }
            }
            input id=[editor.then_some("face-name")] name="person_name" list="people-names"
                autocomplete="off" placeholder="Name" aria-label="Name"
                value=[f.map(|f| f.person_name.as_str())];
            " "
            button id=[editor.then_some("face-save")] type="submit" name="action" value="assign" { "Name" }
            " "
            button id=[editor.then_some("face-unassign")] type="submit" name="action" value="unassign"
                disabled[f.is_some_and(|f| f.person_id == 0)] { "Unassign" }
            @if editor {
                " "
                button id="face-cancel" type="button" { "Cancel" }
                p id="face-error" class="notice error" role="alert" hidden {}
            }
        }
    }
}

/// The image page.
pub fn image_page(page: &ImagePage) -> Markup {
    let status = status_name(page.status);
    let boxed: Vec<(&FaceView, PixelBox)> = page
        .faces
        .iter()
        .filter_map(|f| f.bbox.map(|b| (f, b)))
        .collect();
    let body = html! {
        h1 { "Image " (page.id) }
        p class="image-meta" {
            span class="path" { (page.path) }
            " "
            span class={ "badge st-" (status) } { (status) }
            " "
            a href={ (image_href(page.id)) "/thumbnail?full=1" } { "original file" }
        }
        @if !page.error.is_empty() { (notice("error", &page.error)) }
        @if let Some((kind, text)) = &page.notice { (notice(kind, text)) }
        @if let Err(e) = &page.names { (notice("error", e)) }
        div id="photo" class="photo" {
            img id="photo-img" src={ (image_href(page.id)) "/thumbnail?full=1" } alt=(page.path);
            @for (f, b) in &boxed {
                button type="button" class={ "face" @if f.person_id == 0 { " unknown" } }
                    data-face-id=(f.id) data-person-id=(f.person_id) data-box=(numbers(b))
                    data-pct=[page.size.map(|size| numbers(&percent_box(*b, size).map(|v| format!("{v:.3}"))))]
                    aria-label={ "Face " (f.id) ": " (f.label()) } {
                    span class="face-label" { (face_label(f, false)) }
                }
            }
            (face_form(page.id, None))
        }
        datalist id="people-names" {
            @if let Ok(names) = &page.names {
                @for name in names { option value=(name) {} }
            }
        }
        h2 { "Faces" }
        @if page.faces.is_empty() {
            p class="empty" id="no-faces" {
                @match page.status {
                    pb::ImageStatus::Pending | pb::ImageStatus::Processing => "Not processed yet.",
                    pb::ImageStatus::Failed => "This image could not be processed.",
                    _ => "No faces were found in this image.",
                }
            }
        }
        // Filled by the page script: what became of a change made from the list.
        div id="face-status" class="notice" role="status" hidden {}
        ol id="faces" class="face-list" {
            @for f in &page.faces {
                li id={ "face-" (f.id) } class={ "face-item" @if f.person_id == 0 { " unknown" } }
                    data-face-id=(f.id) data-person-id=(f.person_id) {
                    img class="crop" src=(face_crop_href(f.id)) alt="" width="56" height="56" loading="lazy";
                    div class="face-info" {
                        (face_label(f, true))
                        @if f.bbox.is_none() {
                            " " span class="hint" { "(no box)" }
                        } @else {
                            // Faces carried over without a box have no embedding to search with.
                            " " a class="face-similar" href=(similar_href(f.id)) { "find this person" }
                        }
                        (face_form(page.id, Some(f)))
                    }
                }
            }
        }
    };
    layout(
        &format!("Image {}", page.id),
        Nav::Images,
        &BodyData {
            page: Some("image"),
            image: Some(page.id),
            ..Default::default()
        },
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(id: i64, person_id: i64, name: &str, assigned: pb::FaceAssignment) -> FaceView {
        FaceView {
            id,
            person_id,
            person_name: name.into(),
            assigned,
            similarity: 0.873,
            bbox: Some([20.0, 10.0, 40.0, 40.0]),
        }
    }

    fn page(faces: Vec<FaceView>) -> ImagePage {
        ImagePage {
            id: 42,
            path: "<img src=x onerror=alert(1)>.jpg".into(),
            status: pb::ImageStatus::Done,
            error: String::new(),
            faces,
            size: Some((200, 100)),
            names: Ok(vec!["ada".into(), "<script>alert(1)</script>".into()]),
            notice: None,
        }
    }

    #[test]
    fn faces_say_who_and_how() {
        let auto = face(1, 3, "ada", pb::FaceAssignment::Auto);
        assert_eq!(
            (auto.label(), auto.how()),
            ("ada".into(), "auto 0.87".into())
        );
        let manual = face(2, 3, "ada", pb::FaceAssignment::Manual);
        assert_eq!(manual.how(), "manual");
        assert_eq!(
            face(2, 3, "ada", pb::FaceAssignment::Enrolled).how(),
            "enrolled"
        );
        let unknown = face(3, 0, "", pb::FaceAssignment::Manual);
        assert_eq!(
            (unknown.label(), unknown.how()),
            ("unknown".into(), String::new())
        );
        assert_eq!(unknown.person_href(), None);
        let unnamed = face(4, 9, "", pb::FaceAssignment::Auto);
        assert_eq!(unnamed.label(), "unnamed person #9");
        let json = FaceJson::from(&auto);
        assert_eq!(json.person_href.as_deref(), Some("/people/3"));
    }

    #[test]
    fn boxes_are_percentages_of_the_image_clamped_to_it() {
        assert_eq!(
            percent_box([20.0, 10.0, 40.0, 40.0], (200, 100)),
            [10.0, 10.0, 20.0, 40.0]
        );
        assert_eq!(
            percent_box([-10.0, 90.0, 40.0, 40.0], (200, 100)),
            [0.0, 90.0, 15.0, 10.0]
        );
    }

    #[test]
    fn image_page_draws_labelled_faces_escaped() {
        let html = image_page(&page(vec![
            face(7, 3, "<b>ada</b>", pb::FaceAssignment::Auto),
            face(8, 0, "", pb::FaceAssignment::Unspecified),
            FaceView {
                bbox: None,
                ..face(9, 4, "bob", pb::FaceAssignment::Enrolled)
            },
        ]))
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains(concat!(
            "<button type=\"button\" class=\"face\" data-face-id=\"7\" data-person-id=\"3\" ",
            "data-box=\"20 10 40 40\" data-pct=\"10.000 10.000 20.000 40.000\" ",
            "aria-label=\"Face 7: &lt;b&gt;ada&lt;/b&gt;\"><span class=\"face-label\">",
            "<span class=\"face-name\">&lt;b&gt;ada&lt;/b&gt;</span> <span class=\"face-how\">auto 0.87</span>"
        )), "{html}");
        assert!(html.contains("class=\"face unknown\" data-face-id=\"8\" data-person-id=\"0\""));
        // A face without a box is listed but not drawn.
        assert!(!html.contains("class=\"face\" data-face-id=\"9\""));
        assert!(html.contains("<li id=\"face-9\" class=\"face-item\" data-face-id=\"9\""));
        assert!(html.contains("<a class=\"face-name\" href=\"/people/4\">bob</a>"));
        // Faces with a box can be searched with; the one without cannot.
        assert!(html
            .contains("<a class=\"face-similar\" href=\"/faces/7/similar\">find this person</a>"));
        assert!(!html.contains("/faces/9/similar"));
        assert!(html.contains("<a class=\"face-name\">unknown</a>"));
        assert!(html.contains("<option value=\"&lt;script&gt;alert(1)&lt;/script&gt;\"></option>"));
        assert!(html.contains("<img id=\"photo-img\" src=\"/images/42/thumbnail?full=1\""));
        assert!(html.contains(
            "<form id=\"face-editor\" class=\"face-form face-editor\" method=\"post\" hidden>"
        ));
        assert!(html.contains("id=\"face-name\""));
        assert!(html.contains(
            "<button id=\"face-save\" type=\"submit\" name=\"action\" value=\"assign\">"
        ));
        assert!(html.contains(
            "<form class=\"face-form\" method=\"post\" action=\"/images/42/faces/7\" data-face-id=\"7\">"
        ));
        assert!(html.contains("value=\"&lt;b&gt;ada&lt;/b&gt;\""));
        assert!(html.contains("data-page=\"image\" data-image=\"42\""));
    }

    #[test]
    fn without_a_size_boxes_wait_for_the_photo() {
        let mut p = page(vec![face(7, 3, "ada", pb::FaceAssignment::Manual)]);
        p.size = None;
        p.names = Err("The recognition service is unreachable".into());
        let html = image_page(&p).into_string();
        assert!(
            html.contains("data-box=\"20 10 40 40\" aria-label"),
            "{html}"
        );
        assert!(html.contains("The recognition service is unreachable"));
    }

    #[test]
    fn an_image_without_faces_says_why() {
        let mut p = page(Vec::new());
        p.status = pb::ImageStatus::Pending;
        assert!(image_page(&p).into_string().contains("Not processed yet."));
        p.status = pb::ImageStatus::Done;
        assert!(image_page(&p)
            .into_string()
            .contains("No faces were found in this image."));
    }
}
