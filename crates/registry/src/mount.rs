//! Cross-repository mounts (`POST …/blobs/uploads/?mount=&from=`), and cancelling the
//! upload sessions registries open instead when they cannot mount.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use ferry_core::Digest;

use crate::client::Client;
use crate::error::{redact, RegistryError};
use crate::refusal::{explain, header_digest, not_redirected, Write};
use crate::scope::Scopes;

/// What a mount request did.
pub(crate) enum Mount {
    /// The blob is in the repository now.
    Done,
    /// Not mounted; the registry opened an upload session at this URL instead.
    Session(Url),
    /// Not mounted, and no session to go on with.
    Refused,
}

impl Client {
    /// Try to mount `digest` from `from` into `repo` without uploading anything: true when
    /// mounted. A session the registry opened instead is cancelled.
    pub async fn try_mount(
        &self,
        host: &str,
        repo: &str,
        from: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        match self.mount(host, repo, from, digest).await? {
            Mount::Done => Ok(true),
            Mount::Session(location) => {
                self.cancel_session(host, repo, &location).await;
                Ok(false)
            }
            Mount::Refused => Ok(false),
        }
    }

    /// Try to mount `digest` from `from` into `repo`. A registry that cannot mount opens an
    /// upload session instead.
    pub(crate) async fn mount(
        &self,
        host: &str,
        repo: &str,
        from: &str,
        digest: &Digest,
    ) -> Result<Mount, RegistryError> {
        let path = format!(
            "v2/{repo}/blobs/uploads/?mount={digest}&from={}",
            url_escape(from)
        );
        let scopes = Scopes::mount(repo, from);
        let resp = self
            .with_retries(|| self.send(host, &scopes, Method::POST, &path, HeaderMap::new()))
            .await
            .and_then(not_redirected)
            .map_err(|e| explain(e, host, repo, Write::Blob(Some(digest))))?;
        if resp.status() == StatusCode::ACCEPTED {
            return Ok(match self.location(host, &resp).await {
                Ok(location) => Mount::Session(location),
                Err(_) => Mount::Refused,
            });
        }
        if resp.status() != StatusCode::CREATED {
            return Ok(Mount::Refused);
        }
        if let Some(d) = header_digest(&resp) {
            if d != *digest {
                return Err(RegistryError::Protocol {
                    url: redact(resp.url()),
                    reason: format!("the registry mounted {d} when asked for {digest}"),
                });
            }
        }
        Ok(Mount::Done)
    }

    /// Cancel an upload session that will not be used (`DELETE` on its URL), so it does not
    /// linger until the registry purges it. Best effort: a failure only delays that.
    pub(crate) async fn cancel_session(&self, host: &str, repo: &str, location: &Url) {
        let scopes = Scopes::push(repo);
        let sent = self
            .send(
                host,
                &scopes,
                Method::DELETE,
                location.as_str(),
                HeaderMap::new(),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!("cancelling an unused upload session failed: {e}");
        }
    }
}

/// A repository name in a query string.
fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
