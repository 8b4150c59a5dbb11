//! `ferry digest IMAGE`: the manifest digest a reference resolves to, as `crane digest`
//! and `skopeo inspect --format {{.Digest}}` print it.

use anyhow::Context;

use ferry_core::{Digest, Manifest, Platform, Reference};

use crate::cli::DigestArgs;
use crate::exit::{self, UserError};

/// Indexes inside indexes followed before giving up.
const MAX_DEPTH: usize = 4;

pub async fn run(args: DigestArgs) -> anyhow::Result<()> {
    let r: Reference = args.image.parse()?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| {
            p.parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))
        })
        .transpose()?;
    let client = super::client(&args.net, &[r.registry().to_string()], false)?;
    let what = format!("resolving {}", r.familiar());
    let digest = match platform {
        None => client
            .manifest_digest(r.api_host(), r.repository(), &r.manifest_reference())
            .await
            .context(what)?,
        Some(p) => for_platform(&client, &r, &p).await.context(what)?,
    };
    super::print_lines(&[digest.to_string()], false)
}

/// The digest of `wanted`'s manifest: the index is fetched (and verified), the entry chosen
/// as `ferry pull --platform` chooses it. A manifest that is not an index is the answer.
async fn for_platform(
    client: &ferry_registry::Client,
    r: &Reference,
    wanted: &Platform,
) -> anyhow::Result<Digest> {
    let mut m = client.manifest(r).await?;
    for _ in 0..MAX_DEPTH {
        let Manifest::Index(index) = &m.manifest else {
            return Ok(m.digest);
        };
        let Some(entry) = index.select(wanted) else {
            let available: Vec<String> = index.platforms().iter().map(|p| p.to_string()).collect();
            return Err(UserError {
                message: format!(
                    "{} has no image for {wanted}; it has {}",
                    r.familiar(),
                    if available.is_empty() {
                        "none with a platform".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
                hint: Some("choose one of those with --platform os/arch[/variant]".into()),
                code: exit::NOT_FOUND,
            }
            .into());
        };
        let d = entry.digest.clone();
        m = client
            .manifest_at(r.api_host(), r.repository(), &d.to_string(), Some(&d))
            .await?;
    }
    anyhow::bail!(
        "{}: indexes nested more than {MAX_DEPTH} deep",
        r.familiar()
    )
}
