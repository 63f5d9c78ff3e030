//! The gRPC `ImageService`.

use std::{collections::HashSet, pin::Pin};

use facewire_proto::v1::{self as pb, image_service_server::ImageService};
use futures::Stream;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::{Request, Response, Status};

use crate::{
    convert::{image_to_pb, item_to_pb, path_error_status, status_from_pb, store_status},
    ingest::{Ingest, ItemResult},
    watch::ChangeFeed,
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
        let ids = request.into_inner().ids;
        if ids.len() > self.max_watch {
            return Err(Status::invalid_argument(format!(
                "watching {} ids; the limit is {} (FACEWIRE_MAX_BATCH)",
                ids.len(),
                self.max_watch
            )));
        }
        // Subscribe before reading the current state, so no change falls in between.
        let mut changes = self.feed.subscribe();
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
                return Err(Status::not_found(format!(
                    "no image with id {}",
                    missing.join(", ")
                )));
            }
            open = Some(
                records
                    .iter()
                    .filter(|r| !r.status.is_terminal())
                    .map(|r| r.id)
                    .collect(),
            );
            initial = records;
        }
        let (tx, rx) = mpsc::channel(256);
        let closed = self.feed.closed();
        tokio::spawn(async move {
            let send = |r: &facewire_storage::ImageRecord| {
                let tx = tx.clone();
                let msg = pb::WatchImagesResponse {
                    image: Some(image_to_pb(r)),
                };
                async move { tx.send(Ok(msg)).await.is_ok() }
            };
            for r in &initial {
                if !send(r).await {
                    return;
                }
            }
            loop {
                if open.as_ref().is_some_and(|o| o.is_empty()) {
                    return; // every watched image is terminal
                }
                let next = tokio::select! {
                    _ = closed.cancelled() => return,
                    r = changes.recv() => r,
                };
                let record = match next {
                    Ok(r) => r,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "watcher lagged; re-reading its images");
                        if let Some(o) = &open {
                            let ids: Vec<i64> = o.iter().copied().collect();
                            if let Ok(records) = store.get_many(ids).await {
                                for r in records {
                                    if r.status.is_terminal() {
                                        if let Some(o) = open.as_mut() {
                                            o.remove(&r.id);
                                        }
                                    }
                                    if !send(&r).await {
                                        return;
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if let Some(o) = open.as_mut() {
                    if !o.contains(&record.id) {
                        continue;
                    }
                    if record.status.is_terminal() {
                        o.remove(&record.id);
                    }
                }
                if !send(&record).await {
                    return;
                }
            }
        });
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
            None => Err(Status::not_found(format!("no image with id {id}"))),
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
                return Err(Status::invalid_argument(format!(
                    "page_size is {n}; it must be between 0 and {MAX_PAGE}"
                )))
            }
            n => i64::from(n).min(MAX_PAGE),
        };
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<i64>().map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?)
        };
        let status = pb::ImageStatus::try_from(req.status)
            .map_err(|_| Status::invalid_argument(format!("unknown status {}", req.status)))?;
        if req.person_ids.len() > MAX_PEOPLE_FILTER || req.person_ids.iter().any(|p| *p <= 0) {
            return Err(Status::invalid_argument(format!(
                "person_ids must be at most {MAX_PEOPLE_FILTER} positive ids"
            )));
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
