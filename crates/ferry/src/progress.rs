//! Progress output: bars on a terminal, plain lines otherwise, only warnings with --quiet.
//!
//! On a terminal the live area at the bottom holds a total line (bytes, rate, ETA) and one
//! bar per blob downloading; everything else (resolved images, finished blobs, warnings) is
//! printed above it and stays. Live lines are cut to the terminal's width, since a wrapped
//! line is ugly and throws the redraw off. Once the downloads finish, or [`abandon`] is called
//! for an error or a signal, nothing is drawn any more, so later lines come out below, in
//! order. All text goes through [`crate::sanitize::clean`]: much of it comes from registries.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use ferry_copy::{Event, Progress};
use ferry_core::Digest;

use crate::sanitize::clean;

/// The live reporter, for [`abandon`].
static CURRENT: Mutex<Option<Weak<Shared>>> = Mutex::new(None);

fn live() -> Option<Arc<Shared>> {
    CURRENT
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(Weak::upgrade))
}

/// Set by [`abandon`]: notices made without a live reporter are dropped too.
static ABANDONED: AtomicBool = AtomicBool::new(false);

/// Silence the live reporter for good (see [`Reporter::abandon`]). The error and signal
/// paths call this before they print, so their message is the last thing on stderr.
pub fn abandon() {
    ABANDONED.store(true, Ordering::SeqCst);
    if let Some(shared) = live() {
        shared.abandon();
    }
}

/// A message from below the engine (the registry client's retry notices): printed like
/// [`Reporter::line`] by the live reporter, above its bars, or sanitised on stderr when no
/// reporter exists yet (the first contact with a registry happens before one is made).
pub fn notice(text: &str) {
    match live() {
        Some(shared) => shared.line(text),
        None if ABANDONED.load(Ordering::SeqCst) => {}
        None => crate::stdio::say!("{}", clean(text)),
    }
}

