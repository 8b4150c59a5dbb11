//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, shown by `ferry --help` and `ferry pull --help` alike.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0    success
  1    other error
  2    bad command line or bad input (a malformed reference, say)
  3    image, tag or platform not found
  4    authentication failed
  5    network failure after all retries (run again: it resumes)
  6    content did not match its digest
  130  interrupted"
    };
}

const AFTER_HELP: &str = concat!(
    exit_codes!(),
    "

Environment:
  FERRY_CACHE_DIR        the blob cache (default: the user's cache dir, e.g. ~/.cache/ferry)
  DOCKER_CONFIG          directory of docker's config.json (default ~/.docker)
  REGISTRY_AUTH_FILE     podman's auth.json
  HTTPS_PROXY, NO_PROXY  proxies, as usual
  FERRY_LOG              log filter (e.g. debug)"
);

/// Move container images across slow, blocked and air-gapped networks.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull images from a registry into an archive, without a Docker daemon.
    #[command(after_help = PULL_HELP)]
    Pull(PullArgs),
}

const PULL_HELP: &str = concat!(
    "\
Examples:
  ferry pull alpine:3.20                       writes alpine_3.20.tar
  ferry pull alpine busybox -o both.tar        two images, shared layers stored once
  ferry pull --platform linux/arm64 nginx      another platform
  ferry pull alpine -o - | docker load         stream to a loader
  ferry pull --format oci alpine -o alpine-oci an OCI layout directory

The default archive loads with docker load, podman load, ctr images import and
skopeo (docker-archive: and oci-archive:). Interrupted pulls resume: run the
same command again.

",
    exit_codes!()
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One tar that is both a docker-load archive and an OCI layout (original compressed layers).
    Archive,
    /// An OCI image layout directory; also holds OCI artifacts (Helm charts, SBOMs).
    Oci,
    /// Docker's legacy layout with uncompressed layers, for docker 1.10–24 era loaders.
    Legacy,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Images to pull: [registry[:port]/]repository[:tag][@digest]. With both, the digest is
    /// pulled and the tag kept only if it names that digest.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Output file ('-' for stdout). Default: a name made from the image, e.g. alpine_3.20.tar.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Archive)]
    pub format: Format,
    /// Platform to pull from a multi-platform image: os/arch[/variant]. Default: this machine's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Keep every platform of a multi-platform image (the whole index).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Blobs downloaded in parallel.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Blob cache directory (kept between runs; partial downloads resume from it).
    #[arg(long, value_name = "DIR", env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Options for reaching registries.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Allow plain HTTP and unverified TLS certificates for every registry. Loopback
    /// registries (localhost, 127.0.0.0/8, [::1]) use HTTP without this flag; with it (or
    /// with --ca-cert) they are tried over TLS first.
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA certificate(s) in this PEM file (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Registry username (the password comes from --password-stdin or a prompt).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// The password on the command line (visible to other users: prefer --password-stdin).
    #[arg(short, long, requires = "username", conflicts_with = "password_stdin")]
    pub password: Option<String>,
}
