//! What ferry shows on a terminal: progress bars that fit the width and say whose they are,
//! a total line, the summary after the bars, nothing drawn over an interruption message; and
//! text from registries never reaching the terminal as control characters.
//!
//! Terminal tests run ferry under `script` (util-linux) on a real pseudo-terminal of 80
//! columns and replay its output on [`Screen`], a small VT100 model, to see what a user sees.

mod common;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_core::Platform;
use ferry_testkit::fake::{FakeAuth, Fault};
use ferry_testkit::image::{random_index, sized_image};
use ferry_testkit::real;

/// The terminal's width, unless a test says otherwise.
const WIDTH: usize = 80;

/// A minimal VT100 screen (with unlimited scrollback): printing with auto-wrap, CR, LF,
/// cursor moves and erases — what indicatif and a tty send.
struct Screen {
    width: usize,
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    /// The last column was written: the next printable character wraps first.
    pending_wrap: bool,
    /// Rows whose last column held text when a character wrapped past it: a line wider than
    /// the terminal. (Every layout of ferry's leaves the last column blank.)
    overflowed: Vec<String>,
}

impl Screen {
    fn new(width: usize) -> Screen {
        Screen {
            width,
            rows: vec![vec![' '; width]],
            row: 0,
            col: 0,
            pending_wrap: false,
            overflowed: Vec::new(),
        }
    }

    fn replay(text: &str, width: usize) -> Screen {
        let mut s = Screen::new(width);
        s.feed(text);
        s
    }

    fn feed(&mut self, text: &str) {
        let mut it = text.chars();
        while let Some(c) = it.next() {
            match c {
                '\x1b' => match it.next() {
                    Some('[') => {
                        let mut params = String::new();
                        let mut last = None;
                        for c in it.by_ref() {
                            if ('\x40'..='\x7e').contains(&c) {
                                last = Some(c);
                                break;
                            }
                            params.push(c);
                        }
                        self.csi(&params, last);
                    }
                    // OSC: up to BEL or ST.
                    Some(']') => {
                        while let Some(c) = it.next() {
                            if c == '\x07' {
                                break;
                            }
                            if c == '\x1b' {
                                it.next();
                                break;
                            }
                        }
                    }
                    _ => {}
                },
                '\r' => {
                    self.col = 0;
                    self.pending_wrap = false;
                }
                '\n' => {
                    self.down(1);
                    self.pending_wrap = false;
                }
                '\x08' => {
                    self.col = self.col.saturating_sub(1);
                    self.pending_wrap = false;
                }
                c if c.is_control() => {}
                c => self.print(c),
            }
        }
    }

    fn print(&mut self, c: char) {
        if self.pending_wrap {
            if self.rows[self.row][self.width - 1] != ' ' {
                self.overflowed.push(self.rows[self.row].iter().collect());
            }
            self.col = 0;
            self.down(1);
            self.pending_wrap = false;
        }
        self.rows[self.row][self.col] = c;
        if self.col + 1 == self.width {
            self.pending_wrap = true;
        } else {
            self.col += 1;
        }
    }

    fn down(&mut self, n: usize) {
        self.row += n;
        while self.rows.len() <= self.row {
            self.rows.push(vec![' '; self.width]);
        }
    }

    fn csi(&mut self, params: &str, last: Option<char>) {
        let arg = |d: usize| {
            params
                .trim_start_matches('?')
                .split(';')
                .next()
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(d)
        };
        if matches!(last, Some('A' | 'B' | 'C' | 'D' | 'G' | 'H' | 'J' | 'K')) {
            self.pending_wrap = false;
        }
        match last {
            Some('A') => self.row = self.row.saturating_sub(arg(1).max(1)),
            Some('B') => self.down(arg(1).max(1)),
            Some('C') => self.col = (self.col + arg(1).max(1)).min(self.width - 1),
            Some('D') => self.col = self.col.saturating_sub(arg(1).max(1)),
            Some('G') => self.col = (arg(1).max(1) - 1).min(self.width - 1),
            Some('K') => {
                let (row, col) = (&mut self.rows[self.row], self.col);
                match arg(0) {
                    0 => row[col..].fill(' '),
                    1 => row[..=col].fill(' '),
                    _ => row.fill(' '),
                }
            }
            Some('J') => {
                let (r, col) = (self.row, self.col);
                match arg(0) {
                    0 => {
                        self.rows[r][col..].fill(' ');
                        self.rows.truncate(r + 1);
                    }
                    _ => self.rows.iter_mut().for_each(|row| row.fill(' ')),
                }
            }
            _ => {}
        }
    }

