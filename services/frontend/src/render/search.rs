//! Search by face: the page listing the stored faces most like one face (a stored one,
//! or the face in an uploaded photo), with their people and photos, and the upload form.

use facewire_proto::v1 as pb;
use maud::{html, Markup};

use super::{face_crop_href, image_href, layout, notice, person_href, BodyData, Nav};

/// Where the faces like face `face_id` are listed.
pub fn similar_href(face_id: i64) -> String {
    format!("/faces/{face_id}/similar")
}

/// A similarity as the pages show it: two decimals, within [-1, 1] (a cosine), and a
/// dash for a value that is no number at all.
pub fn similarity_text(similarity: f32) -> String {
    if !similarity.is_finite() {
        return "–".into();
    }
    let shown = format!("{:.2}", similarity.clamp(-1.0, 1.0));
    // A tiny negative value would show as "-0.00".
    if shown == "-0.00" {
        "0.00".into()
    } else {
        shown
    }
}

/// One face found like the one searched with.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarFace {
    /// The face's id.
    pub face_id: i64,
    /// How alike (cosine similarity).
    pub similarity: f32,
    /// Its person; 0 when nobody.
    pub person_id: i64,
    /// The person's name; empty when nobody or unnamed.
    pub person_name: String,
    /// Its image; 0 for an enrolment photo.
    pub image_id: i64,
    /// The image's path.
    pub image_path: String,
}

impl From<&pb::FaceMatch> for SimilarFace {
    fn from(m: &pb::FaceMatch) -> Self {
        Self {
            face_id: m.face_id,
            similarity: m.similarity,
            person_id: m.person_id,
            person_name: m.person_name.clone(),
            image_id: m.image_id,
            image_path: m.image_path.clone(),
        }
    }
}

/// Where a photo to search with is posted.
pub const SEARCH_PHOTO_HREF: &str = "/search";

/// What was searched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Searched {
    /// A stored face, by id.
    Face(i64),
    /// The face in an uploaded photo, by its file name.
    Photo(String),
}

/// What the similar-faces page shows.
#[derive(Debug, Clone)]
pub struct SimilarPage {
    /// What was searched with.
    pub searched: Searched,
    /// The faces found, best first, or a sentence saying why there are none.
    pub matches: Result<Vec<SimilarFace>, String>,
}

fn who(m: &SimilarFace) -> Markup {
    html! {
        @if m.person_id == 0 {
            span class="card-name nobody" { "nobody" }
        } @else if m.person_name.is_empty() {
            a class="card-name unnamed" href=(person_href(m.person_id)) { "unnamed" }
        } @else {
            a class="card-name" href=(person_href(m.person_id)) { (m.person_name) }
        }
    }
}

/// The faces most like one face: a grid of their pictures, how alike each is, whose it
/// is and the photo it is in.
pub fn similar_page(page: &SimilarPage) -> Markup {
    let title = match &page.searched {
        Searched::Face(id) => format!("Faces like face {id}"),
        Searched::Photo(file) if file.is_empty() => "Faces like your photo".to_string(),
        Searched::Photo(file) => format!("Faces like the one in {file}"),
    };
    let body = html! {
        div class="person-head" {
            @if let Searched::Face(id) = page.searched {
                img class="crop" src=(face_crop_href(id)) alt={ "Face " (id) }
                    width="112" height="112";
            }
            div {
                h1 { (title) }
                p class="hint" {
                    @if let Searched::Photo(_) = page.searched {
                        "The stored faces most like the largest face in your photo, most alike first."
                    } @else {
                        "The most similar faces stored, most alike first."
                    }
                }
            }
        }
        @match &page.matches {
            Ok(matches) if matches.is_empty() => {
                p class="empty" id="no-matches" { "No other face looks like this one." }
            }
            Ok(matches) => {
                ul id="matches" class="people-grid" {
                    @for m in matches {
                        li class="person-card" data-face-id=(m.face_id) data-person-id=(m.person_id) {
                            img class="crop" src=(face_crop_href(m.face_id)) alt={ "Face " (m.face_id) }
                                width="96" height="96" loading="lazy";
                            (who(m))
                            span class="card-counts similarity" {
                                "similarity " (similarity_text(m.similarity))
                            }
                            @if m.image_id > 0 {
                                a class="card-counts" href=(image_href(m.image_id)) title=(m.image_path) {
                                    "in " (m.image_path)
                                }
                            } @else {
                                span class="card-counts" { "an enrolment photo" }
                            }
                        }
                    }
                }
            }
            Err(e) => { (notice("error", e)) }
        }
        (search_form())
    };
    layout(&title, Nav::Images, &BodyData::default(), body)
}

