//! The jobs API, for clients and the page: `POST /api/pulls {"name","platform"?}` starts a
//! fetch and answers its id and URLs; `GET /api/pulls/{id}` is its state, total and done
//! bytes and each blob's progress; `GET /api/pulls/{id}/events` the same as server-sent
//! events until it ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};

use ferry_core::{Digest, Platform};

use crate::jobs::Job;
use crate::{names, ServeError, State};

/// Pulls remembered; the oldest finished ones are forgotten past this.
const KEEP: usize = 256;

/// One pull started through the API.
pub(crate) struct PullRecord {
    name: String,
    platform: Option<Platform>,
    digest: Digest,
    job: Arc<Job>,
    created: Instant,
}

#[derive(Default)]
pub(crate) struct Pulls {
    by_id: Mutex<HashMap<String, PullRecord>>,
    counter: AtomicU64,
}

impl Pulls {
    fn insert(&self, rec: PullRecord) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Not guessable from another's id: a hash of the image, a counter and the time.
        let seed = format!(
            "{} {n} {:?} {:?}",
            rec.digest,
            rec.created,
            std::time::SystemTime::now()
        );
        let id = Digest::sha256_of(seed.as_bytes()).hex()[..16].to_string();
        let mut m = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= KEEP {
            // The oldest finished pull goes first; when none has finished (many records of
            // the same few running fetches: POST costs nothing once an image is being
            // fetched) the oldest record goes, so the table stays bounded. The fetch itself
            // goes on: only its record here is forgotten.
            let oldest = m
                .iter()
                .filter(|(_, r)| r.job.state().finished)
                .min_by_key(|(_, r)| r.created)
                .or_else(|| m.iter().min_by_key(|(_, r)| r.created))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                m.remove(&k);
            }
        }
        m.insert(id.clone(), rec);
        id
    }

    fn get(&self, id: &str) -> Option<(String, Option<Platform>, Arc<Job>)> {
        let m = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id)
            .map(|r| (r.name.clone(), r.platform.clone(), r.job.clone()))
    }
}

fn bad(msg: &str) -> ServeError {
    ServeError::BadRequest(msg.to_string())
}

/// `POST /api/pulls`.
pub(crate) async fn create(
    AxState(st): AxState<Arc<State>>,
    body: Bytes,
) -> Result<Response, ServeError> {
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        bad("the body must be JSON: {\"name\": IMAGE, \"platform\": \"os/arch[/variant]\"}")
    })?;
    let name = v.get("name").and_then(Value::as_str);
    let r = names::image(name, "name")?;
    let platform = match v.get("platform") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [os, arch] => names::platform(Some(os), Some(arch), None)?,
                [os, arch, variant] => names::platform(Some(os), Some(arch), Some(variant))?,
                _ => return Err(bad("platform is os/arch or os/arch/variant")),
            }
        }
        Some(_) => return Err(bad("platform is a string: os/arch[/variant]")),
    };
    let image = st.resolve(&r, platform.as_ref()).await?;
    crate::http::checked_plan(&st, &image)?;
    let job = st.keep_fetching(&image)?;
    let name = name.unwrap_or_default().trim().to_string();
    let id = st.pulls.insert(PullRecord {
        name: name.clone(),
        platform: platform.clone(),
        digest: image.root.digest.clone(),
        job,
        created: Instant::now(),
    });
    let mut download = format!("/image?name={}", encode(&name));
    if let Some(p) = &platform {
        download.push_str(&format!("&os={}&arch={}", p.os, p.architecture));
        if let Some(v) = &p.variant {
            download.push_str(&format!("&variant={v}"));
        }
    }
    let body = json!({
        "id": id,
        "name": name,
        "digest": image.root.digest.to_string(),
        "platform": platform.map(|p| p.to_string()),
        "urls": {
            "status": format!("/api/pulls/{id}"),
            "events": format!("/api/pulls/{id}/events"),
            "download": download,
        },
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn checked_id(id: &str) -> Result<(), ServeError> {
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(ServeError::NotFound("no such pull".into()))
    }
}

/// A pull's state as JSON.
fn snapshot(id: &str, name: &str, platform: &Option<Platform>, job: &Job) -> Value {
    let s = job.state();
    let state = match (&s.error, s.finished) {
        (Some(_), _) => "failed",
        (None, true) => "done",
        (None, false) => "running",
    };
    let blobs: Vec<Value> = job
        .blob_progress()
        .into_iter()
        .map(|(d, size, held, done)| {
            json!({"digest": d.to_string(), "size": size, "done_bytes": held, "done": done})
        })
        .collect();
    let done_bytes: u64 = blobs
        .iter()
        .map(|b| b["done_bytes"].as_u64().unwrap_or(0))
        .sum();
    let mut v = json!({
        "id": id,
        "name": name,
        "platform": platform.as_ref().map(ToString::to_string),
        "state": state,
        "total_bytes": job.total_bytes,
        "done_bytes": done_bytes,
        "blobs": blobs,
    });
    if let Some(e) = s.error {
        v["error"] = json!(e);
    }
    v
}

/// `GET /api/pulls/{id}`.
pub(crate) async fn status(
    AxState(st): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Response, ServeError> {
    checked_id(&id)?;
    let (name, platform, job) = st
        .pulls
        .get(&id)
        .ok_or_else(|| ServeError::NotFound("no such pull".into()))?;
    Ok(Json(snapshot(&id, &name, &platform, &job)).into_response())
}

/// `GET /api/pulls/{id}/events`: a `progress` event on every change (at most one per
/// 250 ms), the last one when the pull has ended.
pub(crate) async fn events(
    AxState(st): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServeError> {
    checked_id(&id)?;
    let (name, platform, job) = st
        .pulls
        .get(&id)
        .ok_or_else(|| ServeError::NotFound("no such pull".into()))?;
    let rx = job.subscribe();
    let stream = futures_util::stream::unfold((rx, job, false), move |(mut rx, job, ended)| {
        let (id, name, platform) = (id.clone(), name.clone(), platform.clone());
        async move {
            if ended {
                return None;
            }
            let v = snapshot(&id, &name, &platform, &job);
            let end = v["state"] != "running";
            let ev = Event::default().event("progress").data(v.to_string());
            if !end {
                // Progress within a blob does not touch the watch: wake on a change
                // or after a short while, whichever comes first.
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            Some((Ok(ev), (rx, job, end)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pull_table_stays_bounded_while_its_fetches_run() {
        // Every POST for an image being fetched adds a record of the same running job:
        // none has finished, and the table must still not grow past KEEP.
        let pulls = Pulls::default();
        let job = Job::running_for_test();
        let mut ids = Vec::new();
        for _ in 0..KEEP + 50 {
            ids.push(pulls.insert(PullRecord {
                name: "alpine".into(),
                platform: None,
                digest: Digest::sha256_of(b"x"),
                job: job.clone(),
                created: Instant::now(),
            }));
        }
        assert_eq!(pulls.by_id.lock().unwrap().len(), KEEP);
        assert!(
            pulls.get(ids.last().unwrap()).is_some(),
            "the newest is kept"
        );
    }
}
