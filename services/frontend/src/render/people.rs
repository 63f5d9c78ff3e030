//! The people page (everyone, with their feature face; the enrol form) and a person's
//! page (their photos; rename, hide, merge, undo a merge, delete).

use facewire_proto::v1 as pb;
use maud::{html, Markup};

use super::{
    encode_query_value, face_crop_href, image_href, layout, notice, page_href, person_href,
    search::similarity_text, BodyData, Nav,
};

/// One person as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonSummary {
    /// The person's id.
    pub id: i64,
    /// Their name; empty for a suggested (unnamed) person.
    pub name: String,
    /// Left out of listings unless asked for.
    pub hidden: bool,
    /// The face shown for them; 0 when they have none.
    pub feature_face_id: i64,
    /// How many faces are theirs.
    pub face_count: i64,
    /// In how many images.
    pub image_count: i64,
    /// Their record's version, sent back with an edit so a concurrent one is noticed.
    pub version: i64,
}

impl From<&pb::PersonRecord> for PersonSummary {
    fn from(p: &pb::PersonRecord) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            hidden: p.hidden,
            feature_face_id: p.feature_face_id,
            face_count: p.face_count,
            image_count: p.image_count,
            version: p.version,
        }
    }
}

impl PersonSummary {
    /// Their name, or what stands for it while they have none.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("Unnamed person #{}", self.id)
        } else {
            self.name.clone()
        }
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The person's feature face at `size` pixels, or a placeholder.
fn feature_face(p: &PersonSummary, size: u32) -> Markup {
    html! {
        @if p.feature_face_id > 0 {
            img class="crop" src=(face_crop_href(p.feature_face_id)) alt={ "Face of " (p.label()) }
                width=(size) height=(size) loading="lazy";
        } @else {
            span class="crop missing" title="no picture of this person's face" { "?" }
        }
    }
}

/// The outcome of one uploaded photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollLine {
    /// The uploaded file's name.
    pub file: String,
    /// What happened: `Ok(text)` or `Err(reason)`.
    pub outcome: Result<String, String>,
}

/// Everyone the people page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeopleListing {
    /// People with a name, by name.
    pub named: Vec<PersonSummary>,
    /// The page token `named` was listed with (empty for the first page).
    pub page_token: String,
    /// The token of the next page of named people; empty on the last.
    pub next_page_token: String,
    /// People without a name yet (grouped by similarity), or why they could not be listed.
    pub suggested: Result<Vec<PersonSummary>, String>,
    /// Whether there are more suggested people than shown.
    pub more_suggested: bool,
}

