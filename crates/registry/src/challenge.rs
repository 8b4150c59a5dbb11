//! `WWW-Authenticate` challenges (RFC 7235) as registries send them.

use std::collections::HashMap;

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

impl Challenge {
    /// Parse the first challenge ferry can answer from a header value. `Bearer` wins over
    /// `Basic` when a registry offers both.
    pub fn parse(header: &str) -> Option<Challenge> {
        let mut basic = None;
        for (scheme, params) in split_challenges(header) {
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => {
                    let realm = params.get("realm")?.clone();
                    return Some(Challenge::Bearer {
                        realm,
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                        error: params.get("error").cloned(),
                    });
                }
                "basic" => {
                    basic = Some(Challenge::Basic {
                        realm: params.get("realm").cloned(),
                    })
                }
                _ => {}
            }
        }
        basic
    }
}

/// Split `Scheme k=v, k="v, with comma", Scheme2 k=v` into schemes and their parameters.
fn split_challenges(header: &str) -> Vec<(String, HashMap<String, String>)> {
    let mut out: Vec<(String, HashMap<String, String>)> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    while i < s.len() {
        while i < s.len() && (s[i] == b' ' || s[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < s.len() && s[i] != b' ' && s[i] != b'=' && s[i] != b',' {
            i += 1;
        }
        let token = &header[start..i];
        if token.is_empty() {
            break;
        }
        if i < s.len() && s[i] == b'=' {
            // a parameter of the current scheme
            i += 1;
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    let ch_len = utf8_len(s[i]);
                    v.push_str(&header[i..(i + ch_len).min(s.len())]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' {
                    i += 1;
                }
                header[vs..i].trim().to_string()
            };
            if let Some((_, params)) = out.last_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push((token.to_string(), HashMap::new()));
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            Challenge::parse(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
                error: None,
            })
        );
    }

    #[test]
    fn basic_and_multiple() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        let both = r#"Basic realm="x", Bearer realm="https://t/token",scope="a:b:pull,push",error="insufficient_scope""#;
        let Some(Challenge::Bearer { scope, error, .. }) = Challenge::parse(both) else {
            panic!()
        };
        assert_eq!(scope.as_deref(), Some("a:b:pull,push"));
        assert_eq!(error.as_deref(), Some("insufficient_scope"));
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse(""), None);
        assert_eq!(
            Challenge::parse("Bearer service=x"),
            None,
            "a bearer challenge without realm is unusable"
        );
    }
}
