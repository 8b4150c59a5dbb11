//! `ferry inspect`: what an image in a registry is, without downloading its layers. Human
//! output by default; `--json` in the shape of `skopeo inspect`; `--raw` and `--config` the
//! manifest and config bytes exactly as served (verified against their digests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use serde::Serialize;

use ferry_core::manifest::ImageConfig;
use ferry_core::{media, Descriptor, Digest, Manifest, Platform, Reference};
use ferry_registry::{Client, FetchedManifest};

use crate::cli::InspectArgs;
use crate::exit::{self, UserError};
use crate::sanitize::clean;

pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    if let Some((path, name)) = archive_location(&args.image) {
        return super::inspect_archive::run(&args, &path, name.as_deref()).await;
    }
    let reference: Reference = args.image.parse()?;
    let wanted = match &args.platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))?,
        ),
        None => None,
    };
    // Not quiet: retry notices go to stderr, never into the output on stdout.
    let client = super::client(&args.net, &[reference.registry().to_string()], false)?;
    let top = client.manifest(&reference).await?;
    if args.raw && wanted.is_none() {
        return write_stdout(&top.bytes);
    }
    let platform = wanted.clone().unwrap_or_else(Platform::host);
    let chosen = choose(&client, &reference, &top, &platform).await?;
    if args.raw {
        // --platform given: the chosen platform's manifest.
        let Some(image) = &chosen else {
            return Err(no_platform(&top, &platform));
        };
        return write_stdout(&image.bytes);
    }
    let Some(image) = chosen else {
        if args.json || args.config {
            return Err(no_platform(&top, &platform));
        }
        // Human output still shows the index and its platforms.
        let mut out = header(&reference, &top);
        platforms_block(&mut out, &top, None);
        let _ = writeln!(
            out,
            "No image for {platform} in this index: choose one with --platform."
        );
        return write_stdout(out.as_bytes());
    };
    let Manifest::Image(m) = &image.manifest else {
        anyhow::bail!("the manifest chosen for {platform} is an index");
    };
    let config_bytes = client
        .blob_small(reference.api_host(), reference.repository(), &m.config)
        .await?;
    if args.config {
        return write_stdout(&config_bytes);
    }
    let config = if media::is_image_config(&m.config.media_type) {
        ImageConfig::parse(&config_bytes)
            .map_err(|e| anyhow::anyhow!("reading the image config {}: {e}", m.config.digest))?
    } else {
        ImageConfig::default()
    };
    if args.json {
        // As skopeo inspect does, one more request: the repository's tags. A registry that
        // will not list them leaves the field empty rather than failing the inspection.
        let tags = client
            .tags(reference.api_host(), reference.repository())
            .await
            .unwrap_or_default();
        let mut bytes = serde_json::to_vec_pretty(&skopeo_json(
            reference.name(),
            Some(&top.digest),
            m,
            &config,
            tags,
        ))?;
        bytes.push(b'\n');
        return write_stdout(&bytes);
    }
    let mut out = header(&reference, &top);
    if matches!(top.manifest, Manifest::Index(_)) {
        platforms_block(&mut out, &top, Some(&image.digest));
        field(&mut out, "Image", &image.digest.to_string());
        field(&mut out, "Media type", &image.media_type);
    }
    image_block(&mut out, m, &config);
    write_stdout(out.as_bytes())
}

/// An archive to inspect, and the image named in it: `docker-archive:PATH[:NAME]`,
/// `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`, or a path (one that exists, or one written as a
/// path: `./x.tar`, `/tmp/x`, `../x`).
fn archive_location(arg: &str) -> Option<(std::path::PathBuf, Option<String>)> {
    for prefix in ["docker-archive:", "oci-archive:", "oci:"] {
        if let Some(rest) = arg.strip_prefix(prefix) {
            return Some(match rest.split_once(':') {
                Some((p, n)) if !n.is_empty() => (p.into(), Some(n.to_string())),
                Some((p, _)) => (p.into(), None),
                None => (rest.into(), None),
            });
        }
    }
    let path = arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || std::path::Path::new(arg).exists();
    path.then(|| (arg.into(), None))
}

/// The image manifest for `platform`: `top` itself when it is an image, else the index
/// entry chosen for `platform` (through one nested index). `None` when no entry fits.
async fn choose(
    client: &Client,
    r: &Reference,
    top: &FetchedManifest,
    platform: &Platform,
) -> anyhow::Result<Option<FetchedManifest>> {
    let mut current = top.clone();
    for _ in 0..3 {
        let entry = match &current.manifest {
            Manifest::Image(_) => return Ok(Some(current)),
            Manifest::Index(i) => match i.select(platform) {
                Some(d) => d.clone(),
                None => return Ok(None),
            },
        };
        current = client
            .manifest_at(
                r.api_host(),
                r.repository(),
                &entry.digest.to_string(),
                Some(&entry.digest),
            )
            .await?;
    }
    Err(anyhow::anyhow!("the index nests more than two levels deep"))
}