/// What the people page shows.
#[derive(Debug, Clone, Default)]
pub struct PeoplePage {
    /// Everyone, or why they could not be listed.
    pub people: Option<Result<PeopleListing, String>>,
    /// Whether hidden people are listed too.
    pub show_hidden: bool,
    /// Whether suggested people with fewer faces than the grouping minimum are listed.
    pub show_small: bool,
    /// A message about the last action (removed, enrolled, refused).
    pub notice: Option<(&'static str, String)>,
    /// Per-photo results of an enrolment.
    pub enrolled: Vec<EnrollLine>,
    /// The name typed in the enrol form, kept when it must be corrected.
    pub name: String,
}

/// The address of the people page with these choices.
fn people_href(show_hidden: bool, show_small: bool, token: &str) -> String {
    let mut query = Vec::new();
    if show_hidden {
        query.push("hidden=1".to_string());
    }
    if show_small {
        query.push("small=1".to_string());
    }
    if !token.is_empty() {
        query.push(format!("page={}", encode_query_value(token)));
    }
    if query.is_empty() {
        "/people".into()
    } else {
        format!("/people?{}", query.join("&"))
    }
}

fn named_table(listing: &PeopleListing, show_hidden: bool, show_small: bool) -> Markup {
    html! {
        @if listing.named.is_empty() {
            p class="empty" { "Nobody is named yet." }
        } @else {
            table id="people" {
                thead {
                    tr { th { "face" } th { "name" } th { "faces" } th { "photos" } th {} th {} }
                }
                tbody {
                    @for p in &listing.named {
                        tr data-person-id=(p.id) {
                            td class="crops" { (feature_face(p, 56)) }
                            td class="name" { a href=(person_href(p.id)) { (p.name) } }
                            td class="faces" { (p.face_count) }
                            td class="images" { (p.image_count) }
                            td class="state" { @if p.hidden { span class="badge" { "hidden" } } }
                            td {
                                form method="post" action="/people/remove" class="remove"
                                    data-confirm={ "Remove " (p.name) " and forget every enrolled face?" } {
                                    input type="hidden" name="name" value=(p.name);
                                    button type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p class="paging" {
            @if !listing.page_token.is_empty() {
                a href=(people_href(show_hidden, show_small, "")) { "← first" }
                " "
            }
            @if !listing.next_page_token.is_empty() {
                a id="more-people" href=(people_href(show_hidden, show_small, &listing.next_page_token)) { "more →" }
            }
        }
    }
}

/// The one-step naming form on a suggested person's card: naming them confirms every
/// face of the group (the service does that), and the people page comes back.
fn name_form(p: &PersonSummary) -> Markup {
    html! {
        form class="name-suggested" method="post" action={ "/people/" (p.id) "/rename" } {
            input type="hidden" name="version" value=(p.version);
            input type="hidden" name="back" value="people";
            input name="name" required autocomplete="off" placeholder="Name"
                aria-label={ "Name " (p.label()) };
            button type="submit" { "Name" }
        }
    }
}

fn suggested_grid(listing: &PeopleListing, show_hidden: bool, show_small: bool) -> Markup {
    html! {
        h2 { "Suggested people" }
        p class="filters" {
            @if show_small {
                a id="small-toggle" href=(people_href(show_hidden, false, "")) { "Leave out small suggestions" }
            } @else {
                a id="small-toggle" href=(people_href(show_hidden, true, "")) { "Show small suggestions too" }
            }
        }
        @match &listing.suggested {
            Ok(people) if people.is_empty() => {
                p class="empty" { "No unnamed groups of faces." }
            }
            Ok(people) => {
                p class="hint" { "Faces that look alike and nobody has named yet. Name a group here, or open it to check its faces first." }
                ul id="suggested" class="people-grid" {
                    @for p in people {
                        li data-person-id=(p.id) {
                            a class="person-card" href=(person_href(p.id)) {
                                (feature_face(p, 96))
                                span class="card-name" { (p.label()) }
                                span class="card-counts" {
                                    (plural(p.face_count, "face", "faces")) " · "
                                    (plural(p.image_count, "photo", "photos"))
                                }
                            }
                            (name_form(p))
                        }
                    }
                }
                @if listing.more_suggested {
                    p class="hint" { "Only the largest groups are shown; name some to see more." }
                }
            }
            Err(e) => { (notice("error", e)) }
        }
    }
}

/// The people page: named people (linking to their pages), suggested people, the enrol
/// form and per-photo results.
pub fn people_page(page: &PeoplePage) -> Markup {
    let body = html! {
        h1 { "People" }
        @if let Some((kind, text)) = &page.notice {
            (notice(kind, text))
        }
        @if !page.enrolled.is_empty() {
            table id="enrolled" {
                thead { tr { th { "photo" } th { "result" } } }
                tbody {
                    @for line in &page.enrolled {
                        @let (class, text) = match &line.outcome {
                            Ok(t) => ("ok", t),
                            Err(e) => ("error", e),
                        };
                        tr class=(class) { td { (line.file) } td { (text) } }
                    }
                }
            }
        }
        p class="filters" {
            @if page.show_hidden {
                a href=(people_href(false, page.show_small, "")) { "Leave out hidden people" }
            } @else {
                a href=(people_href(true, page.show_small, "")) { "Show hidden people too" }
            }
        }
        @match &page.people {
            Some(Ok(listing)) => {
                (named_table(listing, page.show_hidden, page.show_small))
                (suggested_grid(listing, page.show_hidden, page.show_small))
            }
            Some(Err(e)) => { (notice("error", e)) }
            None => {}
        }
        h2 { "Enrol someone" }
        form method="post" action="/people/enroll" enctype="multipart/form-data" class="enroll" {
            label { "Name " input name="name" required value=(page.name); }
            " "
            label {
                "Photos (one face each) "
                input type="file" name="photos" accept="image/*" multiple required;
            }
            " "
            button type="submit" { "Enrol" }
        }
        (super::search::search_form())
    };
    layout(
        "People",
        Nav::People,
        &BodyData {
            page: Some("people"),
            ..Default::default()
        },
        body,
    )
}

/// One photo on a person's page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    /// The image's id.
    pub id: i64,
    /// Its path.
    pub path: String,
}

/// What a person's page shows.
#[derive(Debug, Clone)]
pub struct PersonPage {
    /// The person.
    pub person: PersonSummary,
    /// One page of their photos, newest first, or why they could not be listed.
    pub photos: Result<Vec<Photo>, String>,
    /// The token this page of photos was listed with (empty for the first).
    pub page_token: String,
    /// The token of the next page of photos; empty on the last.
    pub next_page_token: String,
    /// Everyone else, for the merge form, or why they could not be listed.
    pub others: Result<Vec<PersonSummary>, String>,
    /// A message about the last action.
    pub notice: Option<(&'static str, String)>,
    /// The merge that just happened, which can be undone.
    pub merged: Option<i64>,
    /// The name typed in the rename form, kept when it must be corrected.
    pub name: Option<String>,
    /// People whose faces look like this person's ("same person?"), or why they could
    /// not be listed.
    pub look_alikes: Result<Vec<LookAlike>, String>,
}

/// A person suggested as maybe the same as the one shown.
#[derive(Debug, Clone, PartialEq)]
pub struct LookAlike {
    /// The other person.
    pub person: PersonSummary,
    /// The best similarity between a face of each.
    pub similarity: f32,
    /// How many of the shown person's faces found the other among their nearest.
    pub votes: i32,
}

impl LookAlike {
    /// The suggestion as the page shows it, when it names a person.
    pub fn from_suggestion(s: &pb::MergeSuggestion) -> Option<Self> {
        s.person.as_ref().map(|p| Self {
            person: PersonSummary::from(p),
            similarity: s.similarity,
            votes: s.votes,
        })
    }
}

/// "Same person?": each suggested person with a button to merge them into the person
/// shown and one to say they are not the same. Nothing when there is nothing to suggest.
fn look_alikes(
    p: &PersonSummary,
    label: &str,
    look_alikes: &Result<Vec<LookAlike>, String>,
) -> Markup {
    html! {
        @match look_alikes {
            Ok(list) if list.is_empty() => {}
            Ok(list) => {
                section id="look-alikes" {
                    h2 { "Same person?" }
                    p class="hint" { "These people's faces look like " (label) "'s." }
                    ul class="people-grid" {
                        @for other in list {
                            @let o = &other.person;
                            li class="person-card look-alike" data-person-id=(o.id) {
                                a href=(person_href(o.id)) {
                                    (feature_face(o, 96))
                                }
                                a class="card-name" href=(person_href(o.id)) {
                                    @if o.name.is_empty() { "unnamed" } @else { (o.name) }
                                }
                                span class="card-counts" {
                                    (plural(o.face_count, "face", "faces"))
                                    @if o.hidden { " · hidden" }
                                }
                                span class="card-counts" {
                                    "similarity " (similarity_text(other.similarity)) " · "
                                    (plural(i64::from(other.votes), "vote", "votes"))
                                }
                                form method="post" action={ "/people/" (p.id) "/merge" }
                                    data-confirm={ "Merge " (o.label()) " into " (label) "? It can be undone." } {
                                    input type="hidden" name="from" value=(o.id);
                                    button type="submit" class="merge-look-alike" { "Merge" }
                                }
                                form method="post" action={ "/people/" (p.id) "/decline" } {
                                    input type="hidden" name="other" value=(o.id);
                                    button type="submit" class="decline-look-alike" { "Not the same" }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => {
                section id="look-alikes" {
                    h2 { "Same person?" }
                    (notice("error", e))
                }
            }
        }
    }
}

fn person_page_href(id: i64, token: &str) -> String {
    if token.is_empty() {
        person_href(id)
    } else {
        format!("{}?page={}", person_href(id), encode_query_value(token))
    }
}

/// A person's page: their photos in a paged grid, and the forms that change them.
pub fn person_page(page: &PersonPage) -> Markup {
    let p = &page.person;
    let action = |what: &str| format!("/people/{}/{what}", p.id);
    let label = p.label();
    let body = html! {
        div class="person-head" {
            (feature_face(p, 112))
            div {
                h1 id="person-name" { (label) }
                p class="counts" {
                    span id="face-count" { (plural(p.face_count, "face", "faces")) }
                    " · "
                    span id="image-count" { (plural(p.image_count, "photo", "photos")) }
                    @if p.hidden { " · " span class="badge" { "hidden" } }
                }
                p { a href=(page_href(None, &[p.id], "")) { "Show in the images list" } }
            }
        }
        @if let Some((kind, text)) = &page.notice {
            (notice(kind, text))
        }
        @if let Some(merge) = page.merged {
            form id="undo-merge" method="post" action=(action("undo-merge")) class="notice ok" {
                "Merged into " (label) ". "
                input type="hidden" name="merge_id" value=(merge);
                button id="undo-merge-button" type="submit" { "Undo merge" }
            }
        }
        (look_alikes(p, &label, &page.look_alikes))
        h2 { "Photos" }
        @match &page.photos {
            Ok(photos) if photos.is_empty() => {
                p class="empty" id="no-photos" { "No photos of " (label) @if !page.page_token.is_empty() { " on this page" } "." }
            }
            Ok(photos) => {
                ul id="photos" class="photo-grid" {
                    @for photo in photos {
                        li data-image-id=(photo.id) {
                            a href=(image_href(photo.id)) title=(photo.path) {
                                img src={ (image_href(photo.id)) "/thumbnail" } alt=(photo.path) loading="lazy";
                            }
                        }
                    }
                }
            }
            Err(e) => { (notice("error", e)) }
        }
        p class="paging" {
            @if !page.page_token.is_empty() {
                a href=(person_page_href(p.id, "")) { "← newest" }
                " "
            }
            @if !page.next_page_token.is_empty() {
                a id="older" href=(person_page_href(p.id, &page.next_page_token)) { "older →" }
            }
        }
        h2 { "Change" }
        div class="person-actions" {
            form id="rename" method="post" action=(action("rename")) {
                input type="hidden" name="version" value=(p.version);
                label {
                    (if p.name.is_empty() { "Name " } else { "Rename " })
                    input id="rename-name" name="name" required autocomplete="off"
                        value=(page.name.as_deref().unwrap_or(&p.name));
                }
                " "
                button type="submit" { (if p.name.is_empty() { "Name" } else { "Rename" }) }
            }
            form id="hide" method="post" action=(action("hide")) {
                input type="hidden" name="version" value=(p.version);
                input type="hidden" name="hidden" value=(if p.hidden { "0" } else { "1" });
                button type="submit" { (if p.hidden { "Unhide" } else { "Hide" }) }
                " "
                span class="hint" {
                    (if p.hidden { "Hidden: left out of the people page." } else { "Leave out of the people page." })
                }
            }
            @match &page.others {
                Ok(others) if !others.is_empty() => {
                    form id="merge" method="post" action=(action("merge")) {
                        label {
                            "Merge into " (label) ": "
                            select id="merge-from" name="from" required {
                                option value="" { "choose someone" }
                                @for o in others {
                                    option value=(o.id) {
                                        (o.label()) " (" (plural(o.face_count, "face", "faces")) ")"
                                        @if o.hidden { " (hidden)" }
                                    }
                                }
                            }
                        }
                        " "
                        button type="submit" { "Merge" }
                    }
                }
                Ok(_) => {}
                Err(e) => { (notice("error", e)) }
            }
            form id="delete" method="post" action=(action("delete")) class="remove"
                data-confirm={ "Delete " (label) "? Their enrolled faces are erased and their photos lose the name." } {
                button type="submit" { "Delete person" }
            }
        }
    };
    layout(
        &label,
        Nav::People,
        &BodyData {
            page: Some("person"),
            person: Some(p.id),
            ..Default::default()
        },
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn person(id: i64, name: &str) -> PersonSummary {
        PersonSummary {
            id,
            name: name.into(),
            hidden: false,
            feature_face_id: 0,
            face_count: 2,
            image_count: 1,
            version: 5,
        }
    }

    #[test]
    fn people_page_lists_named_and_suggested_people_escaped() {
        let mut evil = person(3, "<script>alert(1)</script> o'neil");
        evil.feature_face_id = 7;
        evil.hidden = true;
        let page = people_page(&PeoplePage {
            people: Some(Ok(PeopleListing {
                named: vec![evil, person(4, "ada")],
                page_token: String::new(),
                next_page_token: "n&1".into(),
                suggested: Ok(vec![person(9, "")]),
                more_suggested: false,
            })),
            show_hidden: true,
            show_small: false,
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
        })
        .into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains(concat!(
            "<td class=\"crops\"><img class=\"crop\" src=\"/faces/7/crop.jpg\" ",
            "alt=\"Face of &lt;script&gt;alert(1)&lt;/script&gt; o'neil\" width=\"56\" height=\"56\" loading=\"lazy\"></td>",
            "<td class=\"name\"><a href=\"/people/3\">&lt;script&gt;alert(1)&lt;/script&gt; o'neil</a></td>",
            "<td class=\"faces\">2</td><td class=\"images\">1</td>",
            "<td class=\"state\"><span class=\"badge\">hidden</span></td>"
        )), "{page}");
        assert!(
            page.contains("name=\"name\" value=\"&lt;script&gt;alert(1)&lt;/script&gt; o'neil\"")
        );
        // Without a feature face: a placeholder.
        assert!(page.contains("<td class=\"crops\"><span class=\"crop missing\""));
        assert!(page.contains("<a class=\"person-card\" href=\"/people/9\">"));
        assert!(page.contains("Unnamed person #9"));
        assert!(page.contains("href=\"/people?hidden=1&amp;page=n%261\""));
        assert!(page.contains(
            "<tr class=\"error\"><td>b.jpg</td><td>found 2 faces; need exactly one</td></tr>"
        ));
        assert!(page.contains("<td>a&lt;1&gt;.jpg</td>"));
        assert!(page.contains("Enrolled &quot;o'neil&quot;"));
        assert!(page.contains("<a href=\"/people\">Leave out hidden people</a>"));
        // A suggested person is named on their card, and the people page comes back.
        assert!(
            page.contains(concat!(
                "<form class=\"name-suggested\" method=\"post\" action=\"/people/9/rename\">",
                "<input type=\"hidden\" name=\"version\" value=\"5\">",
                "<input type=\"hidden\" name=\"back\" value=\"people\">"
            )),
            "{page}"
        );
        assert!(page.contains(
            "<a id=\"small-toggle\" href=\"/people?hidden=1&amp;small=1\">Show small suggestions too</a>"
        ));
    }

    #[test]
    fn small_suggestions_are_shown_on_request_and_kept_across_links() {
        let page = people_page(&PeoplePage {
            people: Some(Ok(PeopleListing {
                named: vec![person(4, "ada")],
                page_token: String::new(),
                next_page_token: "n".into(),
                suggested: Ok(vec![person(9, "")]),
                more_suggested: false,
            })),
            show_small: true,
            ..Default::default()
        })
        .into_string();
        assert!(
            page.contains(
                "<a id=\"small-toggle\" href=\"/people\">Leave out small suggestions</a>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<a href=\"/people?hidden=1&amp;small=1\">Show hidden people too</a>")
        );
        assert!(page.contains("href=\"/people?small=1&amp;page=n\""));
    }

    #[test]
    fn people_page_says_what_is_down() {
        let down = people_page(&PeoplePage {
            people: Some(Err(
                "The recognition service at http://x is unreachable".into()
            )),
            ..Default::default()
        })
        .into_string();
        assert!(down.contains("role=\"alert\">The recognition service at http://x is unreachable"));
        assert!(down.contains("action=\"/people/enroll\""));
    }

    fn person_view(name: &str) -> PersonPage {
        PersonPage {
            person: person(3, name),
            photos: Ok(vec![
                Photo {
                    id: 42,
                    path: "<b>a</b>.jpg".into(),
                },
                Photo {
                    id: 40,
                    path: "b.jpg".into(),
                },
            ]),
            page_token: String::new(),
            next_page_token: "x y".into(),
            others: Ok(vec![person(4, "<i>bob</i>"), person(9, "")]),
            notice: None,
            merged: None,
            name: None,
            look_alikes: Ok(Vec::new()),
        }
    }

    #[test]
    fn person_page_has_photos_and_forms_escaped() {
        let page = person_page(&person_view("<script>alert(1)</script>")).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<i>"), "{page}");
        assert!(page.contains("<h1 id=\"person-name\">&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
        assert!(page.contains(
            "<li data-image-id=\"42\"><a href=\"/images/42\" title=\"&lt;b&gt;a&lt;/b&gt;.jpg\">"
        ));
        assert!(page.contains("<a id=\"older\" href=\"/people/3?page=x%20y\">"));
        assert!(page.contains("action=\"/people/3/rename\""));
        assert!(page.contains("<input type=\"hidden\" name=\"version\" value=\"5\">"));
        assert!(page.contains("<input type=\"hidden\" name=\"hidden\" value=\"1\">"));
        assert!(page.contains("<option value=\"4\">&lt;i&gt;bob&lt;/i&gt; (2 faces)</option>"));
        assert!(page.contains("<option value=\"9\">Unnamed person #9 (2 faces)</option>"));
        assert!(page.contains("href=\"/?person=3\""));
        assert!(page.contains("data-person=\"3\""));
        assert!(!page.contains("undo-merge"));
        // Nothing to suggest: no "same person?" section at all.
        assert!(!page.contains("look-alikes"));
    }

    #[test]
    fn look_alikes_can_be_merged_or_declined_escaped() {
        let mut view = person_view("ada");
        let mut evil = person(4, "<i>bob</i>");
        evil.feature_face_id = 10;
        view.look_alikes = Ok(vec![
            LookAlike {
                person: evil,
                similarity: 0.8349,
                votes: 3,
            },
            LookAlike {
                person: person(9, ""),
                similarity: 1.7,
                votes: 1,
            },
        ]);
        let page = person_page(&view).into_string();
        assert!(!page.contains("<i>"), "{page}");
        assert!(page.contains("<h2>Same person?</h2>"), "{page}");
        assert!(page.contains(concat!(
            "<li class=\"person-card look-alike\" data-person-id=\"4\">",
            "<a href=\"/people/4\"><img class=\"crop\" src=\"/faces/10/crop.jpg\" ",
            "alt=\"Face of &lt;i&gt;bob&lt;/i&gt;\" width=\"96\" height=\"96\" loading=\"lazy\"></a>",
            "<a class=\"card-name\" href=\"/people/4\">&lt;i&gt;bob&lt;/i&gt;</a>",
            "<span class=\"card-counts\">2 faces</span>",
            "<span class=\"card-counts\">similarity 0.83 · 3 votes</span>",
            "<form method=\"post\" action=\"/people/3/merge\" ",
            "data-confirm=\"Merge &lt;i&gt;bob&lt;/i&gt; into ada? It can be undone.\">",
            "<input type=\"hidden\" name=\"from\" value=\"4\">",
            "<button type=\"submit\" class=\"merge-look-alike\">Merge</button></form>",
            "<form method=\"post\" action=\"/people/3/decline\">",
            "<input type=\"hidden\" name=\"other\" value=\"4\">",
            "<button type=\"submit\" class=\"decline-look-alike\">Not the same</button></form>"
        )), "{page}");
        // The unnamed one: a placeholder face, "unnamed", the similarity clamped.
        assert!(page.contains("<a class=\"card-name\" href=\"/people/9\">unnamed</a>"));
        assert!(page.contains("similarity 1.00 · 1 vote<"));
        view.look_alikes = Err("Look-alikes could not be listed. <down>".into());
        let page = person_page(&view).into_string();
        assert!(page.contains("role=\"alert\">Look-alikes could not be listed. &lt;down&gt;</div>"));
    }

    #[test]
    fn person_page_offers_to_undo_a_merge_and_names_the_unnamed() {
        let mut view = person_view("");
        view.merged = Some(77);
        view.person.hidden = true;
        view.notice = Some(("error", "Someone changed <this> person".into()));
        let page = person_page(&view).into_string();
        assert!(page
            .contains("<form id=\"undo-merge\" method=\"post\" action=\"/people/3/undo-merge\""));
        assert!(page.contains("<input type=\"hidden\" name=\"merge_id\" value=\"77\">"));
        assert!(page.contains("<h1 id=\"person-name\">Unnamed person #3</h1>"));
        assert!(page.contains("<button type=\"submit\">Name</button>"));
        assert!(page.contains("<button type=\"submit\">Unhide</button>"));
        assert!(page.contains("Someone changed &lt;this&gt; person"));
    }
}
