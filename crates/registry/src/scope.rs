//! Token scopes as types: what a request needs the registry to allow. A request may need
//! several (a cross-repository mount pushes to one repository and pulls from another); the
//! token request carries each as its own `scope=` parameter, and tokens are cached per set.

use std::fmt;

/// One access a request needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `repository:NAME:pull`.
    Pull(String),
    /// `repository:NAME:pull,push`: uploads and manifest PUTs (a push checks blobs too).
    PullPush(String),
    /// `repository:NAME:delete`: manifest DELETE.
    Delete(String),
    /// `registry:catalog:*`: the catalog.
    Catalog,
}

impl Scope {
    /// The repository the scope is about, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Scope::Pull(r) | Scope::PullPush(r) | Scope::Delete(r) => Some(r),
            Scope::Catalog => None,
        }
    }

    /// Whether the scope asks for more than reading.
    pub fn writes(&self) -> bool {
        matches!(self, Scope::PullPush(_) | Scope::Delete(_))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Pull(r) => write!(f, "repository:{r}:pull"),
            Scope::PullPush(r) => write!(f, "repository:{r}:pull,push"),
            Scope::Delete(r) => write!(f, "repository:{r}:delete"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// The scopes one request needs: sorted and without repeats, so equal sets share a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(mut scopes: Vec<Scope>) -> Scopes {
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    pub fn pull(repo: &str) -> Scopes {
        Scopes(vec![Scope::Pull(repo.to_string())])
    }

    pub fn push(repo: &str) -> Scopes {
        Scopes(vec![Scope::PullPush(repo.to_string())])
    }

    /// Push to `repo` and mount from `from` (pull there).
    pub fn mount(repo: &str, from: &str) -> Scopes {
        Scopes::new(vec![
            Scope::PullPush(repo.to_string()),
            Scope::Pull(from.to_string()),
        ])
    }

    pub fn delete(repo: &str) -> Scopes {
        Scopes(vec![Scope::Delete(repo.to_string())])
    }

    pub fn catalog() -> Scopes {
        Scopes(vec![Scope::Catalog])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// The cache key: the scopes as the token service sees them.
    pub(crate) fn key(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The repository a refusal is about: the first one written to, else the first named.
    pub(crate) fn target(&self) -> String {
        self.0
            .iter()
            .find(|s| s.writes())
            .or_else(|| self.0.first())
            .and_then(Scope::repository)
            .unwrap_or("the registry")
            .to_string()
    }

    /// What a refusal of these scopes refused, in words: "delete from" or "push to".
    pub(crate) fn denied_action(&self) -> &'static str {
        if self.0.iter().any(|s| matches!(s, Scope::Delete(_))) {
            "delete from"
        } else {
            "push to"
        }
    }

    /// Whether any scope asks for more than reading.
    pub(crate) fn writes(&self) -> bool {
        self.0.iter().any(Scope::writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_render_as_the_token_service_expects() {
        let m = Scopes::mount("a/b", "c");
        assert_eq!(m.key(), "repository:c:pull repository:a/b:pull,push");
        assert_eq!(m.target(), "a/b");
        assert!(m.writes());
        assert_eq!(Scopes::catalog().key(), "registry:catalog:*");
        assert_eq!(Scopes::delete("x").key(), "repository:x:delete");
        assert_eq!(
            Scopes::new(vec![Scope::Pull("x".into()), Scope::Pull("x".into())]),
            Scopes::pull("x")
        );
        assert!(!Scopes::pull("x").writes());
        assert_eq!(Scopes::delete("x").denied_action(), "delete from");
        assert_eq!(m.denied_action(), "push to");
    }
}
