//! Writing to standard error without ever panicking. `eprintln!` panics when stderr is a
//! closed pipe (`ferry pull … 2>&1 | head`), which turned a finished pull into exit 101; a
//! message that cannot be shown is simply dropped.
//!
//! Everything ferry writes to stderr (messages, progress lines, log lines) goes through
//! here, so [`last_words`] can make sure nothing follows the message a signal ends with.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Print a line to standard error; a closed or failing stderr is ignored.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdio::say_args(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Set by [`last_words`]: from then on nothing more is written.
static HUSHED: AtomicBool = AtomicBool::new(false);

pub fn say_args(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // Checked under the lock: a line another thread is writing ends before last words.
    if HUSHED.load(Ordering::SeqCst) {
        return;
    }
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// Print the process's last line: whatever other threads still do until it exits (writers
/// winding down, downloads being dropped) prints nothing below it.
pub fn last_words(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if HUSHED.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// Standard error for the log subscriber, silenced like [`say_args`] after [`last_words`].
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if HUSHED.load(Ordering::SeqCst) {
            return Ok(buf.len());
        }
        err.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        if HUSHED.load(Ordering::SeqCst) {
            return Ok(());
        }
        err.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
