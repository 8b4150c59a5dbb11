//! A command run on a real terminal (`script` from util-linux), typed into like a person
//! would: wait for a prompt, type, read the screen.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
    screen: Vec<u8>,
    deadline: Instant,
}

impl Terminal {
    /// Run `cmdline` (a shell command line) under `script` with these environment
    /// variables; everything must be over within 20 s. Blocking: call it off the runtime.
    pub fn start(
        script: &Path,
        cmdline: &str,
        env: &[(&str, impl AsRef<std::ffi::OsStr>)],
    ) -> Terminal {
        let mut c = Command::new(script);
        c.args(["-qec", cmdline, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("running script");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, output) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            stdin: Some(stdin),
            output,
            reader: Some(reader),
            screen: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(20),
        }
    }

    /// The screen so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen).to_string()
    }

    /// Read until `what` is on the screen.
    pub fn wait_for(&mut self, what: &str) {
        while !self.screen().contains(what) {
            assert!(
                Instant::now() < self.deadline,
                "no {what:?}: {}",
                self.screen()
            );
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(100)) {
                self.screen.extend(chunk);
            }
        }
    }

    /// Type `keys` once the prompt on screen has turned echo off: rpassword prints its
    /// prompt a moment before it does, and a person never types inside that window.
    pub fn type_secret(&mut self, keys: &[u8]) {
        std::thread::sleep(Duration::from_millis(200));
        self.type_keys(keys);
    }

    pub fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.stdin.as_mut().expect("still typing");
        stdin.write_all(keys).expect("typing");
    }

    /// Wait for the command to end; the whole screen and how it ended.
    pub fn finish(mut self) -> (String, ExitStatus) {
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting") {
                break s;
            }
            assert!(
                Instant::now() < self.deadline,
                "the command did not finish: {}",
                self.screen()
            );
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(100)) {
                self.screen.extend(chunk);
            }
        };
        drop(self.stdin.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        while let Ok(chunk) = self.output.try_recv() {
            self.screen.extend(chunk);
        }
        (self.screen(), status)
    }
}
