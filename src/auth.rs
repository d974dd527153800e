//! Who may do what: API keys (LMS backend, operators), launch links and browser sessions.
//!
//! - An API key is `wsd_<id>_<secret>`; only its SHA-256 is stored. Keys carry 256 random bits, so a fast hash is
//!   the right one (a slow password hash protects guessable secrets, not random ones).
//! - A launch link carries a token signed with HMAC-SHA256 under the service's signing key: student, expiry and a
//!   nonce; the store remembers used nonces until they expire, so each link works once.
//! - A session cookie is signed the same way (student and expiry) under a different purpose string, so a launch
//!   token can never pass for a session or the reverse.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::domain::StudentId;
use crate::store::{Store, StoreError};

/// What a key may do. An admin key may do everything an LMS key may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The LMS backend: workspaces, launch links, heartbeats, events.
    Lms,
    /// Operators: also export, migrate, metrics and keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lms => "lms",
            Role::Admin => "admin",
        }
    }

    /// Whether a key of this role may call a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lms" => Ok(Role::Lms),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}; use lms or admin")),
        }
    }
}

/// A newly made key: the secret (shown once) and what is stored.
pub struct NewKey {
    pub id: String,
    pub key: String,
    pub hash: String,
}

/// Makes a key: `wsd_` + 8 hex id + `_` + 64 hex secret.
pub fn generate_key() -> NewKey {
    let id = hex::encode(rand::random::<[u8; 4]>());
    let key = format!("wsd_{id}_{}", hex::encode(rand::random::<[u8; 32]>()));
    let hash = hash_key(&key);
    NewKey { id, key, hash }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates and stores a key; returns it (the only time it is seen).
pub async fn create_key(store: &Store, role: Role, label: &str, now: DateTime<Utc>) -> Result<NewKey, StoreError> {
    let k = generate_key();
    store.insert_api_key(&k.id, role.as_str(), &k.hash, label, now).await?;
    Ok(k)
}

/// A verified caller of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: String,
    pub role: Role,
}

/// How long a verified key is trusted from memory before the store is asked again; a revocation takes effect
/// within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Checks bearer keys against the store, remembering good ones for [`KEY_CACHE_TTL`] so that a heartbeat costs no
/// database read.
#[derive(Default)]
pub struct KeyVerifier {
    cache: Mutex<HashMap<String, (KeyIdentity, Instant)>>,
}

impl KeyVerifier {
    pub async fn verify(&self, store: &Store, key: &str) -> Result<Option<KeyIdentity>, StoreError> {
        if !key.starts_with("wsd_") || key.len() > 200 {
            return Ok(None);
        }
        let hash = hash_key(key);
        if let Some((who, at)) = self.cache.lock().expect("key cache").get(&hash) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(Some(who.clone()));
            }
        }
        let found = store.find_api_key(&hash).await?;
        let mut cache = self.cache.lock().expect("key cache");
        match found.and_then(|(id, role)| role.parse::<Role>().ok().map(|role| KeyIdentity { id, role })) {
            Some(who) => {
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (who.clone(), Instant::now()));
                Ok(Some(who))
            }
            None => {
                cache.remove(&hash);
                Ok(None)
            }
        }
    }
}

/// Why a launch token was refused. All of them answer 401; the kind goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("already used")]
    Reused,
}

/// A launch token's contents once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchClaims {
    pub student: StudentId,
    pub expires_at: DateTime<Utc>,
    pub nonce: String,
}

