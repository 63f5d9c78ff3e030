//! The gRPC `ImageService`.

use std::{collections::HashSet, pin::Pin};

use facewire_proto::v1::{self as pb, image_service_server::ImageService};
use facewire_server::status::{invalid_argument, not_found};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::{
    convert::{image_to_pb, item_to_pb, path_error_status, status_from_pb, store_status},
    ingest::{Ingest, ItemResult},
    watch::{ChangeFeed, Cursor, Watcher},
};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 1000;

/// The `ImageService` implementation: thin handlers over [`Ingest`] and the store.
#[derive(Clone)]
pub struct ImageApi {
    ingest: Ingest,
    batch_api: bool,
    feed: ChangeFeed,
    max_watch: usize,
}

impl ImageApi {
    /// Serves `ingest`; with `batch_api` false it behaves as the tutorial's first
    /// release and answers `SubmitImages` with UNIMPLEMENTED.
    pub fn new(ingest: Ingest, batch_api: bool, feed: ChangeFeed, max_watch: usize) -> Self {
        Self {
            ingest,
            batch_api,
            feed,
            max_watch,
        }
    }
}

/// The stream `WatchImages` answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchImagesResponse, Status>> + Send>>;

/// Most people one image listing may filter by.
const MAX_PEOPLE_FILTER: usize = 20;

#[tonic::async_trait]
impl ImageService for ImageApi {
    type WatchImagesStream = WatchStream;

    async fn watch_images(
        &self,
        request: Request<pb::WatchImagesRequest>,
    ) -> Result<Response<Self::WatchImagesStream>, Status> {
        let pb::WatchImagesRequest { ids, cursor } = request.into_inner();
        if ids.len() > self.max_watch {
            return Err(invalid_argument(
                "ids",
                format!(
                    "watching {} ids; the limit is {} (FACEWIRE_MAX_BATCH)",
                    ids.len(),
                    self.max_watch
                ),
            ));
        }
        let resume = if cursor.is_empty() {
            None
        } else {
            Some(Cursor::parse(&cursor).map_err(|e| invalid_argument("cursor", e.to_string()))?)
        };
        // Subscribe before reading anything, so no change falls in between; the watcher
        // drops live events that the reads already delivered.
        let changes = self.feed.subscribe();
        let store = self.ingest.store().clone();
        let mut open: Option<HashSet<i64>> = None;
        let mut initial = Vec::new();
        if !ids.is_empty() {
            let records = store
                .get_many(ids.clone())
                .await
                .map_err(|e| store_status(&e))?;
            let found: HashSet<i64> = records.iter().map(|r| r.id).collect();
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !found.contains(id))
                .map(|id| id.to_string())
                .collect();
            if !missing.is_empty() {
                let missing = missing.join(", ");
                return Err(not_found(
                    "image",
                    &missing,
                    format!("no image with id {missing}"),
                ));
            }
            // Still owed to the client: images not yet terminal, and (when resuming)
            // those that changed after its cursor, which the replay sends.
            open = Some(
                records
                    .iter()
                    .filter(|r| !r.status.is_terminal() || resume.is_some_and(|c| !c.covers(r)))
                    .map(|r| r.id)
                    .collect(),
            );
            // A resuming client has these records as of its cursor: it gets what changed.
            if resume.is_none() {
                initial = records;
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let watcher = Watcher::new(store, changes, open, resume);
        tokio::spawn(
            watcher.run(initial, self.feed.closed(), move |record, cursor| {
                let tx = tx.clone();
                let msg = pb::WatchImagesResponse {
                    image: Some(image_to_pb(&record)),
                    cursor: cursor.encode(),
                };
                async move { tx.send(Ok(msg)).await.is_ok() }
            }),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn submit_images(
        &self,
        request: Request<pb::SubmitImagesRequest>,
    ) -> Result<Response<pb::SubmitImagesResponse>, Status> {
        if !self.batch_api {
            return Err(Status::unimplemented(
                "SubmitImages is not served by this release",
            ));
        }
        let paths: Vec<String> = request
            .into_inner()
            .paths
            .into_iter()
            .map(|p| p.path)
            .collect();
        let items = self.ingest.submit(paths.clone()).await?;
        let results = paths
            .into_iter()
            .zip(items.iter())
            .map(|(path, item)| item_to_pb(path, item))
            .collect();
        Ok(Response::new(pb::SubmitImagesResponse { results }))
    }

    async fn submit_image(
        &self,
        request: Request<pb::SubmitImageRequest>,
    ) -> Result<Response<pb::SubmitImageResponse>, Status> {
        // The legacy call is the batch path with a batch of one.
        let path = request.into_inner().path;
        let mut items = self.ingest.submit(vec![path]).await?;
        match items.pop() {
            Some(ItemResult::Accepted(rec)) => Ok(Response::new(pb::SubmitImageResponse {
                image: Some(image_to_pb(&rec)),
            })),
            Some(ItemResult::Refused(e)) => Err(path_error_status(&e)),
            None => Err(Status::internal("no result for the submitted path")),
        }
    }

    async fn get_image(
        &self,
        request: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let id = request.into_inner().id;
        match self
            .ingest
            .store()
            .get(id)
            .await
            .map_err(|e| store_status(&e))?
        {
            Some(rec) => Ok(Response::new(pb::GetImageResponse {
                image: Some(image_to_pb(&rec)),
            })),
            None => Err(not_found(
                "image",
                &id.to_string(),
                format!("no image with id {id}"),
            )),
        }
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 => {
                return Err(invalid_argument(
                    "page_size",
                    format!("page_size is {n}; it must be between 0 and {MAX_PAGE}"),
                ))
            }
            n => i64::from(n).min(MAX_PAGE),
        };
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<i64>().map_err(|_| {
                invalid_argument("page_token", "page_token is not one this server issued")
            })?)
        };
        let status = pb::ImageStatus::try_from(req.status)
            .map_err(|_| invalid_argument("status", format!("unknown status {}", req.status)))?;
        if req.person_ids.len() > MAX_PEOPLE_FILTER || req.person_ids.iter().any(|p| *p <= 0) {
            return Err(invalid_argument(
                "person_ids",
                format!("person_ids must be at most {MAX_PEOPLE_FILTER} positive ids"),
            ));
        }
        let filter = facewire_storage::ImageFilter {
            status: status_from_pb(status),
            person_ids: req.person_ids,
            has_unknown_faces: req.has_unknown_faces,
        };
        let records = self
            .ingest
            .store()
            .list_filtered(filter, before, limit)
            .await
            .map_err(|e| store_status(&e))?;
        let next_page_token = match records.last() {
            Some(last) if records.len() as i64 == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListImagesResponse {
            images: records.iter().map(image_to_pb).collect(),
            next_page_token,
        }))
    }
}
