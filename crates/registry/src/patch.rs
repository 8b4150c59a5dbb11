//! The chunked part of an upload: the body sent in `PATCH` requests of `chunk_size` bytes
//! from the session's offset, each continuing at the `Location` the previous answer gave.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::Method;

use crate::api::ProgressFn;
use crate::body::ByteStream;
use crate::chunks::{lock, ChunkStream, Cursor};
use crate::client::Client;
use crate::error::{redact, RegistryError};
use crate::refusal::{explain, not_redirected, Write};
use crate::upload::{header_value, open_at, range_end, Run, Session};

impl Client {
    /// PATCH the body from the session's offset to its end, `chunk_size` bytes a request.
    /// One stream serves all chunks (a body compressed on the way is compressed once); it is
    /// reopened only after a failure, at the offset the registry reports.
    pub(crate) async fn send_chunks(
        &self,
        run: &mut Run<'_>,
        s: &mut Session,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let size = run.body.size();
        let cursor = Arc::new(Mutex::new(Cursor {
            stream: open_at(run.body, s.offset, &s.location)?,
            leftover: Bytes::new(),
            pos: s.offset,
            eof: false,
            generation: 0,
        }));
        loop {
            let start = s.offset;
            let len = match size {
                Some(size) if start >= size => return Ok(()),
                Some(size) => Some((size - start).min(run.chunk_size)),
                None => {
                    // Unknown length: the chunk is sent only when there is something left.
                    let c = cursor.clone();
                    futures_util::future::poll_fn(|cx| lock(&c).poll_fill(cx))
                        .await
                        .map_err(|source| RegistryError::Source {
                            url: redact(&s.location),
                            source,
                        })?;
                    if lock(&cursor).is_empty() {
                        return Ok(());
                    }
                    None
                }
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(len) = len {
                headers.insert(CONTENT_LENGTH, header_value(&len.to_string()));
                headers.insert(
                    CONTENT_RANGE,
                    header_value(&format!("{start}-{}", start + len - 1)),
                );
            }
            let limit = len.unwrap_or(run.chunk_size);
            let body = run.body;
            let location = s.location.clone();
            let mut first = true;
            let c = cursor.clone();
            let mut open = move || {
                // A second send of the same chunk (after a 401) starts it again.
                if !first {
                    let mut cur = lock(&c);
                    // The first send's body may still be polled: cut it off before the
                    // stream it reads from is replaced.
                    cur.generation += 1;
                    cur.stream = open_at(body, start, &location)?;
                    cur.leftover = Bytes::new();
                    cur.pos = start;
                    cur.eof = false;
                }
                first = false;
                Ok(Box::pin(ChunkStream::next(&c, limit)) as ByteStream)
            };
            let resp = self
                .send_tracked(
                    run,
                    Method::PATCH,
                    s.location.as_str(),
                    headers,
                    &mut open,
                    start,
                    progress,
                )
                .await
                .and_then(not_redirected)
                .map_err(|e| explain(e, run.host, run.repo, Write::Blob(None)))?;
            let pos = lock(&cursor).pos;
            // A chunk carried at least one byte, so the session holds at least one: `0-0`
            // here can only mean one byte, not the empty session it also stands for.
            let held = range_end(resp.headers()).map(|h| if h == 0 && pos > 0 { 1 } else { h });
            s.location = self.location(run.host, &resp).await?;
            match held {
                Some(held) if held != pos => {
                    // The registry kept other than what was sent: go on from what it holds.
                    tracing::debug!("the registry holds {held} bytes after a chunk to {pos}");
                    let mut cur = lock(&cursor);
                    cur.stream = open_at(run.body, held, &s.location)?;
                    cur.leftover = Bytes::new();
                    cur.pos = held;
                    cur.eof = false;
                    s.offset = held;
                }
                _ => s.offset = pos,
            }
            progress(s.offset);
        }
    }
}
