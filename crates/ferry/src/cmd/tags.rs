//! `ferry tags REPOSITORY`: every tag of a repository, following the registry's pages.

use anyhow::Context;

use ferry_core::Reference;

use super::print_lines;
use crate::cli::TagsArgs;
use crate::exit;

pub async fn run(args: TagsArgs) -> anyhow::Result<()> {
    let r: Reference = args.repository.parse()?;
    // The parser fills in `latest`: whether a tag was given is read from the text (a colon
    // before the last '/' is a registry's port).
    let last = args.repository.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || args.repository.contains('@') {
        return Err(exit::usage(
            format!(
                "ferry tags takes a repository, not an image: {:?} names a tag or digest",
                args.repository
            ),
            Some(&format!(
                "give the repository alone: ferry tags {}",
                r.name()
            )),
        ));
    }
    let client = super::client(&args.net, &[r.registry().to_string()], false)?;
    let tags = client
        .tags(r.api_host(), r.repository())
        .await
        .with_context(|| format!("listing the tags of {}", r.name()))?;
    print_lines(&tags, args.json)
}
