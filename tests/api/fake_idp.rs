//! A small OpenID Connect identity provider on loopback, speaking the parts of the protocol
//! hoopbot uses: discovery, the signing keys (JWKS), the authorization endpoint (which signs in
//! whoever the test says, at once, and sends the browser back with a code), and the token
//! endpoint (client secret by HTTP Basic, the code once, PKCE S256 checked, an RS256 ID token).
//!
//! A test can make the next ID token wrong in one way ([`Flaw`]) to see it refused. The test keys
//! under tests/data/ are for this fixture only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{Duration, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AdditionalClaims, Audience, EndUserEmail, IdToken, IdTokenClaims, IssuerUrl, JsonWebKeyId,
    Nonce, PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "hoopbot-test";
pub const CLIENT_SECRET: &str = "idp-client-secret-for-tests";

/// One way to make the next ID token wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Carries a nonce other than the one the sign-in asked for.
    WrongNonce,
    /// Is meant for another client.
    WrongAudience,
    /// Expired a minute ago.
    Expired,
    /// Signed by a key the provider does not publish.
    ForeignKey,
    /// Says the email address is not verified.
    UnverifiedEmail,
}

/// Who the provider signs in next, and how.
#[derive(Debug, Clone)]
pub struct Person {
    pub email: String,
    pub groups: Vec<String>,
    pub flaw: Option<Flaw>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Groups {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    groups: Vec<String>,
}

impl AdditionalClaims for Groups {}

struct Grant {
    person: Person,
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct Provider {
    issuer: String,
    key: CoreRsaPrivateSigningKey,
    foreign_key: CoreRsaPrivateSigningKey,
    next: Mutex<Person>,
    grants: Mutex<HashMap<String, Grant>>,
    /// Every `/authorize` query seen, for tests to look at.
    authorizations: Mutex<Vec<HashMap<String, String>>>,
    /// The test's name resolution: the server's public URL (`http://hoop.test`) and where it is
    /// reached, for a real browser sent back to it.
    reroute: Mutex<Option<(String, String)>>,
}

pub struct FakeIdp {
    pub issuer: String,
    provider: Arc<Provider>,
}

impl FakeIdp {
    pub async fn start() -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let key = |file: &str, kid: &str| {
            let pem = std::fs::read_to_string(format!(
                "{}/tests/data/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid.into()))).unwrap()
        };
        let provider = Arc::new(Provider {
            issuer: issuer.clone(),
            key: key("idp-signing-key.pem", "test-key-1"),
            // The same key id as the published key: only the signature tells them apart.
            foreign_key: key("idp-other-key.pem", "test-key-1"),
            next: Mutex::new(Person {
                email: "bob@x.com".into(),
                groups: vec![],
                flaw: None,
            }),
            grants: Mutex::new(HashMap::new()),
            authorizations: Mutex::new(Vec::new()),
            reroute: Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeIdp { issuer, provider }
    }

    /// The `[oidc]` section of a server that signs in with this provider.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nname = \"Test IdP\"\n{extra}\n",
            self.issuer
        )
    }

    /// The provider signs in `person` next.
    pub fn sign_in_next(&self, person: Person) {
        *self.provider.next.lock().unwrap() = person;
    }

    /// Sends the browser back to `to` where the server's redirect URI says `from` (a real
    /// browser cannot resolve the test server's public name).
    pub fn send_back_to(&self, from: &str, to: &str) {
        *self.provider.reroute.lock().unwrap() = Some((from.into(), to.into()));
    }

    pub fn authorizations(&self) -> Vec<HashMap<String, String>> {
        self.provider.authorizations.lock().unwrap().clone()
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    axum::Json(json!({
        "issuer": p.issuer,
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
        "jwks_uri": format!("{}/jwks", p.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

async fn jwks(State(p): State<Arc<Provider>>) -> Response {
    axum::Json(CoreJsonWebKeySet::new(vec![p.key.as_verification_key()])).into_response()
}

/// Signs in whoever is next, at once, and sends the browser back with a code.
async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    p.authorizations.lock().unwrap().push(query.clone());
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("response_type") != "code" {
        return (StatusCode::BAD_REQUEST, "unknown client or response type").into_response();
    }
    if field("code_challenge_method") != "S256" || field("code_challenge").is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE S256 is required").into_response();
    }
    let code = hex::encode(rand::random::<[u8; 16]>());
    let redirect_uri = field("redirect_uri");
    p.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            person: p.next.lock().unwrap().clone(),
            nonce: field("nonce"),
            challenge: field("code_challenge"),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let back = serde_urlencoded::to_string([("code", code), ("state", field("state"))]).unwrap();
    let to = match &*p.reroute.lock().unwrap() {
        Some((from, to)) => redirect_uri.replacen(from, to, 1),
        None => redirect_uri,
    };
    Redirect::to(&format!("{to}?{back}")).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
}

fn token_error(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

async fn token(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if form.grant_type != "authorization_code" {
        return token_error("unsupported_grant_type");
    }
    let Some(grant) = p.grants.lock().unwrap().remove(&form.code) else {
        return token_error("invalid_grant");
    };
    let answer = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(form.code_verifier.as_bytes()));
    if answer != grant.challenge || form.redirect_uri != grant.redirect_uri {
        return token_error("invalid_grant");
    }
    let person = &grant.person;
    let now = Utc::now();
    let (audience, expires, nonce) = match person.flaw {
        Some(Flaw::WrongAudience) => ("someone-else", now + Duration::minutes(5), grant.nonce),
        Some(Flaw::Expired) => (CLIENT_ID, now - Duration::minutes(1), grant.nonce),
        Some(Flaw::WrongNonce) => (CLIENT_ID, now + Duration::minutes(5), "not-it".into()),
        _ => (CLIENT_ID, now + Duration::minutes(5), grant.nonce),
    };
    let mut standard = StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(format!(
        "sub-{}",
        person.email
    )))
    .set_email(Some(EndUserEmail::new(person.email.clone())));
    standard = standard.set_email_verified(Some(person.flaw != Some(Flaw::UnverifiedEmail)));
    let claims = IdTokenClaims::new(
        IssuerUrl::new(p.issuer.clone()).unwrap(),
        vec![Audience::new(audience.into())],
        expires,
        now - Duration::minutes(2),
        standard,
        Groups {
            groups: person.groups.clone(),
        },
    )
    .set_nonce(Some(Nonce::new(nonce)));
    let key = match person.flaw {
        Some(Flaw::ForeignKey) => &p.foreign_key,
        _ => &p.key,
    };
    let id_token: IdToken<
        Groups,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    > = IdToken::new(
        claims,
        key,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .unwrap();
    axum::Json(json!({
        "access_token": hex::encode(rand::random::<[u8; 16]>()),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token.to_string(),
    }))
    .into_response()
}
