//! The people commands: `images`, `faces`, `people`, `assign`, `unassign`, `rename`,
//! `hide`, `merge`, `unmerge`, `rerun`, `jobs`, `search`.
//!
//! Each works on the data dir's database (the PeopleService implementation called in
//! this process, so embedded and served behave the same) or, with `--server URL`, on a
//! running facewire. `--json` prints one JSON document on stdout.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use facewire_config::StorageConfig;
use facewire_proto::v1 as pb;
use facewire_proto::BearerAuth;
use facewire_recognition::{
    config::face_index_snapshot,
    grouping::{FaceIndex, GroupingConfig},
    load_recognizer, People, PeopleApi, RecognizerArgs, Roster,
};
use facewire_storage::{ImageFilter, Store, StoreOptions};
use pb::{
    image_service_client::ImageServiceClient, people_service_client::PeopleServiceClient,
    people_service_server::PeopleService,
};
use serde_json::{json, Value};
use tonic::{codegen::InterceptedService, transport::Channel, Request};

/// Where the people commands act.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// URL of a running facewire (`facewire up`'s gRPC address, e.g.
    /// http://127.0.0.1:50051). Default: work directly on the database.
    #[arg(long, env = "FACEWIRE_SERVER")]
    pub server: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: super::ClientArgs,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub recognizer: RecognizerArgs,
}

/// `facewire images`
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only images showing this person (a name or an id); repeat for AND.
    #[arg(long = "person")]
    pub persons: Vec<String>,
    /// Only images in this status (pending, processing, done, no_face, failed).
    #[arg(long)]
    pub status: Option<String>,
    /// Only images with a face nobody is assigned to.
    #[arg(long)]
    pub unknown: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire faces`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["image", "person", "unassigned"])))]
pub struct FacesArgs {
    /// The faces of this image.
    #[arg(long)]
    pub image: Option<i64>,
    /// The faces of this person (a name or an id).
    #[arg(long)]
    pub person: Option<String>,
    /// Faces nobody is assigned to.
    #[arg(long)]
    pub unassigned: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire people`