/// Signs and checks launch tokens and session cookies with the service's key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The signing key from settings: `secret_key`, else the key file (created with a random key when absent,
    /// readable by the owner only). The key itself is never logged.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(k) = &settings.auth.secret_key {
            return Ok(Self::new(k.as_bytes()));
        }
        let path = settings.secret_key_file();
        Ok(Self::new(read_or_create_key(&path)?.as_bytes()))
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(purpose.as_bytes());
        for p in parts {
            mac.update(b"\n");
            mac.update(p.as_bytes());
        }
        mac
    }

    /// A launch token for `student`, valid until `now + ttl`: `<student>.<expiry ms>.<nonce>.<signature>`.
    pub fn launch_token(&self, student: &StudentId, now: DateTime<Utc>, ttl: Duration) -> (String, DateTime<Utc>) {
        let exp = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
        let exp_ms = exp.timestamp_millis().to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let sig = hex::encode(self.mac("launch", &[student.as_str(), &exp_ms, &nonce]).finalize().into_bytes());
        (format!("{student}.{exp_ms}.{nonce}.{sig}"), exp)
    }

    /// Checks a launch token's signature and expiry (not its single use: that is the store's).
    pub fn check_launch(&self, token: &str, now: DateTime<Utc>) -> Result<LaunchClaims, TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [student, exp_ms, nonce, sig] = parts[..] else { return Err(TokenError::Malformed) };
        let sig = hex::decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac("launch", &[student, exp_ms, nonce]).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let student = StudentId::parse(student).map_err(|_| TokenError::Malformed)?;
        let exp: i64 = exp_ms.parse().map_err(|_| TokenError::Malformed)?;
        let expires_at = crate::store::from_ms(exp);
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(LaunchClaims { student, expires_at, nonce: nonce.to_owned() })
    }

    /// A session cookie value for `student`: `<student>.<expiry ms>.<signature>`.
    pub fn session(&self, student: &StudentId, now: DateTime<Utc>, ttl: Duration) -> String {
        let exp = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
        let exp_ms = exp.timestamp_millis().to_string();
        let sig = hex::encode(self.mac("session", &[student.as_str(), &exp_ms]).finalize().into_bytes());
        format!("{student}.{exp_ms}.{sig}")
    }

    /// The student of a valid, unexpired session cookie value.
    pub fn check_session(&self, value: &str, now: DateTime<Utc>) -> Option<StudentId> {
        let parts: Vec<&str> = value.split('.').collect();
        let [student, exp_ms, sig] = parts[..] else { return None };
        let sig = hex::decode(sig).ok()?;
        self.mac("session", &[student, exp_ms]).verify_slice(&sig).ok()?;
        let exp: i64 = exp_ms.parse().ok()?;
        (now.timestamp_millis() < exp).then_some(())?;
        StudentId::parse(student).ok()
    }
}

/// Reads the key file, or creates it with 32 random bytes (hex) and mode 0600 when it does not exist.
fn read_or_create_key(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(k) if k.trim().len() >= 32 => return Ok(k.trim().to_owned()),
        Ok(_) => anyhow::bail!("signing key file {} holds fewer than 32 characters", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read the signing key file {}: {e}", path.display()),
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(mut f) => {
            f.write_all(key.as_bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created a new signing key file");
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_create_key(path),
        Err(e) => anyhow::bail!("cannot create the signing key file {}: {e}", path.display()),
    }
}

/// The name of the browser session cookie.
pub const SESSION_COOKIE: &str = "workspaced_session";

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        crate::store::from_ms(1_800_000_000_000)
    }

    #[test]
    fn launch_token_round_trips_and_rejects_tampering_and_expiry() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let alice = StudentId::parse("alice").unwrap();
        let (t, exp) = s.launch_token(&alice, now(), Duration::from_secs(60));
        let c = s.check_launch(&t, now()).unwrap();
        assert_eq!((c.student.as_str(), c.expires_at), ("alice", exp));
        assert_eq!(s.check_launch(&t, exp), Err(TokenError::Expired));
        let forged = t.replacen("alice", "bob", 1);
        assert_eq!(s.check_launch(&forged, now()), Err(TokenError::BadSignature));
        assert_eq!(s.check_launch("a.b", now()), Err(TokenError::Malformed));
        let other = Signer::new(b"another key, another key, another key");
        assert_eq!(other.check_launch(&t, now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_launch_token_is_not_a_session_and_sessions_expire() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let alice = StudentId::parse("alice").unwrap();
        let (t, _) = s.launch_token(&alice, now(), Duration::from_secs(60));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(s.check_session(&format!("{}.{}.{}", parts[0], parts[1], parts[3]), now()), None);
        let c = s.session(&alice, now(), Duration::from_secs(10));
        assert_eq!(s.check_session(&c, now()), Some(alice.clone()));
        assert_eq!(s.check_session(&c, now() + chrono::Duration::seconds(10)), None);
        assert_eq!(s.check_session(&c.replacen("alice", "alicf", 1), now()), None);
    }

    #[test]
    fn keys_have_the_documented_shape_and_roles_nest() {
        let k = generate_key();
        assert!(k.key.starts_with(&format!("wsd_{}_", k.id)));
        assert_eq!(k.key.len(), 4 + 8 + 1 + 64);
        assert_eq!(k.hash, hash_key(&k.key));
        assert!(Role::Admin.allows(Role::Lms) && !Role::Lms.allows(Role::Admin));
        assert_eq!(cookie_value("a=1; workspaced_session=x.y.z; b=2", SESSION_COOKIE), Some("x.y.z"));
        assert_eq!(cookie_value("workspaced_sessionx=1", SESSION_COOKIE), None);
    }
}
