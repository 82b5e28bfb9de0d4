//! Single sign-on with an OpenID Connect identity provider: the authorization code flow with PKCE,
//! by the `openidconnect` crate. `/login/oidc` sends the browser to the provider with a fresh
//! `state` (kept server-side by its SHA-256, and in a short-lived cookie that binds it to this
//! browser), a nonce and a PKCE challenge; `/login/oidc/callback` takes that attempt once,
//! exchanges the code, and has the crate check the ID token (signature by the provider's keys,
//! issuer, audience, expiry, nonce) before anyone is signed in (`Hoop::sign_in_vouched`).
//!
//! The provider's discovery document and keys are fetched when first needed and kept for an hour;
//! an ID token signed by a key not among them fetches them again (at most once a minute), so a key
//! rotation does not lock people out.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::pages;
use super::session::{cookie, local, secure, set_session_cookie};
use crate::config::OidcConfig;
use crate::domain::Email;
use crate::error::Error;
use crate::service::{Hoop, Vouched};
use crate::store::{SIGN_IN_STEP_TTL, SignInAttempt};

/// The cookie that ties a sign-on's `state` to the browser that started it, so a code meant for
/// one browser cannot sign in another (login CSRF).
const STATE_COOKIE: &str = "hoop_sign_in";
/// How long the provider's metadata and keys are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(60 * 60);
/// The least time between two fetches forced by an unknown signing key.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// The longest a call to the identity provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The ID token's claims beyond the standard ones: the configured groups claim is read from them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: HashMap<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type IdTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type OidcClient = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    IdTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The identity provider as this server knows it.
pub struct SingleSignOn {
    config: OidcConfig,
    redirect: RedirectUrl,
    http: Http,
    /// The provider's metadata (with its keys) and when it was fetched.
    provider: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl SingleSignOn {
    pub fn new(config: &OidcConfig, public_url: &str) -> anyhow::Result<SingleSignOn> {
        let redirect = RedirectUrl::new(format!(
            "{}/login/oidc/callback",
            public_url.trim_end_matches('/')
        ))?;
        // The provider's answers are never followed elsewhere: a redirect from its token
        // endpoint could otherwise send the code and secret to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(SingleSignOn {
            config: config.clone(),
            redirect,
            http: Http(http),
            provider: Mutex::new(None),
        })
    }

    /// What the sign-in button calls the provider.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The provider's metadata and keys: kept ones, unless `refetch` asks for new ones (and the
    /// last fetch is not too recent).
    async fn provider(&self, refetch: bool) -> Result<CoreProviderMetadata, Error> {
        let mut kept = self.provider.lock().await;
        if let Some((at, metadata)) = kept.as_ref() {
            let age = at.elapsed();
            if age < METADATA_TTL && (!refetch || age < REFETCH_AT_MOST_EVERY) {
                return Ok(metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(unreachable_provider)?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(unreachable_provider)?;
        *kept = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    async fn client(&self, refetch: bool) -> Result<OidcClient, Error> {
        let metadata = self.provider(refetch).await?;
        Ok(OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                secrecy::ExposeSecret::expose_secret(&self.config.client_secret).to_string(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Where to send the browser, the `state` it must come back with, and the attempt to keep.
    async fn start(
        &self,
        next: String,
        now: i64,
    ) -> Result<(String, String, SignInAttempt), Error> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let attempt = SignInAttempt {
            state_sha256: crate::token::digest(state.secret()),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next,
            expires_at: now + SIGN_IN_STEP_TTL.as_millis() as i64,
        };
        Ok((url.to_string(), state.secret().clone(), attempt))
    }

    /// Exchanges `code` and checks the ID token that comes with it: who the provider vouches for.
    async fn finish(&self, code: String, attempt: &SignInAttempt) -> Result<Vouched, Error> {
        let client = self.client(false).await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(unreachable_provider)?
            .set_pkce_verifier(PkceCodeVerifier::new(attempt.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| refused("the identity provider did not accept the sign-in", e))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| refused("the identity provider sent no ID token", "none"))?;
        let nonce = Nonce::new(attempt.nonce.clone());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // Perhaps signed by a key the provider rotated in since its keys were fetched.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let client = self.client(true).await?;
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| refused("the ID token did not pass its checks", e))?
                    .clone()
            }
            Err(e) => return Err(refused("the ID token did not pass its checks", e)),
        };
        if claims.email_verified() == Some(false) {
            return Err(Error::Unauthenticated(
                "the identity provider has not verified your email address, so it cannot name you here".into(),
            ));
        }
        let email = claims
            .email()
            .map(|e| e.as_str().to_string())
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the identity provider did not say your email address; ask an admin to add the `email` scope".into(),
                )
            })?;
        let email = Email::parse(&email).map_err(|e| {
            Error::Unauthenticated(format!("the identity provider's email address {e}"))
        })?;
        let groups = match &self.config.groups_claim {
            None => BTreeSet::new(),
            Some(name) => groups(claims.additional_claims().claims.get(name)),
        };
        Ok(Vouched { email, groups })
    }
}