#[derive(Debug, clap::Args)]
pub struct PeopleArgs {
    /// Only people with a name.
    #[arg(long, conflicts_with = "suggested")]
    pub named: bool,
    /// Only people without a name yet.
    #[arg(long)]
    pub suggested: bool,
    /// Include hidden people.
    #[arg(long)]
    pub hidden: bool,
    /// Include suggested people with fewer faces than the grouping minimum.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire search IMAGE` (or `--face ID`)
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// An image file: its strongest face is searched for.
    #[arg(required_unless_present = "face")]
    pub image: Option<std::path::PathBuf>,
    /// A stored face to search with, instead of an image.
    #[arg(long, conflicts_with = "image")]
    pub face: Option<i64>,
    /// Most faces listed.
    #[arg(long, default_value_t = 20)]
    pub limit: i32,
    /// Only faces at least this similar (cosine).
    #[arg(long, default_value_t = 0.3)]
    pub min_similarity: f32,
    /// The face index snapshot the deployment keeps (as `facewire up` is told; default
    /// `face-index.usearch` in the data dir with the embedded database, `none`: none).
    /// Working on the database directly, search starts from it, checked face by face
    /// against the database, instead of rebuilding a large library's graph; it is read,
    /// never written.
    #[arg(long, env = "FACEWIRE_FACE_INDEX_SNAPSHOT")]
    pub face_index_snapshot: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire assign FACE_ID... --to PERSON`
#[derive(Debug, clap::Args)]
pub struct AssignArgs {
    /// Faces to name.
    #[arg(required = true)]
    pub faces: Vec<i64>,
    /// The person: a name (created when new) or an id.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire unassign FACE_ID...`
#[derive(Debug, clap::Args)]
pub struct UnassignArgs {
    /// Faces to take away from their person.
    #[arg(required = true)]
    pub faces: Vec<i64>,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire rename PERSON NAME`
#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The person (a name or an id).
    pub person: String,
    /// The new name.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire hide PERSON`
#[derive(Debug, clap::Args)]
pub struct HideArgs {
    /// The person (a name or an id).
    pub person: String,
    /// Show them again instead.
    #[arg(long)]
    pub unhide: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire merge INTO FROM...`
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The person who stays (a name or an id).
    pub into: String,
    /// The people merged into them.
    #[arg(required = true)]
    pub from: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire unmerge MERGE_ID`
#[derive(Debug, clap::Args)]
pub struct UnmergeArgs {
    /// The merge to undo (from `facewire merge`).
    pub merge_id: i64,
    #[command(flatten)]
    pub target: Target,
}

/// What to re-run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RerunKind {
    /// Match stored faces against the gallery again (no image is decoded).
    Recognition,
    /// Detect faces in images again.
    Detection,
}

/// `facewire rerun (recognition | detection) (--missing | --all) [--wait]`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["missing", "all"])))]
pub struct RerunArgs {
    /// What to re-run.
    pub kind: RerunKind,
    /// Only what has no result: unassigned faces, or images with no faces.
    #[arg(long)]
    pub missing: bool,
    /// Everything not decided by a person.
    #[arg(long)]
    pub all: bool,
    /// Wait for the job, with a progress bar.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `facewire jobs`
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub target: Target,
}

type Authorized = InterceptedService<Channel, BearerAuth>;

/// The PeopleService, served in this process or by a running facewire. One value per
/// command run, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Api {
    Local {
        api: Box<PeopleApi>,
        people: People,
    },
    Remote(
        PeopleServiceClient<Authorized>,
        ImageServiceClient<Authorized>,
    ),
}

/// Calls one PeopleService method the same way on both kinds of target.
macro_rules! call {
    ($api:expr, $method:ident, $req:expr) => {
        match $api {
            Api::Local { api, .. } => PeopleService::$method(&**api, Request::new($req))
                .await
                .map(|r| r.into_inner()),
            Api::Remote(client, _) => client.clone().$method($req).await.map(|r| r.into_inner()),
        }
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
    };
}

impl Api {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        Self::open_with(target, None).await
    }

    /// Like [`Api::open`]; with `index`, working on the database directly also loads the
    /// face index (search by face needs it): those settings, from that snapshot if any.
    async fn open_with(
        target: &Target,
        index: Option<(GroupingConfig, Option<&std::path::Path>)>,
    ) -> anyhow::Result<Self> {
        match &target.server {
            Some(url) => {
                let options = target.access.options()?;
                let channel = options
                    .endpoint(url)?
                    .connect()
                    .await
                    .with_context(|| format!("connecting to facewire at {url}"))?;
                Ok(Api::Remote(
                    PeopleServiceClient::with_interceptor(channel.clone(), options.bearer()?),
                    ImageServiceClient::with_interceptor(channel, options.bearer()?),
                ))
            }
            None => {
                let store = Store::open(&target.storage.database_url(), StoreOptions::default())
                    .await
                    .context("opening the database")?;
                let recognizer = load_recognizer(target.recognizer.options()).await?;
                let roster = Roster::open(recognizer.into(), store.clone()).await?;
                let mut people = People::new(roster.into(), None);
                if let Some((grouping, given)) = index {
                    let snapshot = face_index_snapshot(given, &target.storage);
                    let spinner = indicatif::ProgressBar::new_spinner()
                        .with_message("loading the face index");
                    spinner.enable_steady_tick(Duration::from_millis(200));
                    let (index, _) =
                        FaceIndex::load_logged(&store, grouping, snapshot.as_deref()).await?;
                    spinner.finish_and_clear();
                    people = people.with_face_index(index.into(), grouping);
                }
                Ok(Api::Local {
                    api: Box::new(PeopleApi::new(people.clone())),
                    people,
                })
            }
        }
    }

    /// A person's id from a name or an id.
    async fn person_id(&self, who: &str) -> anyhow::Result<i64> {
        let request = match who.trim().parse::<i64>() {
            Ok(id) => pb::GetPersonRequest {
                person_id: id,
                name: String::new(),
            },
            Err(_) => pb::GetPersonRequest {
                person_id: 0,
                name: who.to_string(),
            },
        };
        let person = call!(self, get_person, request)?;
        Ok(person.person.map(|p| p.id).unwrap_or_default())
    }