    /// The rows as text, trailing blanks and trailing empty rows dropped.
    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_string())
            .collect();
        while v.last().is_some_and(String::is_empty) {
            v.pop();
        }
        v
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// Everything but escape sequences, for searching the whole stream (frames included).
fn strip_escapes(raw: &str) -> String {
    let mut out = String::new();
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('[') => {
                for c in it.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in it.by_ref() {
                    if c == '\x07' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A ferry run on a pseudo-terminal `width` columns wide and 24 rows high. `interrupt_when`:
/// once the output holds this text, type Ctrl-C.
struct TermRun {
    raw: String,
    status: ExitStatus,
}

async fn on_terminal(
    cache: &std::path::Path,
    args: &[String],
    width: usize,
    interrupt_when: Option<&'static str>,
) -> Option<TermRun> {
    let script = real::tool("script")?;
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    // After ferry, the terminal's echo setting for control characters, which ferry turns
    // off while it draws bars, on a line of its own: "echoctl" or "-echoctl". The shell
    // outlives a Ctrl-C to print it (a trap, unlike an ignored signal, is not inherited).
    let cmdline = format!(
        "trap true INT; stty cols {width} rows 24; {} {}; s=$?; \
         stty -a | grep -o -- '-*echoctl'; exit $s",
        env!("CARGO_BIN_EXE_ferry"),
        quoted.join(" ")
    );
    let cache = cache.to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(script)
            .args(["-qec", &cmdline, "/dev/null"])
            .env("FERRY_CACHE_DIR", &cache)
            .env("DOCKER_CONFIG", cache.join("none"))
            .env("REGISTRY_AUTH_FILE", cache.join("none.json"))
            .env("SHELL", "/bin/sh")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("http_proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running script");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut screen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut interrupt = interrupt_when;
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting") {
                break s;
            }
            if let Some(text) = interrupt {
                if strip_escapes(&String::from_utf8_lossy(&screen)).contains(text) {
                    stdin.write_all(b"\x03").expect("typing Ctrl-C");
                    interrupt = None;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ferry did not finish: {}",
                String::from_utf8_lossy(&screen)
            );
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(20)) {
                screen.extend(chunk);
            }
        };
        drop(stdin);
        let _ = reader.join();
        while let Ok(chunk) = rx.try_recv() {
            screen.extend(chunk);
        }
        TermRun {
            raw: String::from_utf8_lossy(&screen).to_string(),
            status,
        }
    });
    Some(run.await.expect("script task"))
}

// A long repository name: without cutting, its bars and lines would wrap on 80 columns.
const LONG_REPO: &str = "team/a-rather-long-repository-name-that-would-wrap-lines";