fn no_platform(top: &FetchedManifest, platform: &Platform) -> anyhow::Error {
    let available = match &top.manifest {
        Manifest::Index(i) => i
            .platforms()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Manifest::Image(_) => String::new(),
    };
    UserError {
        message: format!("the image has no {platform} variant (it has: {available})"),
        hint: Some("choose one with --platform os/arch[/variant]".into()),
        code: exit::NOT_FOUND,
    }
    .into()
}

/// Write `bytes` to standard output; a closed pipe ends the command quietly (exit 141).
pub(super) fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(exit::StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

pub(super) fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{:<12}{}", format!("{name}:"), clean(value));
}

fn header(r: &Reference, top: &FetchedManifest) -> String {
    let mut out = String::new();
    field(&mut out, "Name", &r.to_string());
    field(&mut out, "Digest", &top.digest.to_string());
    field(&mut out, "Media type", &top.media_type);
    out
}

/// The index's entries with their platforms, the chosen one marked.
fn platforms_block(out: &mut String, top: &FetchedManifest, chosen: Option<&Digest>) {
    let Manifest::Index(i) = &top.manifest else {
        return;
    };
    let _ = writeln!(out, "Platforms:");
    for d in &i.manifests {
        let p = match &d.platform {
            Some(p) if d.is_attestation() => format!("{p} (attestation)"),
            Some(p) => p.to_string(),
            None => "(none)".to_string(),
        };
        let mark = if chosen == Some(&d.digest) {
            "  <- chosen"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:<24} {}{mark}", clean(&p), d.digest);
    }
}

pub(super) fn image_block(out: &mut String, m: &ferry_core::ImageManifest, config: &ImageConfig) {
    if let Some(c) = &config.created {
        field(out, "Created", c);
    }
    if let (Some(os), Some(arch)) = (&config.os, &config.architecture) {
        field(
            out,
            "Platform",
            &Platform::new(os, arch, config.variant.as_deref()).to_string(),
        );
    }
    let run = config.config.clone().unwrap_or_default();
    if let Some(e) = &run.entrypoint {
        field(
            out,
            "Entrypoint",
            &serde_json::to_string(e).unwrap_or_default(),
        );
    }
    if let Some(c) = &run.cmd {
        field(out, "Cmd", &serde_json::to_string(c).unwrap_or_default());
    }
    if let Some(w) = run.working_dir.as_deref().filter(|w| !w.is_empty()) {
        field(out, "WorkingDir", w);
    }
    if let Some(u) = run.user.as_deref().filter(|u| !u.is_empty()) {
        field(out, "User", u);
    }
    if let Some(env) = run.env.as_ref().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "Env:");
        for e in env {
            let _ = writeln!(out, "  {}", clean(e));
        }
    }
    if let Some(labels) = run.labels.as_ref().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "Labels:");
        for (k, v) in labels {
            let _ = writeln!(out, "  {}={}", clean(k), clean(v));
        }
    }
    let _ = writeln!(out, "Layers:");
    for l in &m.layers {
        let _ = writeln!(
            out,
            "  {}  {:>10}  {}",
            l.digest,
            human(l.size),
            clean(&l.media_type)
        );
    }
    let total: u64 = m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size;
    field(
        out,
        "Total size",
        &format!(
            "{} ({total} bytes, compressed, config included)",
            human(total)
        ),
    );
}

/// A size in binary units, one decimal: `812 B`, `3.4 MiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `skopeo inspect`'s output, field for field.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SkopeoJson<'a> {
    name: String,
    /// `None` for an archive without manifests (docker save before Docker 25).
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a Digest>,
    repo_tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    docker_version: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    layers: Vec<&'a Digest>,
    layers_data: Vec<LayerData<'a>>,
    env: Option<&'a Vec<String>>,
}

#[derive(Serialize)]
struct LayerData<'a> {
    #[serde(rename = "MIMEType")]
    mime_type: &'a str,
    #[serde(rename = "Digest")]
    digest: &'a Digest,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Annotations")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

pub(super) fn skopeo_json<'a>(
    name: String,
    digest: Option<&'a Digest>,
    m: &'a ferry_core::ImageManifest,
    config: &'a ImageConfig,
    repo_tags: Vec<String>,
) -> SkopeoJson<'a> {
    let run = config.config.as_ref();
    SkopeoJson {
        name,
        digest,
        repo_tags,
        created: config.created.as_deref(),
        docker_version: config.docker_version.as_deref().unwrap_or(""),
        labels: run.and_then(|c| c.labels.as_ref()),
        architecture: config.architecture.as_deref().unwrap_or(""),
        variant: config.variant.as_deref().filter(|v| !v.is_empty()),
        os: config.os.as_deref().unwrap_or(""),
        layers: m.layers.iter().map(|l| &l.digest).collect(),
        layers_data: m.layers.iter().map(layer_data).collect(),
        env: run.and_then(|c| c.env.as_ref()),
    }
}

fn layer_data(l: &Descriptor) -> LayerData<'_> {
    LayerData {
        mime_type: &l.media_type,
        digest: &l.digest,
        size: l.size,
        annotations: l.annotations.as_ref(),
    }
}