    async fn list_images(
        &self,
        request: pb::ListImagesRequest,
    ) -> anyhow::Result<pb::ListImagesResponse> {
        match self {
            Api::Remote(_, images) => Ok(images
                .clone()
                .list_images(request)
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner()),
            Api::Local { people, .. } => {
                let status = match pb::ImageStatus::try_from(request.status) {
                    Ok(pb::ImageStatus::Unspecified) | Err(_) => None,
                    Ok(s) => Some(facewire_receiver::convert::status_from_pb(s)).flatten(),
                };
                let limit = i64::from(request.page_size.max(1));
                let before = request.page_token.parse::<i64>().ok();
                let records = people
                    .roster()
                    .store()
                    .list_filtered(
                        ImageFilter {
                            status,
                            person_ids: request.person_ids,
                            has_unknown_faces: request.has_unknown_faces,
                        },
                        before,
                        limit,
                    )
                    .await?;
                let next_page_token = match records.last() {
                    Some(last) if records.len() as i64 == limit => last.id.to_string(),
                    _ => String::new(),
                };
                Ok(pb::ListImagesResponse {
                    images: records
                        .iter()
                        .map(facewire_receiver::convert::image_to_pb)
                        .collect(),
                    next_page_token,
                })
            }
        }
    }
}

fn status_name(code: i32) -> &'static str {
    match pb::ImageStatus::try_from(code) {
        Ok(pb::ImageStatus::Pending) => "pending",
        Ok(pb::ImageStatus::Processing) => "processing",
        Ok(pb::ImageStatus::Done) => "done",
        Ok(pb::ImageStatus::NoFace) => "no_face",
        Ok(pb::ImageStatus::Failed) => "failed",
        _ => "unknown",
    }
}

fn status_code(name: &str) -> anyhow::Result<pb::ImageStatus> {
    Ok(match name {
        "pending" => pb::ImageStatus::Pending,
        "processing" => pb::ImageStatus::Processing,
        "done" => pb::ImageStatus::Done,
        "no_face" => pb::ImageStatus::NoFace,
        "failed" => pb::ImageStatus::Failed,
        other => {
            anyhow::bail!("unknown status {other:?}: pending, processing, done, no_face or failed")
        }
    })
}

fn assigned_name(code: i32) -> Option<&'static str> {
    match pb::FaceAssignment::try_from(code) {
        Ok(pb::FaceAssignment::Enrolled) => Some("enrolled"),
        Ok(pb::FaceAssignment::Auto) => Some("auto"),
        Ok(pb::FaceAssignment::Manual) => Some("manual"),
        _ => None,
    }
}

fn optional_id(id: i64) -> Value {
    if id == 0 {
        Value::Null
    } else {
        json!(id)
    }
}

fn optional_name(name: &str) -> Value {
    if name.is_empty() {
        Value::Null
    } else {
        json!(name)
    }
}

fn image_json(image: &pb::Image) -> Value {
    let mut people: Vec<&str> = image
        .people
        .iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    people.dedup();
    json!({
        "id": image.id,
        "path": image.path,
        "status": status_name(image.status),
        "people": people,
    })
}

fn face_json(face: &pb::FaceRecord) -> Value {
    let assigned = assigned_name(face.assigned);
    json!({
        "id": face.id,
        "image_id": optional_id(face.image_id),
        "person_id": optional_id(face.person_id),
        "person": optional_name(&face.person_name),
        "assigned": assigned,
        "similarity": if assigned == Some("auto") { json!(face.similarity) } else { Value::Null },
        "box": face.r#box.as_ref().map(|b| json!({"x": b.x, "y": b.y, "width": b.width, "height": b.height})),
    })
}

fn person_json(p: &pb::PersonRecord) -> Value {
    json!({
        "id": p.id,
        "name": optional_name(&p.name),
        "faces": p.face_count,
        "images": p.image_count,
    })
}

fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "kind": match pb::JobKind::try_from(j.kind) { Ok(pb::JobKind::Detection) => "detection", _ => "recognition" },
        "scope": match pb::JobScope::try_from(j.scope) { Ok(pb::JobScope::All) => "all", _ => "missing" },
        "state": job_state(j.state),
        "done": j.done,
        "total": j.total,
        "error": optional_name(&j.error),
    })
}

fn job_state(code: i32) -> &'static str {
    match pb::JobState::try_from(code) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Done) => "done",
        Ok(pb::JobState::Cancelled) => "cancelled",
        Ok(pb::JobState::Failed) => "failed",
        _ => "unknown",
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `facewire images`: every image matching the filters, newest first.
pub async fn images(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let mut person_ids = Vec::new();
    for who in &args.persons {
        person_ids.push(api.person_id(who).await?);
    }
    let status = match &args.status {
        Some(s) => status_code(s)?,
        None => pb::ImageStatus::Unspecified,
    };
    let mut images = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_images(pb::ListImagesRequest {
                page_size: 1000,
                page_token: token,
                status: status as i32,
                person_ids: person_ids.clone(),
                has_unknown_faces: args.unknown,
            })
            .await?;
        images.extend(page.images);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if args.target.json {
        print_json(&Value::Array(images.iter().map(image_json).collect()))?;
    } else {
        for i in &images {
            let people: Vec<_> = i
                .people
                .iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| p.name.as_str())
                .collect();
            println!(
                "{}\t{}\t{}\t{}",
                i.id,
                i.path,
                status_name(i.status),
                people.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire faces`: the faces of an image, of a person, or unassigned.
pub async fn faces(args: FacesArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let mut request = pb::ListFaceRecordsRequest {
        image_id: args.image.unwrap_or_default(),
        unassigned: args.unassigned,
        page_size: 1000,
        ..Default::default()
    };
    if let Some(who) = &args.person {
        request.person_id = api.person_id(who).await?;
    }
    let mut faces = Vec::new();
    loop {
        let page = call!(&api, list_face_records, request.clone())?;
        faces.extend(page.faces);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    if args.target.json {
        print_json(&Value::Array(faces.iter().map(face_json).collect()))?;
    } else {
        for f in &faces {
            let b = f.r#box.unwrap_or_default();
            println!(
                "face {}\timage {}\t{}\t{}\tbox {:.0},{:.0} {:.0}x{:.0}",
                f.id,
                f.image_id,
                if f.person_name.is_empty() {
                    "-"
                } else {
                    &f.person_name
                },
                assigned_name(f.assigned).unwrap_or("unassigned"),
                b.x,
                b.y,
                b.width,
                b.height
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire people`: people with their face and image counts.
pub async fn people(args: PeopleArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let filter = if args.named {
        pb::PersonFilter::Named
    } else if args.suggested {
        pb::PersonFilter::Suggested
    } else {
        pb::PersonFilter::Unspecified
    };
    let mut request = pb::ListPersonsRequest {
        page_size: 1000,
        filter: filter as i32,
        include_hidden: args.hidden,
        include_small: args.all,
        ..Default::default()
    };
    let mut persons = Vec::new();
    loop {
        let page = call!(&api, list_persons, request.clone())?;
        persons.extend(page.persons);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    if args.target.json {
        print_json(&Value::Array(persons.iter().map(person_json).collect()))?;
    } else {
        for p in &persons {
            let name = if p.name.is_empty() {
                "(unnamed)"
            } else {
                &p.name
            };
            println!(
                "{}\t{name}\t{} faces\t{} images",
                p.id, p.face_count, p.image_count
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire search`: the faces most like a face, with their people and images.
pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let query = match (&args.image, args.face) {
        (Some(path), _) => pb::search_faces_request::Query::Image(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, Some(id)) => pb::search_faces_request::Query::FaceId(id),
        (None, None) => anyhow::bail!("give an image file or --face ID"),
    };
    let api = Api::open_with(
        &args.target,
        // The deployment's grouping settings (the face index's among them) from its
        // environment, so searching on the database directly answers as the service would.
        Some((
            GroupingConfig::from_env()?,
            args.face_index_snapshot.as_deref(),
        )),
    )
    .await?;
    let found = call!(
        &api,
        search_faces,
        pb::SearchFacesRequest {
            query: Some(query),
            limit: args.limit,
            min_similarity: args.min_similarity,
        }
    )?;
    if args.target.json {
        print_json(&Value::Array(
            found
                .matches
                .iter()
                .map(|m| {
                    json!({
                        "face": m.face_id,
                        "similarity": m.similarity,
                        "person": if m.person_id == 0 { Value::Null } else { json!(m.person_id) },
                        "name": optional_name(&m.person_name),
                        "image": if m.image_id == 0 { Value::Null } else { json!(m.image_id) },
                        "path": if m.image_path.is_empty() { Value::Null } else { json!(m.image_path) },
                    })
                })
                .collect(),
        ))?;
    } else {
        for m in &found.matches {
            let name = if m.person_name.is_empty() {
                if m.person_id == 0 {
                    "-".to_string()
                } else {
                    format!("(unnamed {})", m.person_id)
                }
            } else {
                m.person_name.clone()
            };
            println!(
                "{:.3}\tface {}\t{name}\timage {}\t{}",
                m.similarity, m.face_id, m.image_id, m.image_path
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire assign`: names faces by hand (a new name creates the person).
pub async fn assign(args: AssignArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let (person_id, person_name) = match args.to.trim().parse::<i64>() {
        Ok(id) => (id, String::new()),
        Err(_) => (0, args.to.clone()),
    };
    let response = call!(
        &api,
        assign_faces,
        pb::AssignFacesRequest {
            face_ids: args.faces.clone(),
            person_id,
            person_name,
        }
    )?;
    let person = response.person.unwrap_or_default();
    if args.target.json {
        print_json(&json!({
            "person": person_json(&person),
            "faces": response.faces.iter().map(face_json).collect::<Vec<_>>(),
            "rematched": response.rematched,
        }))?;
    } else {
        println!(
            "assigned {} face(s) to {} (person {}); {} other face(s) matched again",
            response.faces.len(),
            person.name,
            person.id,
            response.rematched
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire unassign`: takes faces away from their person by hand.
pub async fn unassign(args: UnassignArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let response = call!(
        &api,
        unassign_faces,
        pb::UnassignFacesRequest {
            face_ids: args.faces.clone()
        }
    )?;
    if args.target.json {
        print_json(&Value::Array(
            response.faces.iter().map(face_json).collect(),
        ))?;
    } else {
        println!("unassigned {} face(s)", response.faces.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn update(
    target: &Target,
    who: &str,
    change: pb::UpdatePersonRequest,
) -> anyhow::Result<ExitCode> {
    let api = Api::open(target).await?;
    let person_id = api.person_id(who).await?;
    let response = call!(
        &api,
        update_person,
        pb::UpdatePersonRequest {
            person_id,
            ..change
        }
    )?;
    let person = response.person.unwrap_or_default();
    if target.json {
        print_json(&person_json(&person))?;
    } else {
        println!(
            "person {}: {}{}",
            person.id,
            if person.name.is_empty() {
                "(unnamed)"
            } else {
                &person.name
            },
            if person.hidden { " (hidden)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire rename`.
pub async fn rename(args: RenameArgs) -> anyhow::Result<ExitCode> {
    let change = pb::UpdatePersonRequest {
        name: Some(args.name.clone()),
        ..Default::default()
    };
    update(&args.target, &args.person, change).await
}

/// `facewire hide` (or `--unhide`).
pub async fn hide(args: HideArgs) -> anyhow::Result<ExitCode> {
    let change = pb::UpdatePersonRequest {
        hidden: Some(!args.unhide),
        ..Default::default()
    };
    update(&args.target, &args.person, change).await
}

/// `facewire merge INTO FROM...`: prints the merge id (`{merge_id}` with `--json`).
pub async fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let into = api.person_id(&args.into).await?;
    let mut from = Vec::new();
    for who in &args.from {
        from.push(api.person_id(who).await?);
    }
    let response = call!(
        &api,
        merge_persons,
        pb::MergePersonsRequest {
            into_person_id: into,
            from_person_ids: from,
        }
    )?;
    if args.target.json {
        print_json(&json!({ "merge_id": response.merge_id }))?;
    } else {
        println!(
            "merge {}: {} face(s) moved into person {} (undo: facewire unmerge {})",
            response.merge_id, response.faces_moved, into, response.merge_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire unmerge MERGE_ID`.
pub async fn unmerge(args: UnmergeArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let response = call!(
        &api,
        undo_merge,
        pb::UndoMergeRequest {
            merge_id: args.merge_id
        }
    )?;
    if args.target.json {
        print_json(&Value::Array(
            response.persons.iter().map(person_json).collect(),
        ))?;
    } else {
        for p in &response.persons {
            println!("person {}: {} ({} faces)", p.id, p.name, p.face_count);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `facewire rerun`: starts a job (or finds the one running) and, with `--wait`, shows
/// its progress until it ends. Embedded, a recognition job runs in this process; a
/// detection job needs the pipeline, so it runs when `facewire up` (a receiver) does.
pub async fn rerun(args: RerunArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let kind = match args.kind {
        RerunKind::Recognition => pb::JobKind::Recognition,
        RerunKind::Detection => pb::JobKind::Detection,
    };
    let scope = if args.all {
        pb::JobScope::All
    } else {
        pb::JobScope::Missing
    };
    let started = call!(
        &api,
        start_job,
        pb::StartJobRequest {
            kind: kind as i32,
            scope: scope as i32,
        }
    )?;
    let job = started.job.unwrap_or_default();
    if !started.created {
        eprintln!(
            "a {} job is already {}: job {}",
            job_json(&job)["kind"].as_str().unwrap_or(""),
            job_state(job.state),
            job.id
        );
    }
    let runner = match (&api, kind) {
        (Api::Local { people, .. }, pb::JobKind::Recognition) => {
            let people = people.clone();
            Some(tokio::spawn(async move {
                people
                    .run_next_job(&facewire_server::job_owner("cli"))
                    .await
            }))
        }
        (Api::Local { .. }, _) if args.wait => {
            anyhow::bail!(
                "job {} is queued; detection re-runs go through the pipeline, so it runs \
                 when facewire up is running (use --server to watch it there)",
                job.id
            )
        }
        _ => None,
    };
    let mut last = job.clone();
    if args.wait || runner.is_some() {
        let bar = indicatif::ProgressBar::new(job.total.max(0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("job {}", job.id));
        loop {
            let current = call!(&api, get_job, pb::GetJobRequest { id: job.id })?
                .job
                .unwrap_or_default();
            bar.set_length(current.total.max(0) as u64);
            bar.set_position(current.done.max(0) as u64);
            let finished = !matches!(
                pb::JobState::try_from(current.state),
                Ok(pb::JobState::Queued | pb::JobState::Running)
            );
            last = current;
            if finished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bar.finish_and_clear();
    }
    if let Some(runner) = runner {
        runner.await??;
    }
    if args.target.json {
        print_json(&job_json(&last))?;
    } else {
        println!(
            "job {}: {} ({}/{})",
            last.id,
            job_state(last.state),
            last.done,
            last.total
        );
    }
    Ok(if job_state(last.state) == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `facewire jobs`: the newest jobs first.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::open(&args.target).await?;
    let jobs = call!(&api, list_jobs, pb::ListJobsRequest { page_size: 100 })?.jobs;
    if args.target.json {
        print_json(&Value::Array(jobs.iter().map(job_json).collect()))?;
    } else {
        for j in &jobs {
            let v = job_json(j);
            println!(
                "job {}\t{} {}\t{}\t{}/{}",
                j.id,
                v["kind"].as_str().unwrap_or(""),
                v["scope"].as_str().unwrap_or(""),
                job_state(j.state),
                j.done,
                j.total
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
