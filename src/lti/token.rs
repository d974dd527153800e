//! JWTs both ways: the tool's own RS256 keys and what it signs, and checking a platform's `id_token`.
//!
//! Built on `jsonwebtoken` (signature, `exp`/`nbf` with leeway, `iss`, `aud`); the LTI rules on top are here:
//! `azp`, `iat`, the nonce, the deployment, the message type and version, the required claims.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{LtiError, Platform, MAX_KEY_SET};

/// Clock difference allowed between the platform and this tool, on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// Longest `id_token` accepted.
pub const MAX_ID_TOKEN: usize = 64 * 1024;
/// How long a fetched key set is used before it is fetched again.
const KEY_SET_TTL: Duration = Duration::from_secs(3600);
/// Least time between two fetches of one platform's key set (an unknown `kid` cannot make this tool hammer it).
const REFETCH_GAP: Duration = Duration::from_secs(10);
/// Deadline of a key set fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub const CLAIM_MESSAGE_TYPE: &str = "https://purl.imsglobal.org/spec/lti/claim/message_type";
pub const CLAIM_VERSION: &str = "https://purl.imsglobal.org/spec/lti/claim/version";
pub const CLAIM_DEPLOYMENT: &str = "https://purl.imsglobal.org/spec/lti/claim/deployment_id";
pub const CLAIM_ROLES: &str = "https://purl.imsglobal.org/spec/lti/claim/roles";
pub const CLAIM_CONTEXT: &str = "https://purl.imsglobal.org/spec/lti/claim/context";
pub const CLAIM_RESOURCE_LINK: &str = "https://purl.imsglobal.org/spec/lti/claim/resource_link";
pub const CLAIM_PRESENTATION: &str = "https://purl.imsglobal.org/spec/lti/claim/launch_presentation";
pub const CLAIM_NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";
pub const CLAIM_DL_SETTINGS: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings";
pub const CLAIM_DL_ITEMS: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/content_items";
pub const CLAIM_DL_DATA: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/data";

/// The two messages this tool takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    ResourceLink,
    DeepLinking,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Context {
    pub id: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NrpsClaim {
    pub context_memberships_url: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeepLinkingSettings {
    pub deep_link_return_url: String,
    #[serde(default)]
    pub accept_types: Vec<String>,
    #[serde(default)]
    pub data: Option<String>,
}

/// A checked launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub message: MessageType,
    pub sub: String,
    pub deployment_id: String,
    pub roles: Vec<String>,
    pub context: Context,
    pub name: Option<String>,
    pub email: Option<String>,
    pub nrps: Option<NrpsClaim>,
    pub deep_linking: Option<DeepLinkingSettings>,
    /// Every claim, for the configured login id claim.
    pub claims: serde_json::Map<String, Value>,
}

impl Launch {
    /// The value of a claim named `name`, or `outer#inner` for a field of an object claim (e.g.
    /// `https://purl.imsglobal.org/spec/lti/claim/lis#person_sourcedid`).
    pub fn claim_text(&self, name: &str) -> Option<&str> {
        match name.split_once('#') {
            Some((outer, inner)) => self.claims.get(outer)?.get(inner)?.as_str(),
            None => self.claims.get(name)?.as_str(),
        }
    }
}

/// What the launch must match besides the signature.
pub struct Expect<'a> {
    pub platform: &'a Platform,
    pub nonce: &'a str,
    pub now: i64,
}

