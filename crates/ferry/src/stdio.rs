//! Writing to standard error without ever panicking. `eprintln!` panics when stderr is a
//! closed pipe (`ferry pull … 2>&1 | head`), which turned a finished pull into exit 101; a
//! message that cannot be shown is simply dropped.

use std::io::Write;

/// Print a line to standard error; a closed or failing stderr is ignored.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdio::say_args(format_args!($($arg)*))
    };
}
pub(crate) use say;

pub fn say_args(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}