/// A warning from below the engine (a mirror that failed): printed as [`notice`] is, with
/// "warning: " before it, and with --quiet too.
pub fn warning(text: &str) {
    let text = format!("warning: {text}");
    match live() {
        Some(shared) => {
            let st = shared.lock();
            shared.say(&st, &text, false);
        }
        None if ABANDONED.load(Ordering::SeqCst) => {}
        None => crate::stdio::say!("{}", clean(&text)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Quiet,
    Lines,
    Bars,
}

/// Renders copy [`Event`]s on stderr. Thread-safe; one per command.
pub struct Reporter {
    shared: Arc<Shared>,
}

/// Where plain lines go: stderr, or a test's buffer.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

struct Shared {
    mode: Mode,
    words: Mutex<&'static Words>,
    sink: Sink,
    /// The live area (bars mode only).
    multi: Option<MultiProgress>,
    /// The terminal's echo of control characters is off while bars are drawn.
    hushed: bool,
    state: Mutex<State>,
}

/// How lines name what happens to a blob: pulls download into the cache, pushes upload
/// to a registry that may hold a blob already.
struct Words {
    moving: &'static str,
    held: &'static str,
    moved: &'static str,
    none_moved: &'static str,
    from_held: &'static str,
}

const DOWNLOAD: Words = Words {
    moving: "downloading",
    held: "cached",
    moved: "downloaded",
    none_moved: "nothing to download",
    from_held: "came from the cache",
};

const UPLOAD: Words = Words {
    moving: "uploading",
    held: "exists",
    moved: "uploaded",
    none_moved: "nothing to upload",
    from_held: "the registry held already",
};

#[derive(Default)]
struct State {
    /// Familiar names of the images, in the order they were resolved.
    images: Vec<String>,
    /// How many images the command names: labels are needed from the first blob on when
    /// there are several, not only once the second image is resolved.
    expected: usize,
    blobs: HashMap<Digest, Blob>,
    /// The total line, added when the first image is resolved.
    total: Option<ProgressBar>,
    /// Bytes this run has to download (cached and already-held bytes are not counted, so the
    /// rate and ETA are honest), and how many of them arrived.
    todo: u64,
    got: u64,
    settled: usize,
    cached: usize,
    first_download: Option<Instant>,
    /// Drawing has ended: the downloads finished, or the reporter was abandoned.
    stopped: bool,
    /// Abandoned: nothing is printed any more, not even plain lines.
    silenced: bool,
}

struct Blob {
    size: u64,
    /// The first image (index into `images`) that lists it, once known.
    image: Option<usize>,
    /// Bytes held when the download started (a resume): not this run's work.
    base: u64,
    held: u64,
    phase: Phase,
    bar: Option<ProgressBar>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Downloading,
    Settled,
}

impl Blob {
    fn counted(&self) -> u64 {
        self.held.saturating_sub(self.base)
    }
}

impl Reporter {
    /// Bars when stderr is a terminal, plain lines when it is not; with `quiet`, nothing but
    /// warnings.
    pub fn new(quiet: bool) -> Reporter {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Reporter::with_sink(mode, Box::new(plain))
    }

    /// Like [`Reporter::new`], for uploads: "uploading", and "exists" for a blob the
    /// destination held already.
    pub fn for_upload(quiet: bool) -> Reporter {
        let r = Reporter::new(quiet);
        // Nothing has been reported yet: the words can still change.
        if let Ok(mut st) = r.shared.words.lock() {
            *st = &UPLOAD;
        }
        r
    }

    fn with_sink(mode: Mode, sink: Sink) -> Reporter {
        let multi = (mode == Mode::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let hushed = multi.is_some() && hush_control_echo();
        let shared = Arc::new(Shared {
            mode,
            words: Mutex::new(&DOWNLOAD),
            sink,
            multi,
            hushed,
            state: Mutex::new(State::default()),
        });
        if let Ok(mut c) = CURRENT.lock() {
            *c = Some(Arc::downgrade(&shared));
        }
        Reporter { shared }
    }

    /// A message line (above the bars while they are drawn; not with --quiet).
    pub fn line(&self, text: &str) {
        self.shared.line(text);
    }

    /// The downloads are over: clear the live area and print the totals. Lines printed
    /// afterwards come out below, in order.
    pub fn finish_downloads(&self) {
        let mut st = self.shared.lock();
        if st.stopped {
            return;
        }
        self.shared.stop(&mut st, true);
        if self.shared.mode != Mode::Quiet {
            if let Some(s) = summary(&st, self.shared.words()) {
                self.shared.say(&st, &s, false);
            }
        }
    }

    /// The command names `n` images: label each blob with its image when there are several.
    pub fn expect_images(&self, n: usize) {
        self.shared.lock().expected = n;
    }

    /// Stop drawing at once and for good, leaving the last frame as it is (clearing it trusts
    /// the cursor to be where indicatif left it, which is not sure after a signal), and print
    /// nothing more: no line, warning or notice. Call before printing an interruption or
    /// error message, so nothing lands on or below it (downloads still winding down would
    /// otherwise report "done" under it).
    pub fn abandon(&self) {
        self.shared.abandon();
    }
}

impl Shared {
    fn words(&self) -> &'static Words {
        self.words.lock().map(|w| *w).unwrap_or(&DOWNLOAD)
    }

    fn line(&self, text: &str) {
        if self.mode != Mode::Quiet {
            let st = self.lock();
            self.say(&st, text, false);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not silence the error report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn abandon(&self) {
        let mut st = self.lock();
        st.silenced = true;
        if !st.stopped {
            self.stop(&mut st, false);
        }
    }

    fn stop(&self, st: &mut State, clear: bool) {
        st.stopped = true;
        if let Some(t) = &st.total {
            t.disable_steady_tick();
        }
        if let Some(m) = &self.multi {
            if clear {
                let _ = m.clear();
            }
            m.set_draw_target(ProgressDrawTarget::hidden());
        }
        // Only now: an echo before drawing stopped could still throw a frame off.
        if self.hushed {
            restore_control_echo();
        }
    }

    fn bars(&self, st: &State) -> Option<&MultiProgress> {
        self.multi.as_ref().filter(|_| !st.stopped)
    }

    /// Print `text` sanitised: above the bars while they are drawn (cut to the width when
    /// `fit`, for progress lines; messages are never cut), else as a plain line.
    fn say(&self, st: &State, text: &str, fit: bool) {
        if st.silenced {
            return;
        }
        let text = clean(text);
        match self.bars(st) {
            Some(m) if fit => {
                let w = term_width().saturating_sub(1);
                let _ = m.println(console::truncate_str(&text, w, "…"));
            }
            Some(m) => {
                let _ = m.println(text);
            }
            None => (self.sink)(&text),
        }
    }

    /// What a blob is called on screen: with its image's number and name when there are
    /// several, the name shortened in the middle on a terminal so the label fits in `room`.
    fn label(&self, st: &State, digest: &Digest, room: Option<usize>) -> String {
        let image = st.blobs.get(digest).and_then(|b| b.image);
        match image {
            Some(i) if st.images.len().max(st.expected) > 1 => {
                let (number, short) = (format!("[{}] ", i + 1), format!(" {}", digest.short()));
                let name = match room {
                    Some(r) => cut_middle(&st.images[i], r.saturating_sub(number.len() + 13)),
                    None => st.images[i].clone(),
                };
                format!("{number}{name}{short}")
            }
            _ => digest.short().to_string(),
        }
    }

    /// Room for a label on a line that has `rest` columns of other text.
    fn room(&self, rest: usize) -> Option<usize> {
        (self.mode == Mode::Bars).then(|| term_width().saturating_sub(1 + rest))
    }

    fn event(&self, event: Event) {
        if self.mode == Mode::Quiet {
            if let Event::Warning { message } = event {
                let st = self.lock();
                self.say(&st, &format!("warning: {message}"), false);
            }
            return;
        }
        let mut st = self.lock();
        match event {
            Event::Resolved {
                reference,
                digest,
                platform,
                blobs,
                bytes,
                contents,
            } => {
                let p = platform.map(|p| format!(" ({p})")).unwrap_or_default();
                let rest = format!(
                    " → {}:{}{p}: {blobs} blobs, {}",
                    digest.algorithm().as_str(),
                    digest.short(),
                    HumanBytes(bytes)
                );
                // On a terminal the name gives way first, keeping its tag and the digest.
                let name = match self.room(rest.chars().count()) {
                    Some(room) => cut_middle(&reference, room),
                    None => reference.clone(),
                };
                self.say(&st, &format!("{name}{rest}"), true);
                self.resolved(&mut st, reference, contents);
            }
            Event::BlobStarted { digest, size, held } => {
                self.started(&mut st, &digest, size, held);
                if self.mode == Mode::Lines {
                    let resume = if held > 0 {
                        format!(", resuming at {}", HumanBytes(held))
                    } else {
                        String::new()
                    };
                    let line = format!(
                        "{} {} {}{resume}",
                        self.label(&st, &digest, None),
                        self.words().moving,
                        HumanBytes(size)
                    );
                    self.say(&st, &line, true);
                }
            }
            Event::BlobProgress { digest, held } => {
                if let Some(b) = st.blobs.get_mut(&digest) {
                    if b.phase == Phase::Downloading {
                        let before = b.counted();
                        b.held = held;
                        let after = b.counted();
                        if let Some(bar) = &b.bar {
                            bar.set_position(held);
                        }
                        st.got = st.got.saturating_add(after).saturating_sub(before);
                        self.update_total(&st);
                    }
                }
            }
            Event::BlobDone { digest, size } => {
                if self.settle(&mut st, &digest, size, false) {
                    let label = self.label(&st, &digest, self.room(DONE_COLUMNS));
                    let line = format!("{label} done ({})", HumanBytes(size));
                    self.say(&st, &line, true);
                }
            }
            Event::BlobCached { digest, size } => {
                if self.settle(&mut st, &digest, size, true) {
                    let label = self.label(&st, &digest, self.room(DONE_COLUMNS));
                    let line = format!("{label} {} ({})", self.words().held, HumanBytes(size));
                    self.say(&st, &line, true);
                }
            }
            Event::Warning { message } => self.say(&st, &format!("warning: {message}"), false),
            Event::BlobMounted { digest, size } => {
                if self.settle(&mut st, &digest, size, true) {
                    let label = self.label(&st, &digest, self.room(DONE_COLUMNS));
                    let line = format!("{label} mounted ({})", HumanBytes(size));
                    self.say(&st, &line, true);
                }
            }
        }
    }

    /// Count a blob that will be needed (once, whichever image lists it).
    fn known<'a>(st: &'a mut State, digest: &Digest, size: u64) -> &'a mut Blob {
        if !st.blobs.contains_key(digest) {
            st.todo = st.todo.saturating_add(size);
        }
        st.blobs.entry(digest.clone()).or_insert(Blob {
            size,
            image: None,
            base: 0,
            held: 0,
            phase: Phase::Waiting,
            bar: None,
        })
    }

    fn resolved(&self, st: &mut State, reference: String, contents: Vec<(Digest, u64)>) {
        let index = st.images.len();
        st.images.push(reference);
        for (d, size) in &contents {
            let b = Self::known(st, d, *size);
            b.image.get_or_insert(index);
        }
        if let (Some(m), true) = (self.bars(st), st.total.is_none()) {
            let total = quiet_bar(st.todo, total_style(term_width()));
            total.set_message("total");
            // On top: with more downloads than the terminal has rows, indicatif drops the
            // bars that do not fit, and the total must not be one of them.
            let total = m.insert(0, total);
            // Ticks keep the rate and ETA honest while no bytes arrive.
            total.enable_steady_tick(Duration::from_millis(250));
            st.total = Some(total);
        }
        // Bars made before this image was known (its config, fetched while resolving) now
        // get their image's name.
        let live: Vec<(Digest, ProgressBar)> = st
            .blobs
            .iter()
            .filter_map(|(d, b)| b.bar.clone().map(|bar| (d.clone(), bar)))
            .collect();
        let room = self.room(blob_layout(term_width()).1);
        for (d, bar) in live {
            bar.set_message(clean(&self.label(st, &d, room)).into_owned());
        }
        self.update_total(st);
    }

    fn started(&self, st: &mut State, digest: &Digest, size: u64, held: u64) {
        st.first_download.get_or_insert_with(Instant::now);
        let b = Self::known(st, digest, size);
        if b.phase != Phase::Waiting {
            return;
        }
        b.phase = Phase::Downloading;
        b.base = held.min(b.size);
        b.held = held;
        let base = b.base;
        st.todo = st.todo.saturating_sub(base);
        if let Some(m) = self.bars(st) {
            let (style, rest) = blob_layout(term_width());
            let bar = quiet_bar(size, style);
            bar.set_position(held);
            bar.set_message(clean(&self.label(st, digest, self.room(rest))).into_owned());
            let bar = m.add(bar);
            if let Some(b) = st.blobs.get_mut(digest) {
                b.bar = Some(bar);
            }
        }
        self.update_total(st);
    }

    /// Mark a blob done or found in the cache; false if it already was (a config fetched
    /// while resolving is reported again as cached when the downloads start).
    fn settle(&self, st: &mut State, digest: &Digest, size: u64, cached: bool) -> bool {
        let b = Self::known(st, digest, size);
        let (phase, before) = (b.phase, b.counted());
        if phase == Phase::Settled {
            return false;
        }
        b.phase = Phase::Settled;
        let bar = b.bar.take();
        match phase {
            Phase::Waiting => {
                // Nothing of it is downloaded in this run.
                st.todo = st.todo.saturating_sub(size);
            }
            _ => {
                b.held = b.size;
                let after = b.counted();
                st.got = st.got.saturating_add(after).saturating_sub(before);
            }
        }
        st.settled += 1;
        if cached {
            st.cached += 1;
        }
        if let (Some(bar), Some(m)) = (bar, &self.multi) {
            m.remove(&bar);
        }
        self.update_total(st);
        true
    }

    fn update_total(&self, st: &State) {
        if let (Some(t), false) = (&st.total, st.stopped) {
            t.set_length(st.todo);
            t.set_position(st.got.min(st.todo));
            t.set_message(format!("total {}/{} blobs", st.settled, st.blobs.len()));
        }
    }
}

impl Progress for Reporter {
    fn event(&self, event: Event) {
        self.shared.event(event);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // Bars left behind by an early return must not redraw over the error message.
        self.abandon();
    }
}

/// What a download achieved, for the line after the bars.
fn summary(st: &State, words: &Words) -> Option<String> {
    let n = st.blobs.len();
    if n == 0 {
        return None;
    }
    if st.cached == n {
        let s = if n == 1 { "" } else { "s" };
        return Some(format!(
            "{}: {n} blob{s} {}",
            words.none_moved, words.from_held
        ));
    }
    let secs = st
        .first_download
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or_default()
        .max(0.001);
    let rate = (st.got as f64 / secs) as u64;
    Some(format!(
        "{} {} in {secs:.1} s ({}/s); {} of {n} blobs {}",
        words.moved,
        HumanBytes(st.got),
        HumanBytes(rate),
        st.cached,
        words.from_held
    ))
}

/// Ctrl-C on a terminal is echoed as `^C` the moment it is typed; at the end of a bar (the
/// last column) that echo wraps, and every frame drawn before drawing stops lands one row
/// off, leaving a stale line. So while bars are drawn, control characters are not echoed
/// (`stty -echoctl`); `stop` turns it back on. Only in the foreground: a background job that
/// changes the terminal is stopped with SIGTTOU. True if echo was turned off.
fn hush_control_echo() -> bool {
    use rustix::termios::{tcgetattr, tcgetpgrp, tcsetattr, LocalModes, OptionalActions};
    let err = std::io::stderr();
    if tcgetpgrp(&err).ok() != Some(rustix::process::getpgrp()) {
        return false;
    }
    let Ok(mut t) = tcgetattr(&err) else {
        return false;
    };
    if !t.local_modes.contains(LocalModes::ECHOCTL) {
        return false;
    }
    t.local_modes.remove(LocalModes::ECHOCTL);
    tcsetattr(&err, OptionalActions::Now, &t).is_ok()
}

/// Undo [`hush_control_echo`], touching nothing else of the terminal's settings.
fn restore_control_echo() {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let err = std::io::stderr();
    if let Ok(mut t) = tcgetattr(&err) {
        t.local_modes.insert(LocalModes::ECHOCTL);
        let _ = tcsetattr(&err, OptionalActions::Now, &t);
    }
}

/// A line straight to stderr; a closed stderr is ignored rather than a panic.
fn plain(text: &str) {
    crate::stdio::say!("{text}");
}

fn term_width() -> usize {
    usize::from(console::Term::stderr().size().1)
}

// The layouts below end in a space so that a line never reaches the last column: with the
// label as the one elastic part (`wide_msg`, cut to fit), nothing wraps.

/// Columns of " done (1023.99 KiB)" after a label.
const DONE_COLUMNS: usize = 20;

/// A blob's bar for a terminal `width` columns wide, and the columns it takes besides the
/// label.
fn blob_layout(width: usize) -> (ProgressStyle, usize) {
    let (template, rest) = if width >= 60 {
        ("{wide_msg} [{bar:20}] {bytes:>11}/{total_bytes:<11} ", 48)
    } else if width >= 30 {
        ("{wide_msg} {percent:>3}% ", 6)
    } else {
        ("{wide_msg} ", 1)
    };
    (style(template), rest)
}

/// `text` cut to `room` columns (counted as chars: references are ASCII) by dropping its
/// middle, where names differ least.
fn cut_middle(text: &str, room: usize) -> String {
    let n = text.chars().count();
    if n <= room || room < 5 {
        return text.to_string();
    }
    let head = (room - 1) / 2;
    let tail = room - 1 - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(n - tail));
    out
}

/// The total line for a terminal `width` columns wide.
fn total_style(width: usize) -> ProgressStyle {
    let template = if width >= 60 {
        "{wide_msg} {bytes:>11}/{total_bytes:<11} {bytes_per_sec:>13} ETA {eta:<4} "
    } else if width >= 30 {
        "{wide_msg} {percent:>3}% ETA {eta:<4} "
    } else {
        "{wide_msg} "
    };
    style(template)
}

/// A bar that draws nothing until it joins the live area: a new bar draws straight to
/// stderr, past the live area's bookkeeping, leaving stray lines behind.
fn quiet_bar(len: u64, style: ProgressStyle) -> ProgressBar {
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden()).with_style(style)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(mode: Mode) -> (Reporter, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let sink: Sink = Box::new(move |t| l.lock().unwrap().push(t.to_string()));
        (Reporter::with_sink(mode, sink), lines)
    }

    fn resolved(name: &str, contents: &[(&Digest, u64)]) -> Event {
        Event::Resolved {
            reference: name.into(),
            digest: Digest::sha256_of(name.as_bytes()),
            platform: Some("linux/amd64".into()),
            blobs: contents.len(),
            bytes: contents.iter().map(|c| c.1).sum(),
            contents: contents.iter().map(|(d, n)| ((*d).clone(), *n)).collect(),
        }
    }

    #[test]
    fn quiet_prints_warnings_and_nothing_else() {
        let (r, lines) = reporter(Mode::Quiet);
        let d = Digest::sha256_of(b"layer");
        r.event(resolved("a:1", &[(&d, 10)]));
        r.event(Event::BlobStarted {
            digest: d.clone(),
            size: 10,
            held: 0,
        });
        r.event(Event::BlobDone {
            digest: d.clone(),
            size: 10,
        });
        r.event(Event::Warning {
            message: "arm64 only\x1b[2J".into(),
        });
        r.finish_downloads();
        r.line("wrote a.tar");
        assert_eq!(*lines.lock().unwrap(), ["warning: arm64 only\\x1b[2J"]);
    }

    #[test]
    fn lines_name_the_image_of_each_blob_when_there_are_several() {
        let (r, lines) = reporter(Mode::Lines);
        let (shared, own) = (Digest::sha256_of(b"base"), Digest::sha256_of(b"own"));
        r.event(resolved("a:1", &[(&shared, 5)]));
        r.event(resolved("b:1", &[(&shared, 5), (&own, 7)]));
        for d in [&shared, &own] {
            r.event(Event::BlobStarted {
                digest: d.clone(),
                size: 5,
                held: 0,
            });
        }
        let lines = lines.lock().unwrap();
        // A blob both images hold is shown under the first.
        assert_eq!(
            lines[2],
            format!("[1] a:1 {} downloading 5 B", shared.short())
        );
        assert_eq!(lines[3], format!("[2] b:1 {} downloading 5 B", own.short()));
    }

    #[test]
    fn one_image_needs_no_label() {
        let (r, lines) = reporter(Mode::Lines);
        let d = Digest::sha256_of(b"x");
        r.event(resolved("a:1", &[(&d, 5)]));
        r.event(Event::BlobCached {
            digest: d.clone(),
            size: 5,
        });
        assert_eq!(
            lines.lock().unwrap()[1],
            format!("{} cached (5 B)", d.short())
        );
    }

    #[test]
    fn every_line_is_sanitised() {
        let (r, lines) = reporter(Mode::Lines);
        r.event(Event::Resolved {
            reference: "a:1".into(),
            digest: Digest::sha256_of(b"m"),
            platform: Some("linux/amd64/\x1b]0;title\x07".into()),
            blobs: 0,
            bytes: 0,
            contents: Vec::new(),
        });
        r.event(Event::Warning {
            message: "\u{202e}txt.exe\nforged".into(),
        });
        r.line("wrote \x1b[31mred");
        let lines = lines.lock().unwrap();
        assert!(lines[0].ends_with("(linux/amd64/\\x1b]0;title\\x07): 0 blobs, 0 B"));
        assert_eq!(lines[1], "warning: \\u{202e}txt.exe\\nforged");
        assert_eq!(lines[2], "wrote \\x1b[31mred");
    }

    #[test]
    fn the_summary_counts_this_run_and_the_cache() {
        let (r, lines) = reporter(Mode::Lines);
        let (a, b, c) = (
            Digest::sha256_of(b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"c"),
        );
        r.event(resolved("x:1", &[(&a, 100), (&b, 50), (&c, 30)]));
        r.event(Event::BlobCached {
            digest: a.clone(),
            size: 100,
        });
        // A resumed download: only the 20 bytes still missing are this run's.
        r.event(Event::BlobStarted {
            digest: b.clone(),
            size: 50,
            held: 30,
        });
        r.event(Event::BlobDone {
            digest: b.clone(),
            size: 50,
        });
        r.event(Event::BlobStarted {
            digest: c.clone(),
            size: 30,
            held: 0,
        });
        r.event(Event::BlobProgress {
            digest: c.clone(),
            held: 10,
        });
        r.event(Event::BlobDone {
            digest: c.clone(),
            size: 30,
        });
        // Reported again as cached once the downloads start: counted once.
        r.event(Event::BlobCached {
            digest: c.clone(),
            size: 30,
        });
        r.finish_downloads();
        r.line("wrote x.tar");
        let lines = lines.lock().unwrap();
        let n = lines.len();
        assert!(
            lines[n - 2].starts_with("downloaded 50 B in ")
                && lines[n - 2].ends_with("; 1 of 3 blobs came from the cache"),
            "{lines:?}"
        );
        assert_eq!(lines[n - 1], "wrote x.tar");
        assert_eq!(lines.iter().filter(|l| l.contains(" cached (")).count(), 1);
    }

    #[test]
    fn a_fully_cached_pull_says_so() {
        let (r, lines) = reporter(Mode::Lines);
        let d = Digest::sha256_of(b"a");
        r.event(resolved("x:1", &[(&d, 100)]));
        r.event(Event::BlobCached {
            digest: d.clone(),
            size: 100,
        });
        r.finish_downloads();
        assert_eq!(
            lines.lock().unwrap().last().map(String::as_str),
            Some("nothing to download: 1 blob came from the cache")
        );
    }

    #[test]
    fn an_abandoned_reporter_prints_nothing_more() {
        for mode in [Mode::Lines, Mode::Quiet] {
            let (r, lines) = reporter(mode);
            let d = Digest::sha256_of(b"a");
            r.event(resolved("x:1", &[(&d, 100)]));
            r.event(Event::BlobStarted {
                digest: d.clone(),
                size: 100,
                held: 0,
            });
            let before = lines.lock().unwrap().len();
            r.abandon();
            // What downloads winding down after an interruption still report.
            r.event(Event::BlobDone {
                digest: d.clone(),
                size: 100,
            });
            r.event(Event::Warning {
                message: "late".into(),
            });
            r.line("retrying in 1 s");
            r.finish_downloads();
            assert_eq!(lines.lock().unwrap().len(), before, "{mode:?}");
        }
    }

    #[test]
    fn long_names_lose_their_middle() {
        assert_eq!(
            cut_middle("registry.example.com/team/app:1", 15),
            "registr…m/app:1"
        );
        assert_eq!(cut_middle("short:1", 15), "short:1");
        assert_eq!(
            cut_middle("registry.example.com/team/app:1", 15)
                .chars()
                .count(),
            15
        );
    }
}