/// Checks an `id_token` against a platform key: every LTI rule; the first one broken is the error. Long because
/// the rules read best in the order they are checked, one after the other.
pub fn check_id_token(token: &str, key: &DecodingKey, expect: &Expect<'_>) -> Result<Launch, LtiError> {
    let p = expect.platform;
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = LEEWAY.as_secs();
    v.set_issuer(&[p.issuer.as_str()]);
    v.set_audience(&[p.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &v).map_err(jwt_error)?;
    let c = data.claims;
    // More than one audience: `azp` must name this tool; when present, always.
    let several = c.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
    match c.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != p.client_id => return Err(LtiError::WrongAudience(format!("azp is {azp:?}"))),
        None if several => return Err(LtiError::WrongAudience("several audiences and no azp".into())),
        _ => {}
    }
    let iat = c.get("iat").and_then(Value::as_i64).ok_or_else(|| LtiError::MissingClaims("iat".into()))?;
    if iat > expect.now + LEEWAY.as_secs() as i64 {
        return Err(LtiError::Expired);
    }
    let text = |name: &str| c.get(name).and_then(Value::as_str).map(str::to_owned);
    let missing: Vec<&str> = [
        ("sub", text("sub").filter(|s| !s.is_empty()).is_some()),
        ("nonce", text("nonce").is_some()),
        (CLAIM_MESSAGE_TYPE, text(CLAIM_MESSAGE_TYPE).is_some()),
        (CLAIM_VERSION, text(CLAIM_VERSION).is_some()),
        (CLAIM_DEPLOYMENT, text(CLAIM_DEPLOYMENT).is_some()),
        (CLAIM_ROLES, c.get(CLAIM_ROLES).is_some_and(Value::is_array)),
        (CLAIM_CONTEXT, c.get(CLAIM_CONTEXT).and_then(|x| x.get("id")).is_some_and(Value::is_string)),
    ]
    .into_iter()
    .filter_map(|(name, there)| (!there).then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(LtiError::MissingClaims(missing.join(", ")));
    }
    if text("nonce").as_deref() != Some(expect.nonce) {
        return Err(LtiError::WrongNonce);
    }
    let deployment_id = text(CLAIM_DEPLOYMENT).unwrap_or_default();
    if !p.deployment_ids.contains(&deployment_id) {
        return Err(LtiError::UnknownDeployment(deployment_id));
    }
    if text(CLAIM_VERSION).as_deref() != Some("1.3.0") {
        return Err(LtiError::Unsupported(format!("LTI version {:?}; this tool speaks 1.3.0", text(CLAIM_VERSION))));
    }
    let message = match text(CLAIM_MESSAGE_TYPE).as_deref() {
        Some("LtiResourceLinkRequest") => MessageType::ResourceLink,
        Some("LtiDeepLinkingRequest") => MessageType::DeepLinking,
        other => return Err(LtiError::Unsupported(format!("message type {other:?}"))),
    };
    fn field<T: serde::de::DeserializeOwned>(
        c: &serde_json::Map<String, Value>,
        name: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        c.get(name).cloned().map(serde_json::from_value).transpose()
    }
    let context: Context = field(&c, CLAIM_CONTEXT)
        .map_err(|e| LtiError::MissingClaims(format!("context: {e}")))?
        .ok_or_else(|| LtiError::MissingClaims("context".into()))?;
    let roles: Vec<String> =
        field(&c, CLAIM_ROLES).map_err(|e| LtiError::MissingClaims(format!("roles: {e}")))?.unwrap_or_default();
    let deep_linking: Option<DeepLinkingSettings> =
        field(&c, CLAIM_DL_SETTINGS).map_err(|e| LtiError::MissingClaims(format!("deep_linking_settings: {e}")))?;
    if message == MessageType::DeepLinking && deep_linking.is_none() {
        return Err(LtiError::MissingClaims(CLAIM_DL_SETTINGS.into()));
    }
    let name = text("name")
        .or_else(|| match (text("given_name"), text("family_name")) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (g, f) => g.or(f),
        })
        .map(|n| n.chars().take(200).collect());
    Ok(Launch {
        message,
        sub: text("sub").unwrap_or_default(),
        deployment_id,
        roles,
        context,
        name,
        email: text("email").map(|e| e.chars().take(320).collect()),
        nrps: field(&c, CLAIM_NRPS).ok().flatten(),
        deep_linking,
        claims: c,
    })
}

fn jwt_error(e: jsonwebtoken::errors::Error) -> LtiError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => LtiError::BadSignature,
        K::ExpiredSignature | K::ImmatureSignature => LtiError::Expired,
        K::InvalidIssuer => LtiError::WrongIssuer,
        K::InvalidAudience => LtiError::WrongAudience("aud does not name this tool's client id".into()),
        K::MissingRequiredClaim(c) => LtiError::MissingClaims(c.clone()),
        K::InvalidAlgorithm => LtiError::MalformedToken("not signed with RS256".into()),
        other => LtiError::MalformedToken(format!("{other:?}")),
    }
}

/// A key set as the platform or the operator gave it; keys other than RSA signing keys are ignored.
pub fn parse_key_set(v: Value) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_value(v).map_err(|e| format!("not a JWK set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the key set has no keys".into());
    }
    Ok(set)
}

/// The header's key id and that the token is RS256.
pub fn token_kid(token: &str) -> Result<Option<String>, LtiError> {
    if token.len() > MAX_ID_TOKEN {
        return Err(LtiError::MalformedToken("longer than 64 KiB".into()));
    }
    let h = jsonwebtoken::decode_header(token).map_err(|e| LtiError::MalformedToken(format!("{:?}", e.kind())))?;
    if h.alg != Algorithm::RS256 {
        return Err(LtiError::MalformedToken(format!("signed with {:?}; LTI 1.3 uses RS256", h.alg)));
    }
    Ok(h.kid)
}

