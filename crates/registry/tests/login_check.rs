//! `Client::check_login` against the in-process fake registry: Basic and Bearer challenges,
//! accepted and refused credentials, a registry that asks for none.

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
async fn bearer_login_asks_the_token_service_for_the_account_without_a_scope() {
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
