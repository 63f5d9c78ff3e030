//! Stage 6: ask recognition about the images of one call. A call refused as too large is
//! split in halves and each half asked again, so no image fails for its neighbours'
//! sizes; a call cut short (recognition draining or restarting, the connection lost, no
//! answer in time) puts its images back for a retry; only an answer about the image
//! itself, or a refusal for good, fails it.

use facewire_proto::v1::{batch_result, BatchImage, ImageErrorCode, RecognizeBatchRequest};
use facewire_storage::{DetectedFace, Outcome};
use tower::{Service, ServiceExt};

use crate::RecognizeBatch;

/// What a failed recognition call means for its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The request was too large (or held too many images): split it and ask again.
    TooLarge,
    /// The call was cut short or could not be made (recognition draining, restarting
    /// or overloaded, the connection closed or reset, no answer in time): retry later.
    Transient,
    /// Recognition refused the call for good.
    Permanent,
}

impl CallFailure {
    /// Classifies a failed call's status.
    pub fn of(status: &tonic::Status) -> Self {
        let message = status.message();
        let too_large = match status.code() {
            // tonic's own words for a message over a limit, on either side.
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                message.contains("message length too large") || message.contains("too large")
            }
            // facewire's servers rewrite tonic's words into this (see facewire-server),
            // and recognition refuses more images than its batch limit this way.
            tonic::Code::InvalidArgument => {
                (message.starts_with("request message is") && message.contains("the limit is"))
                    || message.contains("images in one request")
            }
            _ => false,
        };
        if too_large {
            CallFailure::TooLarge
        } else if facewire_resilience::is_transient(status) {
            CallFailure::Transient
        } else {
            CallFailure::Permanent
        }
    }
}

/// Asks recognition about `images` (keyed by their index in `outcomes`) and fills in an
/// outcome for each it answers or fails about; slots already filled are kept.
pub async fn recognise(
    recognize: &RecognizeBatch,
    images: Vec<BatchImage>,
    outcomes: &mut [Option<Outcome>],
) {
    let mut calls = vec![images];
    while let Some(images) = calls.pop() {
        if images.is_empty() {
            continue;
        }
        let keys: Vec<usize> = images.iter().filter_map(|i| i.key.parse().ok()).collect();
        // The images are kept until the answer comes, in case the call must be split.
        let request = RecognizeBatchRequest {
            images: images.clone(),
        };
        let mut svc = recognize.clone();
        let started = std::time::Instant::now();
        let response = match svc.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(e) => Err(e),
        };
        metrics::histogram!("processor_recognition_seconds")
            .record(started.elapsed().as_secs_f64());
        let status = match response {
            Ok(resp) => {
                for result in resp.results {
                    let Ok(i) = result.key.parse::<usize>() else {
                        continue;
                    };
                    if let Some(slot) = outcomes.get_mut(i) {
                        *slot = Some(answer(result.outcome));
                    }
                }
                continue;
            }
            Err(status) => status,
        };
        let outcome = match CallFailure::of(&status) {
            CallFailure::TooLarge if images.len() > 1 => {
                metrics::counter!("processor_split_calls_total").increment(1);
                tracing::info!(images = images.len(), reason = %status.message(), "recognition refused the call as too large; splitting it");
                let (first, second) = halves(images);
                calls.push(second);
                calls.push(first);
                continue;
            }
            failure => failed_call(failure, &status),
        };
        for &i in &keys {
            if let Some(slot) = outcomes.get_mut(i) {
                if slot.is_none() {
                    *slot = Some(outcome.clone());
                }
            }
        }
    }
}

/// The two halves of a call refused as too large (the first asked first).
fn halves(mut images: Vec<BatchImage>) -> (Vec<BatchImage>, Vec<BatchImage>) {
    let second = images.split_off(images.len() / 2);
    (images, second)
}

