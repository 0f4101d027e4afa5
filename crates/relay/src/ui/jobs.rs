//! Bulk jobs started from the Dead letters page: replay or purge every dead letter matching a
//! filter, in chunks, at most `[ui] bulk_rate` messages per second, in the background, with
//! a progress page (polled by htmx, refreshed by the browser without JavaScript). A job
//! touches at most as many messages as its preview counted, and is recorded in the audit log
//! when it ends. Jobs live in memory (the latest [`MAX_JOBS`]); a restart stops a running one
//! where it was, and what it did stays done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ferrule_store::{Filter, ReplayTarget, Store};
use serde_json::json;

use super::{Layout, Ui, UiError, Viewer, is_htmx, render};
use crate::audit::{self, Action};
use crate::state::AppState;

/// How many jobs are remembered.
pub(crate) const MAX_JOBS: usize = 50;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Re-queue the dead letters.
    Replay,
    /// Delete them.
    Purge,
}

impl Op {
    pub(crate) fn parse(text: &str) -> Option<Op> {
        match text {
            "replay" => Some(Op::Replay),
            "purge" => Some(Op::Purge),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Replay => "replay",
            Op::Purge => "purge",
        }
    }
}

/// One bulk job and its progress.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) op: Op,
    pub(crate) actor: String,
    pub(crate) filter: String,
    pub(crate) total: u64,
    pub(crate) rate: u32,
    done: AtomicU64,
    skipped: AtomicU64,
    finished: AtomicBool,
    error: Mutex<Option<String>>,
}

/// The jobs, by id.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    map: Mutex<BTreeMap<u64, Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

/// Starts a job of `op` over the dead letters matching `filter` (at most `total` of them);
/// answers its id.
pub(crate) fn start(
    state: &AppState,
    ui: &Ui,
    op: Op,
    actor: String,
    filter: Filter,
    detail: serde_json::Value,
    total: u64,
) -> u64 {
    let id = ui.jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let job = Arc::new(Job {
        id,
        op,
        actor,
        filter: detail.to_string(),
        total,
        rate: state.config.ui.bulk_rate.max(1),
        done: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    {
        let mut map = ui.jobs.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id, job.clone());
        while map.len() > MAX_JOBS {
            let Some(oldest) = map.keys().next().copied() else {
                break;
            };
            map.remove(&oldest);
        }
    }
    let state2 = state.clone();
    state.tasks.spawn(async move {
        let result = tokio::select! {
            r = run(&state2, &job, &filter) => r,
            _ = state2.shutdown.cancelled() => Err("the relay shut down".to_owned()),
        };
        if let Err(e) = result {
            *job.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
        job.finished.store(true, Ordering::Release);
        let done = job.done.load(Ordering::Acquire);
        let action = match job.op {
            Op::Replay => Action::DeadLettersReplay,
            Op::Purge => Action::DeadLettersPurge,
        };
        let entry = audit::entry(&job.actor, action).count(done).detail(json!({
            "filter": detail,
            "via": "dashboard",
            "job": job.id,
            "previewed": job.total,
            "rate_per_second": job.rate,
        }));
        audit::record(&state2.store, entry).await;
        tracing::info!(job = job.id, op = job.op.as_str(), done, actor = %job.actor, "dashboard bulk job ended");
    });
    id
}

async fn run(state: &AppState, job: &Job, filter: &Filter) -> Result<(), String> {
    let chunk = job.rate.clamp(1, 100) as usize;
    let started = Instant::now();
    let mut cursor = None;
    let mut touched = 0u64;
    while touched < job.total {
        let room = usize::try_from(job.total - touched).unwrap_or(usize::MAX);
        let page = state
            .store
            .list(filter, cursor.as_ref(), chunk.min(room))
            .await
            .map_err(|e| e.to_string())?;
        if page.messages.is_empty() {
            break;
        }
        touched += page.messages.len() as u64;
        // Messages of a run are retried with their run, not one by one.
        let (ids, in_runs): (Vec<_>, Vec<_>) = page.messages.iter().partition(|m| m.run.is_none());
        job.skipped
            .fetch_add(in_runs.len() as u64, Ordering::AcqRel);
        let ids: Vec<_> = ids.into_iter().map(|m| m.id).collect();
        if !ids.is_empty() {
            let n = match job.op {
                Op::Replay => state
                    .store
                    .replay(ReplayTarget::Ids(ids), false)
                    .await
                    .map(|r| r.count),
                Op::Purge => state.store.purge_ids(&ids, filter).await,
            }
            .map_err(|e| e.to_string())?;
            job.done.fetch_add(n, Ordering::AcqRel);
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
        // At most `rate` messages per second.
        let due = Duration::from_secs_f64(touched as f64 / f64::from(job.rate));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(())
}

#[derive(Template)]
#[template(path = "ui/job_progress.html")]
struct Progress {
    id: u64,
    op: &'static str,
    done: u64,
    skipped: u64,
    total: u64,
    percent: u64,
    finished: bool,
    error: Option<String>,
    rate: u32,
}

#[derive(Template)]
#[template(path = "ui/job.html")]
struct Page {
    layout: Layout,
    actor: String,
    filter: String,
    progress: String,
}

fn progress(job: &Job) -> Progress {
    let done = job.done.load(Ordering::Acquire);
    let skipped = job.skipped.load(Ordering::Acquire);
    let finished = job.finished.load(Ordering::Acquire);
    Progress {
        id: job.id,
        op: job.op.as_str(),
        done,
        skipped,
        total: job.total,
        percent: if job.total == 0 || finished {
            100
        } else {
            ((done + skipped) * 100 / job.total).min(100)
        },
        finished,
        error: job.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        rate: job.rate,
    }
}

/// `GET /ui/jobs/{id}`: a job's progress (only the progress bar for htmx).
pub(crate) async fn show(
    State(_state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Response, UiError> {
    let Some(job) = ui.jobs.get(id) else {
        return Err(crate::api::ApiError::not_found(format!(
            "no job {id} (jobs are kept in memory)"
        ))
        .into());
    };
    let progress = progress(&job);
    if is_htmx(&headers) {
        return Ok(render(&progress));
    }
    let mut layout = Layout::new(&viewer, format!("Bulk {} #{id}", job.op.as_str()), "dead");
    if !progress.finished {
        layout.refresh = Some(2);
    }
    Ok(render(&Page {
        layout,
        actor: job.actor.clone(),
        filter: job.filter.clone(),
        progress: progress.render().unwrap_or_default(),
    }))
}
