//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, shown by `ferry --help` and `ferry pull --help` alike.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0    success
  1    other error (a full disk, an image larger than the free space)
  2    bad command line or bad input (a malformed reference, an unusable output)
  3    image, tag or platform not found
  4    authentication failed
  5    network failure: registry unreachable, timed out, rate limited beyond
       --max-wait, or retries ran out (run again: it resumes)
  6    content did not match its digest
  129  stopped by SIGHUP (the terminal closed)
  130  interrupted (Ctrl-C, SIGINT)
  141  standard output closed before the archive was complete (-o - | head)
  143  stopped by SIGTERM
After 129, 130 and 143 no partial output is left behind; what was downloaded is
kept in the cache and the same command resumes."
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
    /// List the tags of a repository, one per line.
    #[command(after_help = TAGS_HELP)]
    Tags(TagsArgs),
    /// List the repositories of a registry (its catalog), one per line.
    #[command(after_help = CATALOG_HELP)]
    Catalog(CatalogArgs),
    /// Print the manifest digest an image reference resolves to.
    #[command(after_help = DIGEST_HELP)]
    Digest(DigestArgs),
    /// Show an image in a registry: digest, platforms, config, layers (no layer is downloaded).
    #[command(after_help = INSPECT_HELP)]
    Inspect(InspectArgs),
    /// Push an image archive or OCI layout directory to a registry, without a Docker daemon.
    #[command(after_help = PUSH_HELP)]
    Push(PushArgs),
    /// Copy an image between registries and archives (skopeo's location syntax).
    #[command(after_help = COPY_HELP)]
    Copy(CopyArgs),
    /// Delete a manifest (and the tags pointing at it) from a registry, by digest.
    #[command(after_help = DELETE_HELP)]
    Delete(DeleteArgs),
    /// Check credentials against a registry and store them as docker login does.
    #[command(after_help = LOGIN_HELP)]
    Login(LoginArgs),
    /// Remove the credentials stored for a registry.
    #[command(after_help = LOGOUT_HELP)]
    Logout(LogoutArgs),
    /// Serve images over HTTP as archives, streamed while they download (Range, resume).
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
}

const LOGIN_HELP: &str = concat!(
    "\
Examples:
  ferry login -u alice registry.example.com    asks for the password (not echoed)
  echo \"$TOKEN\" | ferry login -u bot --password-stdin ghcr.io
  ferry login -u alice --authfile auth.json 127.0.0.1:5000

The credentials are checked against the registry first; refused ones are not stored.
They go where docker login puts them: the credential helper docker's config.json names
for the registry (credHelpers, else credsStore), else that file's \"auths\" (base64, not
encrypted; the file is written with mode 0600 and its other settings kept). The file is
--authfile, else $REGISTRY_AUTH_FILE (podman's), else $DOCKER_CONFIG/config.json or
~/.docker/config.json. docker.io, index.docker.io and registry-1.docker.io are one
registry, stored under docker's key https://index.docker.io/v1/ in a config.json and
under podman's docker.io in any other file (auth.json).

",
    exit_codes!()
);

const PUSH_HELP: &str = concat!(
    "\
Examples:
  ferry push alpine_3.20.tar 127.0.0.1:5000/alpine:3.20
  ferry push app.tar registry.local/team/app --tag 1.4 --tag latest
  ferry push saved.tar registry.local --all     every image, each to its own name
  ferry push --image 1 saved.tar registry.local/app:v2
  ferry push --all-platforms multi.tar registry.local/app:1   the whole index

Reads ferry's archives (all three formats), docker save (every version), podman
save and skopeo's docker-archive and oci-archive, OCI layout directories, and
any of these wrapped in gzip or zstd. Uncompressed layers are gzip-compressed on
the way; compressed layers and unchanged manifests go byte for byte, so a pulled
image keeps its digest. Every layer is checked against its digest and the
config's diff_ids while it is sent: a damaged archive fails before any manifest
is pushed, so the tag never names a broken image. Blobs the registry holds are
skipped; blobs ferry sent to another repository of the registry are mounted.
Without a tag in TARGET the image's own tag is used, else latest. The pushed
manifest digest is printed on standard output.

",
    exit_codes!()
);

const LOGOUT_HELP: &str = concat!(
    "\
Examples:
  ferry logout registry.example.com
  ferry logout --authfile auth.json 127.0.0.1:5000

Removes the registry's entry from the credentials file (every spelling of its name)
and erases it from the credential helper configured for it; nothing else in the file
changes. Logging out of a registry with no stored credentials says so and succeeds,
as docker logout does.

",
    exit_codes!()
);