/// The outcome recognition's answer about one image means.
pub fn answer(result: Option<batch_result::Outcome>) -> Outcome {
    match result {
        Some(batch_result::Outcome::Faces(faces)) if faces.faces.is_empty() => Outcome::NoFace,
        Some(batch_result::Outcome::Faces(faces)) => {
            Outcome::Done(faces.faces.into_iter().map(detected_face).collect())
        }
        // Nothing wrong with the image: the service was busy or its analysis failed.
        Some(batch_result::Outcome::Error(e))
            if matches!(
                ImageErrorCode::try_from(e.code),
                Ok(ImageErrorCode::Busy | ImageErrorCode::AnalysisFailed)
            ) =>
        {
            Outcome::Retry(format!(
                "recognition could not analyse it now: {}",
                e.message
            ))
        }
        Some(batch_result::Outcome::Error(e)) => {
            Outcome::Failed(format!("recognition refused the image: {}", e.message))
        }
        None => Outcome::Retry("recognition returned no result".into()),
    }
}

/// The outcome for every image of a failed call that is not split any further.
pub fn failed_call(failure: CallFailure, status: &tonic::Status) -> Outcome {
    match failure {
        // One image within the size limit: recognition is set up with a request limit
        // below it. Not the image's fault: retry (and tell the operator).
        CallFailure::TooLarge => {
            tracing::warn!(reason = %status.message(), "recognition refused one image as too large: FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES must exceed FACEWIRE_MAX_IMAGE_BYTES");
            Outcome::Retry(format!(
                "recognition refused the request as too large: {}",
                status.message()
            ))
        }
        CallFailure::Transient => {
            Outcome::Retry(format!("recognition unavailable: {}", status.message()))
        }
        CallFailure::Permanent => Outcome::Failed(format!("recognition failed: {status}")),
    }
}

