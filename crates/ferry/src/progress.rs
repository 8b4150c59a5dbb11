//! Progress output: a bar per blob on a terminal, plain lines otherwise, nothing with --quiet.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use ferry_copy::{Event, Progress};

enum Mode {
    Quiet,
    Lines,
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
}

pub struct Reporter {
    mode: Mode,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Lines
        };
        Reporter { mode }
    }

    /// A line of its own (above the bars on a terminal).
    pub fn line(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => crate::stdio::say!("{text}"),
            Mode::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
        }
    }

    pub fn finish_downloads(&self) {
        if let Mode::Bars { multi, .. } = &self.mode {
            let _ = multi.clear();
        }
    }

    fn bar(&self, key: &str, size: u64) -> Option<ProgressBar> {
        let Mode::Bars { multi, bars } = &self.mode else {
            return None;
        };
        let mut bars = bars.lock().ok()?;
        Some(
            bars.entry(key.to_string())
                .or_insert_with(|| {
                    let pb = multi.add(ProgressBar::new(size));
                    let style = ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    pb.set_style(style);
                    pb.set_prefix(key.to_string());
                    pb
                })
                .clone(),
        )
    }
}

impl Progress for Reporter {
    fn event(&self, event: Event) {
        match event {
            Event::Resolved {
                reference,
                digest,
                platform,
                blobs,
                bytes,
            } => {
                let p = platform.map(|p| format!(" ({p})")).unwrap_or_default();
                self.line(&format!(
                    "{reference} → {}:{}{p}: {blobs} blobs, {}",
                    digest.algorithm().as_str(),
                    digest.short(),
                    HumanBytes(bytes)
                ));
            }
            Event::BlobCached { digest, size } => match &self.mode {
                Mode::Lines => {
                    self.line(&format!("{} cached ({})", digest.short(), HumanBytes(size)))
                }
                Mode::Bars { .. } => {
                    if let Some(b) = self.bar(digest.short(), size) {
                        b.set_style(done_style("cached"));
                        b.finish();
                    }
                }
                Mode::Quiet => {}
            },
            Event::BlobStarted { digest, size, held } => match &self.mode {
                Mode::Lines => {
                    let resume = if held > 0 {
                        format!(", resuming at {}", HumanBytes(held))
                    } else {
                        String::new()
                    };
                    self.line(&format!(
                        "{} downloading {}{resume}",
                        digest.short(),
                        HumanBytes(size)
                    ));
                }
                Mode::Bars { .. } => {
                    if let Some(b) = self.bar(digest.short(), size) {
                        b.set_position(held);
                    }
                }
                Mode::Quiet => {}
            },
            Event::BlobProgress { digest, held } => {
                if let Some(b) = self.bar(digest.short(), 0) {
                    b.set_position(held);
                }
            }
            Event::BlobDone { digest, size } => match &self.mode {
                Mode::Lines => {
                    self.line(&format!("{} done ({})", digest.short(), HumanBytes(size)))
                }
                Mode::Bars { .. } => {
                    if let Some(b) = self.bar(digest.short(), size) {
                        b.set_style(done_style("done"));
                        b.finish();
                    }
                }
                Mode::Quiet => {}
            },
            Event::Warning { message } => self.line(&format!("warning: {message}")),
        }
    }
}

/// The look of a finished bar: no bar, just what happened.
fn done_style(word: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix}} {word} {{total_bytes}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}
