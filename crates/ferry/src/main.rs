//! `ferry`, the command: pulls images from any OCI / Docker v2 registry without a Docker
//! daemon into archives that `docker load`, `podman load`, `ctr import` and `skopeo` accept.
//! One file per command under `cmd/`; errors are rendered once, here, with their cause chain,
//! a hint, and a documented exit code.

// `eprintln!` and `println!` panic on a closed pipe: everything goes through `stdio::say!`.
#![deny(clippy::print_stderr, clippy::print_stdout)]

mod cli;
mod cmd;
mod exit;
mod progress;
mod sanitize;
mod stdio;

use std::io::IsTerminal;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::field::MakeExt as _;

use crate::stdio::say;

fn main() {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::GENERAL);
        }
    };
    // The server handles its own signals: a stop is graceful and exits 0.
    let serving = matches!(cli.command, cli::Command::Serve(_));
    let code = runtime.block_on(async {
        if serving {
            return match cmd::run(cli).await {
                Ok(()) => exit::OK,
                Err(e) => exit::report(&e),
            };
        }
        // On a worker of its own, so a signal is acted on even while the command blocks its
        // thread (a password prompt, a credential helper).
        let command = tokio::spawn(cmd::run(cli));
        tokio::select! {
            r = command => match r {
                Ok(Ok(())) => exit::OK,
                Ok(Err(e)) => exit::report(&e),
                Err(e) => exit::report(&anyhow::anyhow!("ferry failed unexpectedly: {e}")),
            },
            (name, code) = stop_signal() => {
                progress::abandon();
                cmd::cleanup_temp_outputs();
                // The last line: the downloads and writers still winding down print nothing
                // below it.
                stdio::last_words(format_args!("interrupted{name}; downloaded data is kept in the cache, run the same command again to resume"));
                code
            }
        }
    });
    // Dropping the downloads writes out what they hold in memory, for the next run to resume.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if matches!(code, exit::INTERRUPTED | exit::TERMINATED | exit::HANGUP) {
        // Again: a writer thread may have created its file after the first pass.
        cmd::cleanup_temp_outputs();
    }
    std::process::exit(code);
}

/// Wait for SIGINT, SIGTERM or SIGHUP (a closed terminal); all three stop a pull the same
/// way. Returns how to name the signal in the message and the exit code (128 + its number,
/// as shells report a process killed by it).
async fn stop_signal() -> (&'static str, i32) {
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup());
    let (Ok(mut term), Ok(mut hup)) = (term, hup) else {
        // Without the handlers (which cannot really fail on Linux) Ctrl-C still works.
        let _ = tokio::signal::ctrl_c().await;
        return ("", exit::INTERRUPTED);
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => ("", exit::INTERRUPTED),
        _ = term.recv() => (" by SIGTERM", exit::TERMINATED),
        _ = hup.recv() => (" by SIGHUP", exit::HANGUP),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,ferry=debug",
        // The HTTP stack stays at info: its debug lines name redirect targets, whose signed
        // query strings are credentials.
        _ => "debug,reqwest=info,hyper=info,hyper_util=info,h2=info,rustls=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Field values carry registry text (error bodies in retry lines): sanitised like every
    // other line. tracing-subscriber's own escaping leaves CR, LF and bidi controls through.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(w, "{}", sanitize::clean(&text)),
            name => write!(w, "{name}={}", sanitize::clean(&text)),
        }
    })
    .delimited(" ");
    // Colour codes only for a terminal: in a log file or a pipe they are noise.
    let _ = tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(|| stdio::LogWriter)
        // On a failed write it would fall back to `eprintln!`, which panics on a closed stderr.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
