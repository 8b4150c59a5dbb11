//! `ferry logout REGISTRY`: remove the credentials `ferry login` (or docker, podman) stored
//! for a registry, and nothing else.

use anyhow::Context;

use ferry_registry::{CredentialFiles, CredentialStore, StoredIn};

use crate::stdio::say;

use super::login::{registry_name, store_for};
use crate::cli::LogoutArgs;

pub async fn run(args: LogoutArgs) -> anyhow::Result<()> {
    let (name, _) = registry_name(&args.registry)?;
    let store = store_for(args.authfile.as_deref());
    let path = store.path().to_path_buf();
    let key = name.clone();
    let erased = tokio::task::spawn_blocking(move || store.erase(&key))
        .await
        .context("removing the credentials")?
        .with_context(|| format!("removing the credentials for {name}"))?;
    // As docker logout: not being logged in is no failure, the credentials are gone.
    let line = match erased {
        Some(StoredIn::File(p)) => {
            format!(
                "Removed login credentials for {name} (from {})",
                p.display()
            )
        }
        Some(StoredIn::Helper(h)) => {
            format!("Removed login credentials for {name} (from credential helper {h})")
        }
        None => format!(
            "Not logged in to {name}: {} holds no credentials for it",
            path.display()
        ),
    };
    super::print_lines(&[line], false)?;
    for f in CredentialFiles::from_env().files {
        if f != path && CredentialStore::at(&f).has_entry(&name).unwrap_or(false) {
            say!(
                "note: {} still holds credentials for {name}, and ferry reads that file too",
                f.display()
            );
        }
    }
    Ok(())
}
