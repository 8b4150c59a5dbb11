//! `Client::check_login` against the in-process fake registry: Basic and Bearer challenges,
//! accepted and refused credentials, a registry that asks for none; and a hand-made
//! registry for what the fake does not record (the token request's query).

use ferry_registry::{Client, ClientOptions, Credential, LoginCheck, RegistryError};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, TokenField};

fn cred(user: &str, pass: &str) -> Credential {
    Credential::Basic {
        username: user.into(),
        password: pass.into(),
    }
}

fn client() -> Client {
    Client::new(ClientOptions::default()).expect("client")
}

fn basic() -> FakeAuth {
    FakeAuth::Basic {
        user: "alice".into(),
        pass: "pw:1".into(),
    }
}

fn bearer() -> FakeAuth {
    FakeAuth::Bearer {
        credentials: Some(("alice".into(), "pw:1".into())),
        token_field: TokenField::Token,
        expires_in: None,
    }
}

fn assert_refused(e: &RegistryError) {
    assert!(e.is_credentials_refused(), "{e:?}");
    let text = e.to_string();
    assert!(!text.contains("pw:1") && !text.contains("wrong"), "{text}");
}

#[tokio::test]
async fn basic_login_sends_the_credentials_to_v2() {
    let reg = FakeRegistry::start(basic()).await;
    let got = client()
        .check_login(&reg.host(), &cred("alice", "pw:1"))
        .await
        .unwrap();
    assert_eq!(got, LoginCheck::Accepted);
    let last = reg.requests().pop().expect("a request");
    assert_eq!((last.path.as_str(), last.status), ("/v2/", 200));
    assert!(last.authorization.unwrap().starts_with("Basic "));
}

#[tokio::test]
async fn basic_login_with_a_wrong_password_is_refused() {
    let reg = FakeRegistry::start(basic()).await;
    let e = client()
        .check_login(&reg.host(), &cred("alice", "wrong"))
        .await
        .unwrap_err();
    assert_refused(&e);
}

#[tokio::test]
async fn bearer_login_gets_a_token_with_the_credentials_and_shows_it_to_v2() {
    let reg = FakeRegistry::start(bearer()).await;
    let got = client()
        .check_login(&reg.host(), &cred("alice", "pw:1"))
        .await
        .unwrap();
    assert_eq!(got, LoginCheck::Accepted);
    assert_eq!(reg.tokens_issued(), 1);
    let log = reg.requests();
    let token = log
        .iter()
        .find(|r| r.path.starts_with("/token"))
        .expect("a token request");
    assert!(token
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Basic "));
    // The token was then shown to /v2/, which took it.
    let last = log.last().unwrap();
    assert_eq!((last.path.as_str(), last.status), ("/v2/", 200));
    assert!(last
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Bearer "));
}

#[tokio::test]
async fn bearer_login_with_a_wrong_password_is_refused_by_the_token_service() {
    let reg = FakeRegistry::start(bearer()).await;
    let e = client()
        .check_login(&reg.host(), &cred("alice", "wrong"))
        .await
        .unwrap_err();
    assert_refused(&e);
    assert_eq!(reg.tokens_issued(), 0);
}

#[tokio::test]
async fn a_failing_token_service_is_not_called_a_refusal() {
    let reg = FakeRegistry::start(bearer()).await;
    reg.add_fault(Fault::TokenStatus { status: 500 });
    let e = client()
        .check_login(&reg.host(), &cred("alice", "pw:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::TokenService { .. }) && !e.is_credentials_refused(),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_registry_without_auth_needs_no_check() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let got = client()
        .check_login(&reg.host(), &cred("alice", "anything"))
        .await
        .unwrap();
    assert_eq!(got, LoginCheck::NotRequired);
}

/// One request a [`MiniBearer`] saw: the path, the query, and the `Authorization` header.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    authorization: Option<String>,
}

/// A registry of a few lines, so the token request itself can be looked at (the fake keeps
/// no query): `/v2/` challenges `Bearer realm=REALM,service="mini"` (REALM is this
/// server's `/token` unless given), `/token` hands `tok-1` to alice:pw:1 and 401 to anyone
/// else, and `/v2/` accepts `Bearer tok-1`.
struct MiniBearer {
    host: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl MiniBearer {
    async fn start(realm: Option<&str>) -> MiniBearer {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let realm = realm
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://{host}/token"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let good = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:pw:1")
        );
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let authorization = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().to_string())
                });
                log.lock().unwrap().push(Seen {
                    path: path.to_string(),
                    query: query.to_string(),
                    authorization: authorization.clone(),
                });
                let (status, extra, body) = match (path, authorization.as_deref()) {
                    ("/v2/", Some("Bearer tok-1")) => ("200 OK", String::new(), "{}"),
                    ("/v2/", _) => (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"mini\"\r\n"),
                        "{}",
                    ),
                    ("/token", Some(a)) if a == good => {
                        ("200 OK", String::new(), "{\"token\": \"tok-1\"}")
                    }
                    ("/token", _) => ("401 Unauthorized", String::new(), "{}"),
                    _ => ("404 Not Found", String::new(), "{}"),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        MiniBearer { host, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_token_request_names_the_account_and_asks_for_no_scope() {
    let reg = MiniBearer::start(None).await;
    let got = client()
        .check_login(&reg.host, &cred("alice", "pw:1"))
        .await
        .unwrap();
    assert_eq!(got, LoginCheck::Accepted);
    let seen = reg.seen();
    let tokens: Vec<&Seen> = seen.iter().filter(|s| s.path == "/token").collect();
    assert_eq!(tokens.len(), 1, "{seen:?}");
    let mut params: Vec<&str> = tokens[0].query.split('&').collect();
    params.sort_unstable();
    assert_eq!(params, ["account=alice", "service=mini"], "{seen:?}");
    assert!(tokens[0]
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.path.as_str(), last.authorization.as_deref()),
        ("/v2/", Some("Bearer tok-1"))
    );
}

#[tokio::test]
async fn a_token_service_that_refuses_is_a_refusal() {
    let reg = MiniBearer::start(None).await;
    let e = client()
        .check_login(&reg.host, &cred("alice", "wrong"))
        .await
        .unwrap_err();
    assert_refused(&e);
    assert!(
        !reg.seen().iter().any(|s| s.path == "/v2/"
            && s.authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer"))),
        "no token, so nothing was shown to /v2/"
    );
}

/// A plain-HTTP realm that is not on this machine never gets the password (it would cross
/// the network in clear), unless --insecure.
#[tokio::test]
async fn a_plain_http_token_realm_off_this_machine_gets_no_credentials() {
    let reg = MiniBearer::start(Some("http://auth.example.invalid/token")).await;
    let e = client()
        .check_login(&reg.host, &cred("alice", "pw:1"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, RegistryError::Auth { .. })
            && text.contains(
                "the token realm http://auth.example.invalid/token is not HTTPS; refusing to send credentials there"
            ),
        "{e:?}"
    );
    assert!(!text.contains("pw:1"), "{text}");
    assert!(
        reg.seen().iter().all(|s| s.authorization.is_none()),
        "credentials were sent: {:?}",
        reg.seen()
    );
}