/// A face recognition found, as the record the database keeps: box, landmarks, score,
/// embedding, crop, and the gallery's match (only when it names a person by id: an old
/// recognition service that sends names alone gets its faces stored unassigned, and a
/// re-match names them).
fn detected_face(f: facewire_proto::v1::Face) -> DetectedFace {
    let bbox = f
        .r#box
        .map(|b| [b.x, b.y, b.width, b.height])
        .unwrap_or_default();
    DetectedFace {
        bbox,
        landmarks: f.landmarks.iter().map(|p| [p.x, p.y]).collect(),
        score: f.detection_score,
        embedding: f.embedding,
        crop: (!f.crop_jpeg.is_empty()).then_some(f.crop_jpeg),
        matched: f
            .r#match
            .filter(|m| m.person_id > 0)
            .map(|m| (m.person_id, m.similarity.clamp(-1.0, 1.0))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use facewire_proto::v1::{
        BatchResult, Face, ImageError, Match, RecognizeBatchResponse, RecognizeResponse,
    };
    use tonic::Status;
    use tower::util::BoxCloneSyncService;

    use super::*;

    #[test]
    fn failed_calls_are_classified() {
        let too_large = [
            Status::invalid_argument(
                "request message is 100663296 bytes; the limit is 67108864 bytes (FACEWIRE_MAX_MESSAGE_BYTES)",
            ),
            Status::out_of_range(
                "Error, decoded message length too large: found 100663296 bytes, the limit is: 67108864 bytes",
            ),
            Status::invalid_argument("9 images in one request; at most 8 are accepted"),
        ];
        for status in &too_large {
            assert_eq!(CallFailure::of(status), CallFailure::TooLarge, "{status:?}");
        }
        let transient = [
            Status::cancelled("the server is shutting down"),
            Status::unavailable("connection refused"),
            Status::deadline_exceeded("no answer within 30s"),
            Status::internal("h2 protocol error: connection closed"),
            Status::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Status::resource_exhausted("Too many active requests for the connection"),
        ];
        for status in &transient {
            assert_eq!(
                CallFailure::of(status),
                CallFailure::Transient,
                "{status:?}"
            );
        }
        for status in [
            Status::invalid_argument("bad"),
            Status::internal("the model failed"),
        ] {
            assert_eq!(
                CallFailure::of(&status),
                CallFailure::Permanent,
                "{status:?}"
            );
        }
    }

    #[test]
    fn answers_become_outcomes() {
        assert_eq!(
            answer(Some(batch_result::Outcome::Faces(
                RecognizeResponse::default()
            ))),
            Outcome::NoFace
        );
        let face = Face {
            embedding: vec![0.5; 4],
            r#match: Some(Match {
                person_id: 3,
                similarity: 1.5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let Outcome::Done(found) = answer(Some(batch_result::Outcome::Faces(RecognizeResponse {
            faces: vec![face],
        }))) else {
            panic!("faces were found");
        };
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].matched, Some((3, 1.0)), "similarity is clamped");
        assert!(found[0].crop.is_none());
        assert!(matches!(
            answer(Some(batch_result::Outcome::Error(ImageError {
                message: "not an image".into(),
                ..Default::default()
            }))),
            Outcome::Failed(reason) if reason.contains("not an image")
        ));
        // A busy service or a failed analysis says nothing about the image: retry.
        for code in [ImageErrorCode::Busy, ImageErrorCode::AnalysisFailed] {
            assert!(matches!(
                answer(Some(batch_result::Outcome::Error(ImageError {
                    code: code as i32,
                    message: "the decode budget stayed in use".into(),
                }))),
                Outcome::Retry(reason) if reason.contains("decode budget")
            ));
        }
        assert!(matches!(answer(None), Outcome::Retry(_)));
    }

    #[test]
    fn a_failed_call_retries_unless_refused_for_good() {
        assert!(matches!(
            failed_call(CallFailure::Transient, &Status::unavailable("down")),
            Outcome::Retry(r) if r == "recognition unavailable: down"
        ));
        assert!(matches!(
            failed_call(CallFailure::TooLarge, &Status::out_of_range("too large")),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            failed_call(CallFailure::Permanent, &Status::internal("the model failed")),
            Outcome::Failed(r) if r.contains("the model failed")
        ));
    }

    /// A stand-in recognition call: refuses more than `limit` images as too large,
    /// answers "no face" otherwise, and records the size of every call.
    fn refusing_above(limit: usize, calls: Arc<Mutex<Vec<usize>>>) -> RecognizeBatch {
        BoxCloneSyncService::new(tower::service_fn(move |req: RecognizeBatchRequest| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(req.images.len());
                if req.images.len() > limit {
                    return Err(Status::invalid_argument(format!(
                        "{} images in one request; at most {limit} are accepted",
                        req.images.len()
                    )));
                }
                Ok(RecognizeBatchResponse {
                    results: req
                        .images
                        .into_iter()
                        .map(|i| BatchResult {
                            key: i.key,
                            outcome: Some(batch_result::Outcome::Faces(
                                RecognizeResponse::default(),
                            )),
                        })
                        .collect(),
                })
            }
        }))
    }

    fn images(keys: &[usize]) -> Vec<BatchImage> {
        keys.iter()
            .map(|k| BatchImage {
                key: k.to_string(),
                image: vec![1, 2, 3],
            })
            .collect()
    }

    #[tokio::test]
    async fn a_call_refused_as_too_large_is_split_until_every_image_is_answered() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recognize = refusing_above(2, calls.clone());
        let mut outcomes = vec![None; 7];
        // Image 6 already failed while loading: its slot is kept.
        outcomes[6] = Some(Outcome::Failed("unreadable".into()));
        recognise(&recognize, images(&[0, 1, 2, 3, 4, 5]), &mut outcomes).await;
        assert!(
            outcomes[..6].iter().all(|o| o == &Some(Outcome::NoFace)),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[6], Some(Outcome::Failed("unreadable".into())));
        // 6 → 3 + 3 → (1 + 2) + (1 + 2).
        assert_eq!(*calls.lock().unwrap(), vec![6, 3, 1, 2, 3, 1, 2]);
    }

    #[tokio::test]
    async fn a_single_image_refused_as_too_large_is_retried_not_failed() {
        let recognize = refusing_above(0, Arc::default());
        let mut outcomes = vec![None; 2];
        recognise(&recognize, images(&[0, 1]), &mut outcomes).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Some(Outcome::Retry(_)))),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn a_call_refused_for_good_fails_its_images() {
        let recognize: RecognizeBatch =
            BoxCloneSyncService::new(tower::service_fn(|_: RecognizeBatchRequest| async {
                Err::<RecognizeBatchResponse, _>(Status::internal("the model failed"))
            }));
        let mut outcomes = vec![None; 2];
        recognise(&recognize, images(&[1]), &mut outcomes).await;
        assert_eq!(outcomes[0], None, "an image not in the call is left alone");
        assert!(matches!(&outcomes[1], Some(Outcome::Failed(r)) if r.contains("the model failed")));
    }
}
