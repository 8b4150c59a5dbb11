//! `ferry delete IMAGE@DIGEST`: delete a manifest from a registry (and with it every tag
//! that points at it), where the registry allows deletes.

use anyhow::Context;

use ferry_core::Reference;

use crate::cli::DeleteArgs;
use crate::exit;

pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let r: Reference = args.image.parse()?;
    // A tag can be moved between the look-up and the delete: only a digest says exactly
    // what goes, as the registry API itself requires.
    let Some(digest) = r.digest().cloned() else {
        return Err(exit::usage(
            format!(
                "ferry delete takes IMAGE@DIGEST: {:?} names no digest",
                args.image
            ),
            Some(&format!(
                "find the digest with: ferry digest {}; then: ferry delete {}@DIGEST",
                r.familiar(),
                r.name()
            )),
        ));
    };
    let client = super::client(&args.net, &[r.registry().to_string()], false)?;
    let what = format!("{}@{digest}", r.name());
    client
        .delete_manifest(r.api_host(), r.repository(), &digest)
        .await
        .with_context(|| format!("deleting {what}"))?;
    super::print_lines(&[format!("deleted {what}")], false)
}