#[tokio::test(flavor = "multi_thread")]
async fn bars_fit_80_columns_name_their_image_and_the_summary_follows_them() {
    let (a, b) = (sized_image(601, 2, 120_000), sized_image(602, 2, 120_000));
    let reg = fake_registry(FakeAuth::None, LONG_REPO, &[("v1", &a), ("v2", &b)]).await;
    // Slow enough for bars and the total line to be drawn a few times.
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ab.tar");
    let (ra, rb) = (
        format!("{}/{LONG_REPO}:v1", reg.host()),
        format!("{}/{LONG_REPO}:v2", reg.host()),
    );
    let args = s(&["pull", &ra, &rb, "-o", out.to_str().unwrap()]);
    let Some(run) = on_terminal(&work.path().join("cache"), &args, WIDTH, None).await else {
        return;
    };
    let screen = Screen::replay(&run.raw, WIDTH);
    let shown = screen.text();
    assert!(run.status.success(), "ferry failed:\n{shown}");
    assert!(
        screen.overflowed.is_empty(),
        "lines wider than {WIDTH} columns wrapped: {:#?}\n{shown}",
        screen.overflowed
    );
    let stream = strip_escapes(&run.raw);
    assert!(
        stream.contains("total ") && stream.contains("/6 blobs") && stream.contains(" ETA "),
        "no total line was drawn:\n{stream}"
    );
    assert!(
        stream.contains("] ") && stream.contains("=>"),
        "no bar was drawn:\n{stream}"
    );
    // What stays: both images resolved, each blob done under its image's number, then the
    // summary and the wrote line, with no bar left over.
    let lines = screen.lines();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line holds {needle:?}:\n{shown}"))
    };
    let resolved_a = pos(&format!(":v1 → sha256:{}", a.manifest_digest.short()));
    let resolved_b = pos(&format!(":v2 → sha256:{}", b.manifest_digest.short()));
    assert!(resolved_a < resolved_b, "{shown}");
    for at in [resolved_a, resolved_b] {
        assert!(
            lines[at].starts_with("127.0.0.1:") && lines[at].contains('…'),
            "a long name is cut in its middle: {}",
            lines[at]
        );
    }
    for (n, img, resolved) in [(1, &a, resolved_a), (2, &b, resolved_b)] {
        for blob in img.blobs() {
            let at = pos(&format!("{} done (", blob.digest.short()));
            assert!(
                lines[at].starts_with(&format!("[{n}] 127.0.0.1:")),
                "blob of image {n} labelled otherwise: {}\n{shown}",
                lines[at]
            );
            // After its image's line: a config is read while its image is resolved (for the
            // platform check), so it may come before the next image's.
            assert!(at > resolved, "{shown}");
        }
    }
    let summary = pos("downloaded ");
    assert!(
        lines[summary].contains("0 of 6 blobs came from the cache"),
        "{shown}"
    );
    assert_eq!(
        &lines[summary + 1..],
        &[format!("wrote {}", out.display()), "echoctl".into()],
        "the summary and the wrote line must come last, after the bars, and the terminal's \
         settings as they were:\n{shown}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("=>") || l.contains(" ETA ")),
        "bars left on the screen:\n{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_stops_the_bars_before_the_message() {
    let img = sized_image(603, 2, 600_000);
    let reg = fake_registry(FakeAuth::None, "team/slow", &[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 100_000,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("slow.tar");
    let r = format!("{}/team/slow:v1", reg.host());
    let args = s(&["pull", &r, "-o", out.to_str().unwrap()]);
    // "]" closes a blob's bar: interrupt once bars are drawn.
    let Some(run) = on_terminal(&work.path().join("cache"), &args, WIDTH, Some("]")).await else {
        return;
    };
    let screen = Screen::replay(&run.raw, WIDTH);
    let shown = screen.text();
    assert_eq!(run.status.code(), Some(130), "{shown}");
    let at = run
        .raw
        .rfind("interrupted")
        .unwrap_or_else(|| panic!("no interruption message:\n{shown}"));
    assert!(
        !run.raw[at..].contains('\x1b'),
        "drawing went on after the message: {:?}",
        &run.raw[at..]
    );
    assert_eq!(
        run.raw[at..].lines().last().map(str::trim),
        Some("echoctl"),
        "the terminal's settings were not restored: {:?}",
        &run.raw[at..]
    );
    // The last frame stays, once, above the message; nothing is drawn below it.
    let lines = screen.lines();
    let message = lines
        .iter()
        .position(|l| l.contains("interrupted;"))
        .unwrap_or_else(|| panic!("the message was overwritten:\n{shown}"));
    let totals: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("total "))
        .collect();
    assert!(
        totals.len() == 1 && totals[0] < message,
        "the bars were drawn twice or below the message:\n{shown}"
    );
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bars_fit_a_narrow_terminal() {
    const NARROW: usize = 50;
    let (a, b) = (sized_image(607, 2, 60_000), sized_image(608, 1, 60_000));
    let reg = fake_registry(FakeAuth::None, LONG_REPO, &[("v1", &a), ("v2", &b)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 300_000,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("n.tar");
    let (ra, rb) = (
        format!("{}/{LONG_REPO}:v1", reg.host()),
        format!("{}/{LONG_REPO}:v2", reg.host()),
    );
    let args = s(&["pull", &ra, &rb, "-o", out.to_str().unwrap()]);
    let Some(run) = on_terminal(&work.path().join("cache"), &args, NARROW, None).await else {
        return;
    };
    let screen = Screen::replay(&run.raw, NARROW);
    let shown = screen.text();
    assert!(run.status.success(), "ferry failed:\n{shown}");
    let stream = strip_escapes(&run.raw);
    assert!(
        stream.contains("total ") && stream.contains("% ETA"),
        "no total line was drawn:\n{stream}"
    );
    // Everything fits but the summary and `wrote` lines, plain messages once drawing is
    // over, which may wrap.
    let only_messages = screen
        .overflowed
        .iter()
        .all(|row| row.starts_with("downloaded ") || row.starts_with("wrote "));
    assert!(
        only_messages,
        "lines wider than {NARROW} columns wrapped: {:#?}\n{shown}",
        screen.overflowed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_prints_below_the_last_frame_with_nothing_drawn_after() {
    let img = sized_image(609, 1, 200_000);
    let reg = fake_registry(FakeAuth::None, "team/bad", &[("v1", &img)]).await;
    reg.add_fault(Fault::WrongDigest {
        digest: img.layers[0].digest.clone(),
    });
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("bad.tar");
    let r = format!("{}/team/bad:v1", reg.host());
    let args = s(&["pull", &r, "-o", out.to_str().unwrap()]);
    let Some(run) = on_terminal(&work.path().join("cache"), &args, WIDTH, None).await else {
        return;
    };
    let screen = Screen::replay(&run.raw, WIDTH);
    let shown = screen.text();
    assert_eq!(run.status.code(), Some(6), "{shown}");
    let at = run
        .raw
        .find("error: ")
        .unwrap_or_else(|| panic!("no error message:\n{shown}"));
    assert!(
        !run.raw[at..].contains('\x1b'),
        "drawing went on after the error: {:?}",
        &run.raw[at..]
    );
    let lines = screen.lines();
    let error = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("the error was overwritten:\n{shown}"));
    assert!(
        lines[..error].iter().any(|l| l.starts_with("total ")),
        "the last frame should stay above the error:\n{shown}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("echoctl"), "{shown}");
}

/// No byte of `stderr` is a control character but the line ends, and no C1 or bidi control
/// survives.
fn assert_no_controls(stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    assert!(
        stderr.iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\n'),
        "control bytes on stderr: {text:?}"
    );
    assert!(
        !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)),
        "C1 or bidi controls on stderr: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_error_text_reaches_stderr_escaped() {
    let img = sized_image(604, 1, 1_000);
    let reg = fake_registry(FakeAuth::None, "team/app", &[("v1", &img)]).await;
    reg.add_fault(Fault::ManifestError {
        status: 404,
        code: "MANIFEST_UNKNOWN".into(),
        message: "gone\x1b[2J\x1b]0;pwned\x07\u{202e}exe.txt\u{9b}31m\r\nforged line".into(),
    });
    let work = tempfile::tempdir().unwrap();
    let r = format!("{}/team/app:v1", reg.host());
    let o = pull_to(
        &work.path().join("cache"),
        &[&r],
        &work.path().join("a.tar"),
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_no_controls(&o.stderr);
    let err = stderr(&o);
    assert!(
        err.contains("gone\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}exe.txt\\x9b31m\\r\\nforged line"),
        "the registry's message is not shown escaped: {err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("forged line")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_strings_from_an_index_reach_stderr_escaped() {
    let host = Platform::host();
    let idx = random_index(
        605,
        &[
            Platform::new(
                &host.os,
                &host.architecture,
                Some("v9\x1b[2J\x1b]0;pwned\x07"),
            ),
            Platform::new("linux\x1b[31m", "s390x", Some("\u{202e}x")),
        ],
        false,
    );
    let reg = ferry_testkit::fake::FakeRegistry::start(FakeAuth::None).await;
    reg.push_index("team/multi", "v1", &idx);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let r = format!("{}/team/multi:v1", reg.host());

    // The chosen platform is named in the progress line.
    let o = pull_to(&cache, &[&r], &work.path().join("a.tar")).await;
    assert_ok(&o);
    assert_no_controls(&o.stderr);
    let err = stderr(&o);
    assert!(err.contains("v9\\x1b[2J\\x1b]0;pwned\\x07)"), "{err}");

    // The platforms on offer are listed in the error.
    let o = pull_to(
        &cache,
        &[&r, "--platform", "linux/riscv64"],
        &work.path().join("b.tar"),
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_no_controls(&o.stderr);
    let err = stderr(&o);
    assert!(
        err.contains("linux\\x1b[31m/s390x/\\u{202e}x"),
        "the platforms are not listed escaped: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verbose_logs_have_no_colour_codes_nor_registry_controls_off_a_terminal() {
    let img = sized_image(606, 1, 1_000);
    let reg = fake_registry(FakeAuth::None, "team/app", &[("v1", &img)]).await;
    // One busy answer whose text tries to clear the screen and forge a line: the retry is
    // logged at -vv.
    reg.add_fault(Fault::ManifestError {
        status: 503,
        code: "UNAVAILABLE".into(),
        message: "busy\x1b[2J\r\u{202e}forged".into(),
    });
    let work = tempfile::tempdir().unwrap();
    let r = format!("{}/team/app:v1", reg.host());
    let (cache, out) = (work.path().join("cache"), work.path().join("a.tar"));
    let args = ["-vv", r.as_str()];
    let pull = pull_to(&cache, &args, &out);
    let heal = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reg
            .requests()
            .iter()
            .any(|q| q.path.contains("/manifests/") && q.status == 503)
        {
            assert!(Instant::now() < deadline, "no manifest request arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reg.clear_faults();
    };
    let (o, ()) = tokio::join!(pull, heal);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(err.contains("DEBUG"), "no log lines at -vv: {err}");
    assert!(
        err.contains("busy\\x1b[2J\\r\\u{202e}forged"),
        "the retry line does not show the registry's text escaped: {err}"
    );
    assert_no_controls(&o.stderr);
}