fn find_key(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(k) => set.find(k).cloned(),
        // No kid: only a set of one key says which.
        None => (set.keys.len() == 1).then(|| set.keys[0].clone()),
    }
}

/// The platforms' key sets: fetched when first needed, kept [`KEY_SET_TTL`], fetched again at once for an
/// unknown `kid` (a platform that rotated its keys), at most every [`REFETCH_GAP`].
pub struct KeySets {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (JwkSet, Instant)>>,
}

impl Default for KeySets {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .expect("an HTTP client builds");
        Self { http, cache: Mutex::new(HashMap::new()) }
    }
}

impl KeySets {
    /// The key that checks a token of `platform` with key id `kid`.
    pub async fn key_for(&self, platform: &Platform, kid: Option<&str>) -> Result<DecodingKey, LtiError> {
        // The keys given at registration first; the URL for a key they lack (a platform that rotated its keys).
        let inline = match &platform.jwks {
            Some(set) => find_key(&parse_key_set(set.clone()).map_err(LtiError::KeySetUnavailable)?, kid),
            None => None,
        };
        let jwk = match (inline, &platform.jwks_url) {
            (Some(k), _) => Some(k),
            (None, Some(url)) => self.cached_key(platform, url, kid).await?,
            (None, None) if platform.jwks.is_some() => None,
            (None, None) => return Err(LtiError::KeySetUnavailable("the registration has no key set".into())),
        };
        let jwk = jwk.ok_or_else(|| LtiError::UnknownKey(kid.map(str::to_owned)))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| LtiError::KeySetUnavailable(format!("key {kid:?}: {e}")))
    }

    async fn cached_key(&self, platform: &Platform, url: &str, kid: Option<&str>) -> Result<Option<Jwk>, LtiError> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&platform.id).cloned();
        if let Some((set, at)) = &cached {
            let key = find_key(set, kid);
            if at.elapsed() < KEY_SET_TTL && (key.is_some() || at.elapsed() < REFETCH_GAP) {
                return Ok(key);
            }
        }
        let set = self.fetch(url).await?;
        let key = find_key(&set, kid);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(platform.id.clone(), (set, Instant::now()));
        Ok(key)
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, LtiError> {
        let unavailable = |e: String| LtiError::KeySetUnavailable(e);
        let mut r = self.http.get(url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if !r.status().is_success() {
            return Err(unavailable(format!("the key set URL answered {}", r.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| unavailable(e.without_url().to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_KEY_SET {
                return Err(unavailable("the key set is larger than 256 KiB".into()));
            }
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON: {e}")))?;
        parse_key_set(v).map_err(unavailable)
    }

    /// Forgets a platform's keys (its registration was removed).
    pub fn forget(&self, platform_id: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(platform_id);
    }
}

/// The tool's signing key: RS256, with its key id.
pub struct ToolKey {
    pub kid: String,
    encoding: EncodingKey,
    /// The public half as a JWK (published at `/lti/jwks`).
    pub public: Value,
}

impl std::fmt::Debug for ToolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ToolKey({})", self.kid)
    }
}

impl ToolKey {
    /// A new 2048-bit RSA key: its key id and its PKCS#8 PEM (to store).
    pub fn generate() -> (String, String) {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("an RSA key encodes").to_string();
        (hex::encode(rand::random::<[u8; 8]>()), pem)
    }

    pub fn from_pem(kid: &str, pem: &str) -> Result<Self, String> {
        use base64::Engine;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("tool key {kid}: {e}"))?;
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let public = serde_json::json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
            "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()),
        });
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| format!("tool key {kid}: {e}"))?;
        Ok(Self { kid: kid.to_owned(), encoding, public })
    }

    /// Signs `claims` as an RS256 JWT with this key's id.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(self.kid.clone());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, &self.encoding).expect("claims serialize and the key signs")
    }
}

