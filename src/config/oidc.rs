//! The `[oidc]` section: single sign-on with an OpenID Connect identity provider, for the web app
//! and `hoop login`.

use std::time::Duration;

use secrecy::SecretString;
use toml::Spanned;

use super::ConfigError;
use super::raw::RawOidc;
use super::validate::Validator;

/// How long a token made by single sign-on lasts, unless `token_ttl` says.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// The longest `token_ttl`: a sign-on is re-checked with the identity provider at least monthly,
/// so someone removed there loses access here.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The `[oidc]` section, validated.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The identity provider's issuer URL; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The ID token claim listing its holder's groups (`groups` at most providers); `None`: groups
    /// come from the config only.
    pub groups_claim: Option<String>,
    /// People the identity provider vouches for sign in without a `[[users]]` entry, with the
    /// groups of `groups_claim`.
    pub allow_unlisted_users: bool,
    /// How long a token made by single sign-on lasts.
    pub token_ttl: Duration,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// What the sign-in button calls the identity provider.
    pub name: String,
}

impl Validator<'_> {
    /// `[oidc]`: an https issuer (http only on loopback), a client id and a secret.
    pub(super) fn oidc(&self, raw: Spanned<RawOidc>) -> Result<OidcConfig, ConfigError> {
        let raw = raw.into_inner();
        let issuer = raw
            .issuer
            .get_ref()
            .trim()
            .trim_end_matches('/')
            .to_string();
        match reqwest::Url::parse(&issuer) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
            Ok(url) if url.scheme() == "http" && is_loopback(&url) => {}
            _ => {
                return self.err(
                    raw.issuer.span(),
                    "oidc.issuer",
                    format!(
                        "{issuer:?} must be the identity provider's https:// issuer URL (http only on loopback, for testing)"
                    ),
                );
            }
        }
        let client_id = raw.client_id.get_ref().trim();
        if client_id.is_empty() {
            return self.err(
                raw.client_id.span(),
                "oidc.client_id",
                "is empty; copy it from the application registered with the identity provider"
                    .into(),
            );
        }
        let client_secret = raw.client_secret.get_ref().trim();
        if client_secret.is_empty() {
            return self.err(
                raw.client_secret.span(),
                "oidc.client_secret",
                "is empty; copy it from the application registered with the identity provider"
                    .into(),
            );
        }
        let groups_claim = match &raw.groups_claim {
            Some(claim) if claim.get_ref().trim().is_empty() => {
                return self.err(
                    claim.span(),
                    "oidc.groups_claim",
                    "is empty; leave it out, or name the claim (often \"groups\")".into(),
                );
            }
            claim => claim.as_ref().map(|c| c.get_ref().trim().to_string()),
        };
        Ok(OidcConfig {
            issuer,
            client_id: client_id.to_string(),
            client_secret: SecretString::from(client_secret.to_string()),
            groups_claim,
            allow_unlisted_users: raw.allow_unlisted_users,
            token_ttl: match &raw.token_ttl {
                Some(t) => self.duration(t, "oidc.token_ttl", MAX_TOKEN_TTL)?,
                None => DEFAULT_TOKEN_TTL,
            },
            scopes: raw
                .scopes
                .unwrap_or_else(|| vec!["email".into(), "profile".into()]),
            name: raw.name.unwrap_or_else(|| "single sign-on".into()),
        })
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
