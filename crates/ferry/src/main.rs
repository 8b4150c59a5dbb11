//! `ferry`, the command: pulls images from any OCI / Docker v2 registry without a Docker
//! daemon into archives that `docker load`, `podman load`, `ctr import` and `skopeo` accept.
//! One file per command under `cmd/`; errors are rendered once, here, with their cause chain,
//! a hint, and a documented exit code.

mod cli;
mod cmd;
mod exit;
mod progress;
mod sanitize;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::field::MakeExt as _;

fn main() {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::GENERAL);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            r = cmd::run(cli) => match r {
                Ok(()) => exit::OK,
                Err(e) => exit::report(&e),
            },
            _ = tokio::signal::ctrl_c() => {
                progress::abandon();
                cmd::cleanup_temp_outputs();
                eprintln!("interrupted; downloaded data is kept in the cache, run the same command again to resume");
                exit::INTERRUPTED
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
