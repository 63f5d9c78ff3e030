//! Re-runs as jobs: a record with kind, scope, state and progress.
//!
//! One job of a kind is queued or running at a time (a partial unique index), so a
//! re-run started twice is one job. A runner takes a queued job with a conditional
//! update, so with many replicas exactly one runs it; it reports progress and a
//! heartbeat, and a job whose runner stopped beating is taken over by another. A cancel
//! is a state change the runner sees between steps.

use diesel::prelude::*;

use crate::{now_millis, schema::jobs, Store, StoreError};

/// What a job re-runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Match stored embeddings against the gallery again.
    Recognition,
    /// Detect faces in images again.
    Detection,
}

/// Which faces or images a job covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobScope {
    /// Only what has no result yet.
    Missing,
    /// Everything automation may change.
    All,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for a runner.
    Queued,
    /// Being run.
    Running,
    /// Finished.
    Done,
    /// Stopped by a user.
    Cancelled,
    /// Stopped by an error.
    Failed,
}

macro_rules! spelled {
    ($ty:ident { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($ty::$variant),)*
                    other => Err(StoreError::Corrupt(format!(
                        concat!("unknown ", stringify!($ty), " {:?}"), other
                    ))),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
spelled!(JobKind { Recognition => "recognition", Detection => "detection" });
spelled!(JobScope { Missing => "missing", All => "all" });
spelled!(JobState {
    Queued => "queued",
    Running => "running",
    Done => "done",
    Cancelled => "cancelled",
    Failed => "failed",
});

impl JobState {
    /// Whether the job will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Cancelled | JobState::Failed
        )
    }
}

/// A job record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// What it re-runs.
    pub kind: JobKind,
    /// What it covers.
    pub scope: JobScope,
    /// Where it is.
    pub state: JobState,
    /// Items done.
    pub done: i64,
    /// Items in all (known once it runs).
    pub total: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

type JobRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    i64,
);

macro_rules! job_columns {
    () => {
        (
            jobs::id,
            jobs::kind,
            jobs::scope,
            jobs::state,
            jobs::done,
            jobs::total,
            jobs::error,
            jobs::created_at,
            jobs::updated_at,
        )
    };
}

fn job_from_row(r: JobRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: r.0,
        kind: r.1.parse()?,
        scope: r.2.parse()?,
        state: r.3.parse()?,
        done: r.4,
        total: r.5,
        error: r.6,
        created_at: r.7,
        updated_at: r.8,
    })
}

const ACTIVE: [&str; 2] = ["queued", "running"];

impl Store {
    /// Queues a job, unless one of that kind is queued or running: then that one is
    /// returned with `false`.
    pub async fn start_job(
        &self,
        kind: JobKind,
        scope: JobScope,
    ) -> Result<(Job, bool), StoreError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let inserted = diesel::insert_into(jobs::table)
                    .values((
                        jobs::kind.eq(kind.as_str()),
                        jobs::scope.eq(scope.as_str()),
                        jobs::state.eq("queued"),
                        jobs::created_at.eq(now),
                        jobs::updated_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                let row: JobRow = jobs::table
                    .filter(jobs::kind.eq(kind.as_str()))
                    .filter(jobs::state.eq_any(ACTIVE))
                    .select(job_columns!())
                    .first(conn)?;
                Ok::<_, StoreError>((job_from_row(row)?, inserted == 1))
            })
        })
    }

    /// One job.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        with_conn!(self, |conn| {
            jobs::table
                .find(id)
                .select(job_columns!())
                .first::<JobRow>(conn)
                .optional()?
                .map(job_from_row)
                .transpose()
        })
    }

    /// The newest jobs first.
    pub async fn jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        with_conn!(self, |conn| {
            jobs::table
                .order(jobs::id.desc())
                .limit(limit)
                .select(job_columns!())
                .load::<JobRow>(conn)?
                .into_iter()
                .map(job_from_row)
                .collect()
        })
    }

    /// Takes a queued job of `kind` for `owner` (or one whose runner has not beaten its
    /// heartbeat since `stale_before`): exactly one caller gets it.
    pub async fn take_job(
        &self,
        kind: JobKind,
        owner: &str,
        stale_before: i64,
    ) -> Result<Option<Job>, StoreError> {
        let owner = owner.to_string();
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let candidate: Option<i64> = jobs::table
                    .filter(jobs::kind.eq(kind.as_str()))
                    .filter(
                        jobs::state.eq("queued").or(jobs::state
                            .eq("running")
                            .and(jobs::heartbeat_at.lt(stale_before))),
                    )
                    .select(jobs::id)
                    .first(conn)
                    .optional()?;
                let Some(id) = candidate else {
                    return Ok(None);
                };
                // Conditional on what was read: a concurrent taker changed it, and then
                // this update matches nothing.
                let taken = diesel::update(
                    jobs::table.filter(jobs::id.eq(id)).filter(
                        jobs::state.eq("queued").or(jobs::state
                            .eq("running")
                            .and(jobs::heartbeat_at.lt(stale_before))),
                    ),
                )
                .set((
                    jobs::state.eq("running"),
                    jobs::owner.eq(&owner),
                    jobs::heartbeat_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)?;
                if taken == 0 {
                    return Ok(None);
                }
                jobs::table
                    .find(id)
                    .select(job_columns!())
                    .first::<JobRow>(conn)
                    .map(job_from_row)?
                    .map(Some)
            })
        })
    }

    /// Records progress of a running job owned by `owner`. Returns the job's state after
    /// the update: `Cancelled` tells the runner to stop; any other state but `Running`
    /// means it lost the job.
    pub async fn job_progress(
        &self,
        id: i64,
        owner: &str,
        done: i64,
        total: i64,
    ) -> Result<JobState, StoreError> {
        let owner = owner.to_string();
        with_conn!(self, |conn| {
            let now = now_millis();
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::owner.eq(&owner))
                    .filter(jobs::state.eq("running")),
            )
            .set((
                jobs::done.eq(done),
                jobs::total.eq(total),
                jobs::heartbeat_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?;
            let state: String = jobs::table.find(id).select(jobs::state).first(conn)?;
            state.parse()
        })
    }

    /// Ends a running job owned by `owner` as done or failed (with the reason).
    pub async fn finish_job(
        &self,
        id: i64,
        owner: &str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let owner = owner.to_string();
        with_conn!(self, |conn| {
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::owner.eq(&owner))
                    .filter(jobs::state.eq("running")),
            )
            .set((
                jobs::state.eq(if error.is_some() { "failed" } else { "done" }),
                jobs::error.eq(&error),
                jobs::updated_at.eq(now_millis()),
            ))
            .execute(conn)?;
            Ok(())
        })
    }

    /// Cancels a queued or running job (a runner stops after its current step). A
    /// finished job is returned as it is.
    pub async fn cancel_job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        with_conn!(self, |conn| {
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::state.eq_any(ACTIVE)),
            )
            .set((
                jobs::state.eq("cancelled"),
                jobs::updated_at.eq(now_millis()),
            ))
            .execute(conn)?;
            Ok::<_, StoreError>(())
        })?;
        self.job(id).await
    }
}