/// The form that searches the stored faces with the face in a photo from this computer.
pub fn search_form() -> Markup {
    html! {
        h2 { "Search by photo" }
        form method="post" action=(SEARCH_PHOTO_HREF) enctype="multipart/form-data" class="search-photo" {
            label {
                "A photo of someone "
                input type="file" name="photo" accept="image/*" required;
            }
            " "
            button type="submit" { "Find faces like it" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(face_id: i64, person_id: i64, name: &str, image_id: i64) -> SimilarFace {
        SimilarFace {
            face_id,
            similarity: 0.876,
            person_id,
            person_name: name.into(),
            image_id,
            image_path: "<i>x</i>.jpg".into(),
        }
    }

    #[test]
    fn similarities_are_clamped_to_two_decimals() {
        assert_eq!(similarity_text(0.876), "0.88");
        assert_eq!(similarity_text(1.000_01), "1.00");
        assert_eq!(similarity_text(7.0), "1.00");
        assert_eq!(similarity_text(-3.0), "-1.00");
        assert_eq!(similarity_text(-0.001), "0.00");
        assert_eq!(similarity_text(f32::NAN), "–");
    }

    #[test]
    fn the_grid_says_whose_each_face_is_escaped() {
        let html = similar_page(&SimilarPage {
            searched: Searched::Face(7),
            matches: Ok(vec![
                found(8, 3, "<script>alert(1)</script>", 42),
                found(11, 5, "", 44),
                found(9, 0, "", 0),
            ]),
        })
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
        assert!(html.contains(concat!(
            "<li class=\"person-card\" data-face-id=\"8\" data-person-id=\"3\">",
            "<img class=\"crop\" src=\"/faces/8/crop.jpg\" alt=\"Face 8\" width=\"96\" height=\"96\" loading=\"lazy\">",
            "<a class=\"card-name\" href=\"/people/3\">&lt;script&gt;alert(1)&lt;/script&gt;</a>",
            "<span class=\"card-counts similarity\">similarity 0.88</span>",
            "<a class=\"card-counts\" href=\"/images/42\" title=\"&lt;i&gt;x&lt;/i&gt;.jpg\">in &lt;i&gt;x&lt;/i&gt;.jpg</a>"
        )), "{html}");
        assert!(html.contains("<a class=\"card-name unnamed\" href=\"/people/5\">unnamed</a>"));
        assert!(html.contains("<span class=\"card-name nobody\">nobody</span>"));
        assert!(html.contains("an enrolment photo"));
        assert!(html.contains("<h1>Faces like face 7</h1>"));
    }

    #[test]
    fn no_matches_and_failures_say_so() {
        let none = similar_page(&SimilarPage {
            searched: Searched::Face(7),
            matches: Ok(Vec::new()),
        })
        .into_string();
        assert!(none.contains("No other face looks like this one."));
        let failed = similar_page(&SimilarPage {
            searched: Searched::Face(7),
            matches: Err("Search by <face> is off.".into()),
        })
        .into_string();
        assert!(failed.contains("role=\"alert\">Search by &lt;face&gt; is off.</div>"));
    }

    #[test]
    fn a_photo_search_names_the_file_escaped_and_offers_the_form() {
        let html = similar_page(&SimilarPage {
            searched: Searched::Photo("<b>me</b>.jpg".into()),
            matches: Ok(vec![found(8, 3, "Ann", 42)]),
        })
        .into_string();
        assert!(
            html.contains("<h1>Faces like the one in &lt;b&gt;me&lt;/b&gt;.jpg</h1>"),
            "{html}"
        );
        assert!(!html.contains("<b>me"), "{html}");
        assert!(
            !html.contains("class=\"crop\" src=\"/faces/0/"),
            "no crop of a stored face"
        );
        assert!(html.contains("data-face-id=\"8\""));
        assert!(html.contains(
            "<form method=\"post\" action=\"/search\" enctype=\"multipart/form-data\" class=\"search-photo\">"
        ));
        assert!(html.contains("name=\"photo\""));
    }
}
