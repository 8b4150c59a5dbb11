//! The archive download of `ferry pull --server` (a server without the registry API): one
//! file under the cache directory, resumed with `Range` + `If-Range: ETAG` after a dropped
//! connection (bounded retries with backoff) and after a killed run (the partial and its
//! strong ETag stay on disk; a changed ETag starts over).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use reqwest::StatusCode;
use url::Url;

use crate::exit;

/// One resumable archive download into `partial`, its strong ETag kept in `etag` so a later
/// run (after a kill) resumes only if the server still serves the same bytes.
pub(crate) struct Download<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) url: &'a Url,
    pub(crate) token: Option<&'a str>,
    pub(crate) partial: &'a Path,
    pub(crate) etag: &'a Path,
    pub(crate) quiet: bool,
    pub(crate) timeout: Duration,
    pub(crate) name: String,
    /// Bytes of the download on a terminal (hidden otherwise, and with -q).
    pub(crate) bar: indicatif::ProgressBar,
}

/// Attempts in a row without a new byte before the download gives up.
const MAX_ATTEMPTS: u32 = 8;

/// Why one attempt ended.
enum Attempt {
    Done,
    /// Try again (after a wait unless `now`): a dropped connection, a 5xx, a restart.
    Again {
        why: String,
        now: bool,
    },
}

impl Download<'_> {
    pub(crate) async fn run(&self) -> anyhow::Result<()> {
        let mut failures = 0u32;
        let mut furthest = self.have();
        if furthest > 0 && !self.quiet {
            self.say(&format!(
                "resuming the download of {} at byte {furthest}",
                self.name
            ));
        } else if !self.quiet {
            self.say(&format!(
                "downloading {} from {}",
                self.name,
                self.url.origin().ascii_serialization()
            ));
        }
        loop {
            match self.attempt().await? {
                Attempt::Done => {
                    if !self.quiet {
                        self.say(&format!("downloaded {} ({} bytes)", self.name, self.have()));
                    }
                    return Ok(());
                }
                Attempt::Again { why, now } => {
                    let have = self.have();
                    if have > furthest {
                        failures = 0;
                        furthest = have;
                    } else {
                        failures += 1;
                    }
                    if failures >= MAX_ATTEMPTS {
                        return Err(exit::UserError {
                            message: format!(
                                "downloading {} from the server failed {MAX_ATTEMPTS} times in a row without progress: {why}",
                                self.name
                            ),
                            hint: Some("run the same command again: the download resumes where it stopped".into()),
                            code: exit::NETWORK,
                        }
                        .into());
                    }
                    let wait = if now {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(200 * (1 << failures.min(5)))
                    };
                    if !self.quiet {
                        self.say(&format!("retrying the download at byte {have}: {why}"));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A line above the bar.
    fn say(&self, text: &str) {
        self.bar.suspend(|| crate::progress::notice(text));
    }

    /// Bytes held from an earlier attempt (zero without a recorded ETag: they cannot be
    /// trusted to belong to what the server serves now).
    fn have(&self) -> u64 {
        if !self.etag.exists() {
            return 0;
        }
        std::fs::metadata(self.partial)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn restart(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.etag);
        match std::fs::remove_file(self.partial) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.partial.display())),
        }
    }

    async fn attempt(&self) -> anyhow::Result<Attempt> {
        let have = self.have();
        let mut req = self.http.get(self.url.clone());
        if let Some(t) = self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let etag = std::fs::read_to_string(self.etag).ok();
        if let (true, Some(tag)) = (have > 0, etag.as_deref()) {
            req = req
                .header(RANGE, format!("bytes={have}-"))
                .header(IF_RANGE, tag.trim());
        }
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => {
                return Ok(Attempt::Again {
                    why: "no answer in time".into(),
                    now: false,
                })
            }
            Ok(Err(e)) if e.is_connect() && have == 0 => {
                return Err(super::pull_server::unreachable_server(self.url, &e));
            }
            Ok(Err(e)) => {
                return Ok(Attempt::Again {
                    why: e.to_string(),
                    now: false,
                })
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let (start, total) = match status {
            StatusCode::OK => {
                // The whole archive: either asked so, or the ETag changed (If-Range).
                self.restart()?;
                let tag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|t| !t.starts_with("W/"))
                    .map(str::to_string);
                if let Some(t) = &tag {
                    write_atomic(self.etag, t.as_bytes())?;
                }
                if have > 0 && !self.quiet {
                    self.say(&format!(
                        "the server's archive of {} changed; downloading it from the start",
                        self.name
                    ));
                }
                (0, resp.content_length())
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((s, total)) if s == have => (s, Some(total)),
                    _ => {
                        self.restart()?;
                        return Ok(Attempt::Again {
                            why: "the server answered another range than asked; starting over"
                                .into(),
                            now: true,
                        });
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                self.restart()?;
                return Ok(Attempt::Again {
                    why: "the server refused the range; starting over".into(),
                    now: true,
                });
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Ok(Attempt::Again {
                    why: format!("the server answered {s}"),
                    now: false,
                });
            }
            s => {
                let body = resp.text().await.unwrap_or_default();
                let text = body.chars().take(300).collect::<String>();
                let code = match s {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::AUTH,
                    StatusCode::NOT_FOUND => exit::NOT_FOUND,
                    _ => exit::GENERAL,
                };
                let hint = matches!(code, exit::AUTH).then(|| {
                    "give the server's token with --server-token or FERRY_SERVER_TOKEN".to_string()
                });
                return Err(exit::UserError {
                    message: format!("the server answered {s} for {}: {}", self.name, text.trim()),
                    hint,
                    code,
                }
                .into());
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.partial)
            .with_context(|| format!("opening {}", self.partial.display()))?;
        if let Some(t) = total {
            self.bar.set_length(t);
        }
        self.bar.set_position(start);
        let mut at = start;
        let mut resp = resp;
        loop {
            match tokio::time::timeout(self.timeout, resp.chunk()).await {
                Err(_) => {
                    return Ok(Attempt::Again {
                        why: format!("no byte in {}s", self.timeout.as_secs()),
                        now: false,
                    })
                }
                Ok(Err(e)) => {
                    file.flush().ok();
                    return Ok(Attempt::Again {
                        why: format!("the connection dropped at byte {at}: {e}"),
                        now: false,
                    });
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    file.write_all(&chunk)
                        .with_context(|| format!("writing {}", self.partial.display()))?;
                    at += chunk.len() as u64;
                    self.bar.set_position(at);
                }
            }
        }
        file.sync_all().ok();
        match total {
            Some(t) if at == t => Ok(Attempt::Done),
            None => Ok(Attempt::Done),
            Some(t) => Ok(Attempt::Again {
                why: format!("the body ended at byte {at} of {t}"),
                now: false,
            }),
        }
    }
}

/// The download's bar: bytes, rate and ETA on a terminal, nothing elsewhere or with -q.
pub(crate) fn download_bar(quiet: bool, name: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(crate::sanitize::clean(name).to_string());
    bar
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()?))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
