//! `ferry catalog REGISTRY`: the repositories a registry lists in `/v2/_catalog`.

use ferry_core::reference::DOCKER_HUB;
use ferry_core::Reference;
use ferry_registry::RegistryError;

use super::print_lines;
use crate::cli::CatalogArgs;
use crate::exit::{self, UserError};

pub async fn run(args: CatalogArgs) -> anyhow::Result<()> {
    let registry = args.registry.trim_end_matches('/');
    // A registry name is what precedes the repository in a reference; checked the same way.
    let probe: Option<Reference> = format!("{registry}/x").parse().ok();
    // Docker Hub's other names (index.docker.io, registry-1.docker.io) become docker.io.
    let named = |p: &Reference| {
        p.registry() == registry || (p.registry() == DOCKER_HUB && registry.contains('.'))
    };
    let Some(probe) = probe.filter(|p| named(p) && !registry.contains('/')) else {
        return Err(exit::usage(
            format!("{:?} is not a registry address", args.registry),
            Some("give host[:port], e.g. 127.0.0.1:5000, registry.example.com or docker.io"),
        ));
    };
    let client = super::client(&args.net, &[probe.registry().to_string()], false)?;
    match client.catalog(probe.api_host()).await {
        Ok(repos) => print_lines(&repos, args.json),
        Err(e) => Err(explain(e, registry)),
    }
}

/// A registry that does not offer its catalog says so with 404, 401, 403 or `UNSUPPORTED`:
/// a sentence saying that, rather than "not found" or "unauthorized" about nothing named.
fn explain(e: RegistryError, registry: &str) -> anyhow::Error {
    let unsupported = matches!(&e, RegistryError::Status { codes, .. }
        if codes.iter().any(|c| c.code == "UNSUPPORTED"));
    let (message, code) = match e.status() {
        _ if unsupported || e.is_not_found() => (
            format!("{registry} does not offer a catalog of its repositories"),
            exit::NOT_FOUND,
        ),
        Some(401 | 403) => (
            format!("{registry} does not list its repositories to this user"),
            exit::AUTH,
        ),
        _ => {
            let name = format!("listing the repositories of {registry}");
            return anyhow::Error::new(e).context(name);
        }
    };
    anyhow::Error::new(e).context(UserError {
        message,
        hint: Some(
            "many registries (Docker Hub, ghcr.io, quay.io) disable the catalog or keep it \
             for administrators; list one repository's tags with ferry tags REGISTRY/REPOSITORY"
                .into(),
        ),
        code,
    })
}