/// The tool's public keys as a JWK set.
pub fn key_set(keys: &[ToolKey]) -> Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.public.clone()).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform(set: Value) -> Platform {
        Platform {
            id: "p1".into(),
            issuer: "https://lms.example.edu".into(),
            client_id: "tool-1".into(),
            deployment_ids: vec!["dep-1".into()],
            auth_url: "https://lms.example.edu/auth".into(),
            token_url: "https://lms.example.edu/token".into(),
            jwks_url: None,
            jwks: Some(set),
            created_at: chrono::Utc::now(),
        }
    }

    fn claims(now: i64) -> Value {
        json!({
            "iss": "https://lms.example.edu", "aud": "tool-1", "sub": "u-1", "iat": now, "exp": now + 300,
            "nonce": "n-1",
            CLAIM_MESSAGE_TYPE: "LtiResourceLinkRequest", CLAIM_VERSION: "1.3.0", CLAIM_DEPLOYMENT: "dep-1",
            CLAIM_ROLES: ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
            CLAIM_CONTEXT: {"id": "c-1", "title": "Intro"},
            "name": "Ada Lovelace",
        })
    }

    /// Every rule, each broken alone: the check names it.
    #[tokio::test]
    async fn id_tokens_are_checked_rule_by_rule() {
        let (kid, pem) = ToolKey::generate();
        let key = ToolKey::from_pem(&kid, &pem).unwrap();
        let (other_kid, other_pem) = ToolKey::generate();
        let other = ToolKey::from_pem(&other_kid, &other_pem).unwrap();
        let p = platform(key_set(std::slice::from_ref(&key)));
        let sets = KeySets::default();
        let now = chrono::Utc::now().timestamp();
        let check = |token: String| {
            let sets = &sets;
            let p = &p;
            async move {
                let kid = token_kid(&token)?;
                let k = sets.key_for(p, kid.as_deref()).await?;
                check_id_token(&token, &k, &Expect { platform: p, nonce: "n-1", now })
            }
        };
        let good = check(key.sign(&claims(now))).await.unwrap();
        assert_eq!(
            (good.sub.as_str(), good.context.id.as_str(), good.name.as_deref()),
            ("u-1", "c-1", Some("Ada Lovelace"))
        );
        assert_eq!(good.message, MessageType::ResourceLink);

        let with = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims(now);
            edit(&mut c);
            key.sign(&c)
        };
        assert_eq!(check(other.sign(&claims(now))).await, Err(LtiError::UnknownKey(Some(other_kid.clone()))));
        // The right kid, another key's signature.
        let forged = {
            let mut parts: Vec<String> = key.sign(&claims(now)).split('.').map(str::to_owned).collect();
            parts[2] = other.sign(&claims(now)).split('.').nth(2).unwrap().to_owned();
            parts.join(".")
        };
        assert_eq!(check(forged).await, Err(LtiError::BadSignature));
        assert_eq!(
            check(with(&|c| {
                c["exp"] = json!(now - 3600);
                c["iat"] = json!(now - 7200);
            }))
            .await,
            Err(LtiError::Expired)
        );
        assert_eq!(check(with(&|c| c["iat"] = json!(now + 3600))).await, Err(LtiError::Expired));
        // Within the leeway, a little skew passes.
        assert!(check(with(&|c| c["exp"] = json!(now - 30))).await.is_ok());
        assert_eq!(check(with(&|c| c["iss"] = json!("https://evil"))).await, Err(LtiError::WrongIssuer));
        assert!(matches!(check(with(&|c| c["aud"] = json!("tool-2"))).await, Err(LtiError::WrongAudience(_))));
        assert!(matches!(
            check(with(&|c| c["aud"] = json!(["tool-1", "tool-2"]))).await,
            Err(LtiError::WrongAudience(_))
        ));
        assert!(check(with(&|c| {
            c["aud"] = json!(["tool-1", "tool-2"]);
            c["azp"] = json!("tool-1");
        }))
        .await
        .is_ok());
        assert_eq!(check(with(&|c| c["nonce"] = json!("n-2"))).await, Err(LtiError::WrongNonce));
        assert_eq!(
            check(with(&|c| c[CLAIM_DEPLOYMENT] = json!("dep-9"))).await,
            Err(LtiError::UnknownDeployment("dep-9".into()))
        );
        assert!(matches!(check(with(&|c| c[CLAIM_VERSION] = json!("1.1"))).await, Err(LtiError::Unsupported(_))));
        assert!(matches!(
            check(with(&|c| c[CLAIM_MESSAGE_TYPE] = json!("LtiSubmissionReviewRequest"))).await,
            Err(LtiError::Unsupported(_))
        ));
        let missing = check(with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
            c.as_object_mut().unwrap().remove(CLAIM_ROLES);
        }))
        .await;
        assert_eq!(missing, Err(LtiError::MissingClaims(format!("sub, {CLAIM_ROLES}"))));
        assert!(matches!(
            check(with(&|c| c[CLAIM_MESSAGE_TYPE] = json!("LtiDeepLinkingRequest"))).await,
            Err(LtiError::MissingClaims(_))
        ));
        assert!(matches!(check("a.b".into()).await, Err(LtiError::MalformedToken(_))));
        assert!(matches!(check("x".repeat(MAX_ID_TOKEN + 1)).await, Err(LtiError::MalformedToken(_))));
    }
}