/// The crate's calls to the identity provider, made with our own HTTP client.
struct Http(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let reply = self.0.execute(reqwest::Request::try_from(request)?).await?;
            let mut response = HttpResponse::new(Vec::new());
            *response.status_mut() = reply.status();
            *response.headers_mut() = reply.headers().clone();
            *response.body_mut() = reply.bytes().await?.to_vec();
            Ok(response)
        })
    }
}

/// A groups claim's groups: an array of names, or one name.
fn groups(claim: Option<&serde_json::Value>) -> BTreeSet<String> {
    match claim {
        Some(serde_json::Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str())
            .map(str::to_string)
            .collect(),
        Some(serde_json::Value::String(name)) => BTreeSet::from([name.clone()]),
        _ => BTreeSet::new(),
    }
}

fn unreachable_provider(e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "cannot reach the identity provider");
    Error::Internal(anyhow::anyhow!(
        "cannot reach the identity provider; try again, or sign in with an API token"
    ))
}

fn refused(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "single sign-on refused: {what}");
    Error::Unauthenticated(format!("{what}; sign in again"))
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /login/oidc`: off to the identity provider.
pub async fn start(
    State(hoop): State<Hoop>,
    sso: Option<Extension<Arc<SingleSignOn>>>,
    Query(query): Query<StartQuery>,
) -> Response {
    let next = local(query.next.as_deref());
    let Some(Extension(sso)) = sso else {
        let e = Error::NotFound("single sign-on is not configured on this server".into());
        return pages::error(None, &e);
    };
    let started = async {
        let (url, state, attempt) = sso.start(next.clone(), hoop.now().await?).await?;
        hoop.start_sign_in(&attempt).await?;
        Ok::<_, Error>((url, state))
    };
    match started.await {
        Ok((url, state)) => {
            let mut response = Redirect::to(&url).into_response();
            let cookie = format!(
                "{STATE_COOKIE}={state}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age={}{}",
                SIGN_IN_STEP_TTL.as_secs(),
                secure(&hoop)
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => {
            let status = super::status_of(&e);
            (
                status,
                pages::login(&next, Some(sso.name()), Some(&e.to_string())),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: back from the identity provider.
pub async fn callback(
    State(hoop): State<Hoop>,
    sso: Option<Extension<Arc<SingleSignOn>>>,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    let Some(Extension(sso)) = sso else {
        let e = Error::NotFound("single sign-on is not configured on this server".into());
        return pages::error(None, &e);
    };
    let signed_in = async {
        if let Some(error) = back.error {
            let said = back.error_description.unwrap_or(error);
            return Err(Error::Unauthenticated(format!(
                "the identity provider did not sign you in: {}",
                crate::display::single_line(&said)
            )));
        }
        let (Some(code), Some(state)) = (back.code, back.state) else {
            return Err(Error::InvalidInput(
                "this page is where the identity provider sends you back; sign in again".into(),
            ));
        };
        let ours = cookie(&headers, STATE_COOKIE).unwrap_or_default();
        if !bool::from(ours.as_bytes().ct_eq(state.as_bytes())) {
            tracing::warn!("refused a sign-on that this browser did not start");
            return Err(Error::Unauthenticated(
                "this sign-in was not started in this browser; sign in again".into(),
            ));
        }
        let attempt = hoop.take_sign_in(&state).await?.ok_or_else(|| {
            Error::Unauthenticated(
                "this sign-in was used already or took too long; sign in again".into(),
            )
        })?;
        let vouched = sso.finish(code, &attempt).await?;
        let session = hoop.sign_in_vouched(vouched).await?;
        Ok((attempt.next, session))
    };
    match signed_in.await {
        Ok((next, session)) => {
            let mut response = Redirect::to(&next).into_response();
            set_session_cookie(&hoop, &mut response, &session.cookie);
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "hoop_sign_in=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
                ),
            );
            response
        }
        Err(e) => {
            let status = super::status_of(&e);
            (
                status,
                pages::login("/access-requests", Some(sso.name()), Some(&e.to_string())),
            )
                .into_response()
        }
    }
}