const COPY_HELP: &str = concat!(
    "\
Locations:
  docker://REF                  an image in a registry
  docker-archive:PATH[:REF]     a docker save archive (any version)
  oci:DIR[:TAG]                 an OCI layout directory
  oci-archive:PATH[:TAG]        an OCI layout in a tar
  PATH                          ferry's archive (or any archive ferry push reads)

Examples:
  ferry copy docker://reg-a/app:1 docker://reg-b/app:1
  ferry copy --all-platforms docker://reg/app:1 docker://reg/mirror/app:1
  ferry copy docker://alpine:3.20 oci:alpine-oci
  ferry copy docker-archive:saved.tar docker://registry.local/app:1

Between registries blobs stream through the verified cache; within one registry
they are mounted, never downloaded. To an archive, the output is written as
ferry pull writes it; from an archive, every layer is checked as it is copied.

",
    exit_codes!()
);

const DELETE_HELP: &str = concat!(
    "\
Examples:
  ferry digest 127.0.0.1:5000/team/app:v1      find the digest of a tag
  ferry delete 127.0.0.1:5000/team/app@sha256:…   delete that manifest

Only a digest is accepted: a tag may move between looking it up and deleting it.
Every tag pointing at the manifest goes with it; its blobs stay until the registry's
garbage collection. Registries may refuse deletes (docker-registry allows them with
REGISTRY_STORAGE_DELETE_ENABLED=true).

",
    exit_codes!()
);

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The archive file or OCI layout directory to push.
    #[arg(value_name = "ARCHIVE|DIR")]
    pub source: PathBuf,
    /// Where to: [registry[:port]/]repository[:tag]; with --all, registry[:port][/prefix].
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The image of a multi-image archive to push: one of its names, or its position from 0.
    #[arg(long, value_name = "NAME|INDEX", conflicts_with = "all")]
    pub image: Option<String>,
    /// Push every image of the archive, each to its own name under TARGET's registry.
    #[arg(long)]
    pub all: bool,
    /// Another tag to push the image as (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Platform to push from a multi-platform archive: os/arch[/variant]. Default: this
    /// machine's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Push every platform of a multi-platform archive (the whole index).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Blobs up to SIZE are uploaded in one request, larger ones in chunks of SIZE (e.g.
    /// 16M, the default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Blobs uploaded in parallel.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Also write the pushed manifest digest to FILE.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Cache directory: scratch space for compressed archives, and what layers compressed to.
    #[arg(long, value_name = "DIR", env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// No progress output (warnings and errors still print).
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: host[:port] (docker.io for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// The credentials file to write (podman's auth.json, or docker's config.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where from: docker://REF, docker-archive:PATH[:NAME], oci:DIR[:TAG],
    /// oci-archive:PATH[:TAG], PATH (the name chooses among an archive's images).
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Where to: docker://REF, docker-archive:PATH[:REF], oci:DIR[:TAG], oci-archive:PATH[:TAG], PATH.
    #[arg(value_name = "DST")]
    pub destination: String,
    /// Platform to copy from a multi-platform image: os/arch[/variant]. Default: this machine's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Copy every platform of a multi-platform image (the whole index).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Blobs up to SIZE are uploaded in one request, larger ones in chunks of SIZE.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Blobs copied in parallel.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Also write the copied manifest digest to FILE (registry destinations).
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Blob cache directory.
    #[arg(long, value_name = "DIR", env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// No progress output (warnings and errors still print).
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace an existing output archive or layout.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The manifest: [registry[:port]/]repository@digest.
    #[arg(value_name = "IMAGE@DIGEST")]
    pub image: String,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: host[:port] (docker.io for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// The credentials file to edit (podman's auth.json, or docker's config.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

const TAGS_HELP: &str = concat!(
    "\
Examples:
  ferry tags alpine                            the tags of docker.io/library/alpine
  ferry tags 127.0.0.1:5000/team/app --json    a JSON array

Every page of the list is followed. A reference with a tag or digest is refused:
give the repository alone.

",
    exit_codes!()
);

const CATALOG_HELP: &str = concat!(
    "\
Examples:
  ferry catalog 127.0.0.1:5000                 every repository of a local registry
  ferry catalog registry.example:5000 --json   a JSON array

Many public registries (Docker Hub, ghcr.io, quay.io) do not offer the catalog, or
only to administrators; list one repository's tags with ferry tags instead.

",
    exit_codes!()
);

const DIGEST_HELP: &str = concat!(
    "\
Examples:
  ferry digest alpine:3.20                     the digest of the tag (for a multi-platform
                                               image, the index's, as crane digest prints)
  ferry digest --platform linux/arm64 alpine   the digest of that platform's manifest

The digest comes from a HEAD request where the registry allows it (Docker Hub does
not count those against its pull limit), else from the manifest itself. With
--platform, an image that is not multi-platform has one digest, printed as it is.

",
    exit_codes!()
);

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository: [registry[:port]/]repository, without tag or digest.
    #[arg(value_name = "REPOSITORY")]
    pub repository: String,
    /// Print a JSON array instead of one tag per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The registry: host[:port] (docker.io for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// Print a JSON array instead of one repository per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The image: [registry[:port]/]repository[:tag][@digest].
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Print the digest of this platform's manifest from a multi-platform image:
    /// os/arch[/variant].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

const INSPECT_HELP: &str = concat!(
    "\
Examples:
  ferry inspect alpine:3.20                     digest, platforms, env, layers, sizes
  ferry inspect --platform linux/arm64 alpine   the arm64 image of a multi-platform one
  ferry inspect --json alpine                   skopeo inspect's JSON fields
  ferry inspect --raw alpine > manifest.json    the manifest bytes as served
  ferry inspect --config alpine | jq .config    the image config as served
  ferry inspect alpine_3.20.tar                 an archive (any kind ferry push reads)

--json has skopeo inspect's field names; RepoTags lists the repository's tags (empty
when the registry will not list them). Digest is that of the reference's manifest (the index for a
multi-platform image).
An archive (a path, docker-archive:PATH[:NAME], oci:DIR[:TAG], oci-archive:PATH)
shows the same fields; choose among several images with --image or :NAME.

",
    exit_codes!()
);

const PULL_HELP: &str = concat!(
    "\
Examples:
  ferry pull alpine:3.20                       writes alpine_3.20.tar
  ferry pull alpine busybox -o both.tar        two images, shared layers stored once
  ferry pull --platform linux/arm64 nginx      another platform
  ferry pull alpine -o - | docker load         stream to a loader
  ferry pull --format oci alpine -o alpine-oci an OCI layout directory
  ferry pull --force alpine -o alpine.tar      replace an existing output

The default archive loads with docker load, podman load, ctr images import and
skopeo (docker-archive: and oci-archive:). Interrupted pulls resume: run the
same command again. The output location is checked before anything is fetched,
and an image must fit the free disk space (or --max-size) before it is written.

Mirrors and servers:
  ferry pull --mirror docker.io=https://mirror.example alpine
  ferry pull --server http://ferry.lan:8080 alpine    through a ferry server
  FERRY_SERVER=http://ferry.lan:8080 ferry pull alpine

The config file ($XDG_CONFIG_HOME/ferry/config.toml, or --config FILE) may hold
  server = \"http://ferry.lan:8080\"
  [mirrors]
  \"docker.io\" = [\"https://mirror.example\", \"http://127.0.0.1:5000\"]
  \"*\" = [\"https://all.example\"]
--mirror flags come before the file's mirrors; --no-mirror ignores the file and
FERRY_SERVER. A mirror is asked with ?ns=REGISTRY and gets only the credentials
stored for its own host. A server with the registry API (/v2/) is used as the only
mirror: only blobs missing from the cache cross the link. Otherwise its /image
archive is downloaded (resumed with Range after a cut or a killed run) and imported,
every blob verified.

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
    /// No progress output (warnings and errors still print).
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace an existing output: a file, or an OCI layout directory (the old one stays
    /// until the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// Refuse images whose declared size exceeds SIZE (e.g. 500M, 20G; K, M, G and T are
    /// powers of 1024). Without it an image must fit in the free space of the output's and
    /// the cache's file systems; with it that check is replaced by this limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// The name to record the (one) image under instead of its reference: `ferry copy`'s
    /// `docker-archive:PATH:REF`. Not an option of `ferry pull`.
    #[arg(skip)]
    pub record_as: Option<ferry_core::Reference>,
}

/// Where `ferry pull` fetches from besides the registries: a ferry server, mirrors.
#[derive(Debug, Default, Args)]
pub struct MirrorArgs {
    /// Pull through this ferry server (or DockerImageSave v2 server): layer by layer through
    /// its registry mirror when it has one, else as a resumable archive download. Default:
    /// FERRY_SERVER, then `server` in the config file. Registries are not contacted.
    #[arg(long, value_name = "URL", conflicts_with = "mirrors")]
    pub server: Option<String>,
    /// The server's token (sent as a Bearer token, or as the Basic password to its mirror).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERRY_SERVER_TOKEN",
        hide_env_values = true
    )]
    pub server_token: Option<String>,
    /// Ask this mirror before the registry (repeatable, tried in order). REGISTRY= limits it
    /// to one registry (docker.io, ghcr.io, host:port); without it, it serves every one. A
    /// failing mirror falls back to the next, then to the registry.
    #[arg(long = "mirror", value_name = "[REGISTRY=]URL")]
    pub mirrors: Vec<String>,
    /// Ignore the mirrors and the server of the config file and FERRY_SERVER: go to the
    /// registries.
    #[arg(long, conflicts_with_all = ["mirrors", "server"])]
    pub no_mirror: bool,
    /// The user config file. Default: $XDG_CONFIG_HOME/ferry/config.toml
    /// (~/.config/ferry/config.toml).
    #[arg(long = "config", value_name = "FILE", env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: [registry[:port]/]repository[:tag][@digest]; or an archive: a path,
    /// docker-archive:PATH[:NAME], oci:DIR[:TAG], oci-archive:PATH[:TAG].
    #[arg(value_name = "IMAGE|ARCHIVE")]
    pub image: String,
    /// Platform of a multi-platform image to show: os/arch[/variant]. Default: this
    /// machine's. With --raw, the platform's manifest instead of the index.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print the manifest exactly as the registry served it.
    #[arg(long, group = "mode")]
    pub raw: bool,
    /// Print the image config exactly as the registry served it.
    #[arg(long, group = "mode")]
    pub config: bool,
    /// Print JSON with the field names of `skopeo inspect`.
    #[arg(long, group = "mode")]
    pub json: bool,
    /// For an archive holding several images: the one to show (a name, or its position
    /// from 0).
    #[arg(long = "image", value_name = "NAME|INDEX")]
    pub archive_image: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// A size in bytes with an optional binary unit: `1048576`, `512K`, `20G`, `1.5TiB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit {unit:?}: use K, M, G or T")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: give a number with K, M, G or T"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes as u64)
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
    /// Seconds before giving up on a connection, on a small request (ping, token, manifest:
    /// headers and body together), and on a blob download that brings less than 1 KiB in
    /// that time (it is retried from where it stopped).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// The longest wait a registry may ask for (Retry-After) before ferry gives up at once
    /// instead of waiting.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub max_wait: u64,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn max_size_takes_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("20g"), Ok(20 << 30));
        assert_eq!(parse_size("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_size("2 MB"), Ok(2 << 20));
        for bad in ["", "G", "12X", "0", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

const SERVE_HELP: &str = "\
Examples:
  ferry serve                                   127.0.0.1:8080, cache in ~/.cache/ferry
  ferry serve --listen 0.0.0.0:8080 --cache-max-size 50G --cache-max-age 30d
  ferry serve --allow-private 127.0.0.1:5000    also a registry on this machine
  curl -C - -OJ 'http://HOST:8080/image?name=alpine:3.20&arch=arm64'
  wget -c --content-disposition 'http://HOST:8080/image?name=ubuntu:25.04'

Endpoints: /image?name=IMAGE[&os=&arch=&variant=] (the archive ferry pull writes),
/platforms?name=IMAGE, /health, DockerImageSave v1 /pull/IMAGE, /save/IMAGE,
/download/IMAGE.tar and /download/IMAGE.tar.zip, DockerProxy /dl?myimage=IMAGE.
Every archive has an exact Content-Length, a strong ETag and honours Range and
If-Range from the first request, while its layers still download.

Every option is also a key of the --config TOML file (its name without the
leading dashes: listen, cache-dir, cache-max-size, cache-max-age, tag-ttl,
allow-private, allow-registry, insecure-registry, default-platform, max-image-size, token,
max-pulls, max-downloads-per-client, tls-cert, tls-key, min-rate,
mirror-of) and an environment variable
FERRY_SERVE_<NAME> (FERRY_SERVE_CACHE_MAX_SIZE; lists comma-separated).
Flags win over the environment, which wins over the file.

Registry mirror: /v2/ is a read-only pull-through registry (docker, podman,
containerd, skopeo). Names without a registry host come from --mirror-of
(default docker.io); /v2/HOST/REPO/... and containerd's ?ns=HOST pick another
registry, under the same --allow-registry and --allow-private rules. With
--token, clients log in with any user name and the token as the password.
Upstream credentials come from the files ferry pull reads (docker's config.json,
podman's auth.json), or per registry from the file: [registries.\"ghcr.io\"]
with username and password (never logged). SIGTERM or Ctrl-C stops accepting,
lets downloads in flight finish for up to 30 seconds, and exits 0.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", env = "FERRY_SERVE_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// The blob cache [default: the user's cache dir, e.g. ~/.cache/ferry].
    #[arg(long, value_name = "DIR", env = "FERRY_SERVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep the cache under SIZE (e.g. 50G), evicting the least recently used blobs
    /// (never one being served or downloaded).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FERRY_SERVE_CACHE_MAX_SIZE")]
    pub cache_max_size: Option<u64>,
    /// Evict blobs unused for longer than DUR (e.g. 30d, 12h, 90m, 3600s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, env = "FERRY_SERVE_CACHE_MAX_AGE")]
    pub cache_max_age: Option<std::time::Duration>,
    /// How long a tag's digest is trusted before the registry is asked again (e.g. 10m,
    /// 1h) [default: 10m]. Digests are cached until evicted.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, env = "FERRY_SERVE_TAG_TTL")]
    pub tag_ttl: Option<std::time::Duration>,
    /// A TOML file with any of these options as keys.
    #[arg(long, value_name = "FILE", env = "FERRY_SERVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Allow fetching from this registry although its address is loopback, private,
    /// link-local or otherwise not public (repeatable). Refused by default.
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "FERRY_SERVE_ALLOW_PRIVATE",
        value_delimiter = ','
    )]
    pub allow_private: Vec<String>,
    /// Fetch only from these registries (repeatable; Docker Hub is docker.io). Default:
    /// any public registry.
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "FERRY_SERVE_ALLOW_REGISTRY",
        value_delimiter = ','
    )]
    pub allow_registry: Vec<String>,
    /// Reach this registry over plain HTTP or with an unverified certificate (repeatable).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "FERRY_SERVE_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// The platform taken from a multi-platform image when a request names none
    /// [default: linux/amd64].
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        env = "FERRY_SERVE_DEFAULT_PLATFORM"
    )]
    pub default_platform: Option<String>,
    /// Refuse images whose archive is larger than SIZE (413).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FERRY_SERVE_MAX_IMAGE_SIZE")]
    pub max_image_size: Option<u64>,
    /// Require this client token (repeatable) on every endpoint but /health, as
    /// `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERRY_SERVE_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub token: Vec<String>,
    /// Images fetched from registries at once; more requests get 429 [default: 32].
    #[arg(long, value_name = "N", env = "FERRY_SERVE_MAX_PULLS", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_pulls: Option<u32>,
    /// Downloads one client address (an IPv6 /64) may have in progress; more get 429
    /// [default: 16].
    /// Behind a reverse proxy every client has the proxy's address: raise it there.
    #[arg(long, value_name = "N", env = "FERRY_SERVE_MAX_DOWNLOADS_PER_CLIENT", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_downloads_per_client: Option<u32>,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        env = "FERRY_SERVE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "PEM",
        env = "FERRY_SERVE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Cut a client that takes less than SIZE per second (e.g. 1K), averaged over 60 s of
    /// the time the server has bytes for it that it does not take; waiting for upstream
    /// does not count. 0: no minimum [default: 1K].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FERRY_SERVE_MIN_RATE")]
    pub min_rate: Option<u64>,
    /// The registry the /v2/ mirror serves names without a registry host from
    /// [default: docker.io, where alpine is library/alpine].
    #[arg(long, value_name = "REGISTRY", env = "FERRY_SERVE_MIRROR_OF")]
    pub mirror_of: Option<String>,
}

/// [`parse_size`] for the serve command's configuration file.
pub(crate) fn parse_size_value(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// A duration with a unit: `30d`, `12h`, `90m`, `3600s` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: give a number with s, m, h or d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .filter(|&secs| secs > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is not a usable duration"))
}
