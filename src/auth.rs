//! Who may do what: API keys (LMS backend, operators), launch links and browser sessions.
//!
//! - An API key is `wsd_<id>_<secret>`; only its SHA-256 is stored. Keys carry 256 random bits, so a fast hash is
//!   the right one (a slow password hash protects guessable secrets, not random ones).
//! - A launch link carries a token signed with HMAC-SHA256 under the service's signing key: student, expiry and a
//!   nonce; the store remembers used nonces until they expire, so each link works once.
//! - A session cookie is signed the same way (student and expiry) under a different purpose string, so a launch
//!   token can never pass for a session or the reverse.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::domain::StudentId;
use crate::store::{Reads, Store, StoreError};

pub use crate::domain::Role;

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
    store.insert_api_key(&k.id, role, &k.hash, label, now).await?;
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

/// Checks bearer keys against the store, remembering good ones for [`KEY_CACHE_TTL`] (by the injected clock) so
/// that a heartbeat costs no database read.
#[derive(Default)]
pub struct KeyVerifier {
    cache: Mutex<HashMap<String, (KeyIdentity, DateTime<Utc>)>>,
    outage: Outage,
}

/// Remembers for a moment that the database was found away, so the requests meanwhile answer from what is
/// remembered at once instead of each waiting for a connection that does not come. One request every
/// [`OUTAGE_RECHECK`] asks the store again.
#[derive(Default)]
struct Outage {
    until: Mutex<Option<DateTime<Utc>>>,
}

/// How long a found outage spares the store further questions.
const OUTAGE_RECHECK: Duration = Duration::from_secs(5);

/// How long a lookup waits for the store when something remembered could answer instead: longer, and the store
/// counts as away (the pool itself would wait for a connection far longer while the database is down).
const OUTAGE_WAIT: Duration = Duration::from_secs(1);

/// Runs a store lookup; with a fallback at hand, one that takes longer than [`OUTAGE_WAIT`] fails as unavailable.
async fn within_outage_wait<T>(
    has_fallback: bool,
    lookup: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if !has_fallback {
        return lookup.await;
    }
    tokio::time::timeout(OUTAGE_WAIT, lookup).await.unwrap_or(Err(StoreError::Db(sqlx::Error::PoolTimedOut)))
}

impl Outage {
    fn ongoing(&self, now: DateTime<Utc>) -> bool {
        self.until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| now < until)
    }

    fn seen(&self, now: DateTime<Utc>) {
        let until = now + chrono::Duration::from_std(OUTAGE_RECHECK).unwrap_or_default();
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }
}

/// Whether something remembered at `at` is still fresh at `now` for `ttl` (a clock that went back is not fresh).
fn fresh(at: DateTime<Utc>, now: DateTime<Utc>, ttl: Duration) -> bool {
    (now - at).to_std().is_ok_and(|age| age < ttl)
}

impl KeyVerifier {
    pub async fn verify(
        &self,
        store: &Reads,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyIdentity>, StoreError> {
        if !key.starts_with("wsd_") || key.len() > 200 {
            return Ok(None);
        }
        let hash = hash_key(key);
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&hash).cloned();
        if let Some((who, at)) = &cached {
            if fresh(*at, now, KEY_CACHE_TTL) || (self.outage.ongoing(now) && fresh(*at, now, STALE_IF_UNAVAILABLE)) {
                return Ok(Some(who.clone()));
            }
        }
        let found = match within_outage_wait(cached.is_some(), store.find_api_key(&hash)).await {
            Ok(found) => found,
            // The database is away: a key seen lately stays good (nobody can revoke one meanwhile), so heartbeats
            // and proxied requests go on; the store is asked again when it is back.
            Err(e) if e.is_unavailable() => {
                self.outage.seen(now);
                match cached {
                    Some((who, at)) if fresh(at, now, STALE_IF_UNAVAILABLE) => return Ok(Some(who)),
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match found.map(|(id, role)| KeyIdentity { id, role }) {
            Some(who) => {
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (who.clone(), now));
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

/// Where a student's sessions stand: a session or student token is valid only while both numbers are those it was
/// signed with. `all` moves on `session revoke --all`, `own` on `session revoke <id>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation {
    pub all: i64,
    pub own: i64,
}

impl Generation {
    fn encode(self) -> String {
        format!("{}-{}", self.all, self.own)
    }

    /// The inverse of `encode`, for every pair of numbers: the separator is the first `-` after the first
    /// character, since `all` may itself start with a minus sign (`-1-0`).
    fn decode(s: &str) -> Option<Self> {
        let at = s.char_indices().skip(1).find(|(_, c)| *c == '-')?.0;
        let (all, own) = (s.get(..at)?, s.get(at + 1..)?);
        Some(Self { all: all.parse().ok()?, own: own.parse().ok()? })
    }
}

/// A browser session or a student token once its signature and expiry are checked (not yet its generation:
/// that is [`SessionGenerations`]'s, which asks the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    pub student: StudentId,
    pub generation: Generation,
    pub expires_at: DateTime<Utc>,
}

/// What a signature is for. Each credential is signed under its own purpose and checked only under it, so one
/// kind can never pass for another (a student token is not a session cookie, a launch token is neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Single-use launch links (student, expiry, nonce).
    Launch,
    /// The browser session cookie: the IDE, the launcher, start.
    Session,
    /// `wss_` tokens for the JS SDK on LMS pages: status and heartbeats only.
    StudentToken,
    /// The `state` of an LTI login (platform, nonce, expiry).
    LtiState,
    /// A single-use link to an LTI course page (course, staff user, expiry, nonce).
    LtiStaffTicket,
    /// The cookie of staff on an LTI course page (course, staff user, expiry).
    LtiStaff,
    /// The form token of the course page's actions (course, staff user).
    LtiCsrf,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Launch => "launch",
            Purpose::Session => "session",
            Purpose::StudentToken => "student-token",
            Purpose::LtiState => "lti-state",
            Purpose::LtiStaffTicket => "lti-staff-ticket",
            Purpose::LtiStaff => "lti-staff",
            Purpose::LtiCsrf => "lti-csrf",
        }
    }
}

/// Longest credential accepted for parsing; real ones are about 120 characters.
const MAX_CREDENTIAL: usize = 512;

/// `now + ttl`, saturating at chrono's range instead of panicking.
fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Signs and checks launch tokens, session cookies and student tokens with the service's key.
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
    /// readable by the owner only; an existing file that others may read is refused). The key is never logged.
    pub fn load(settings: &Settings) -> Result<Self, KeyFileError> {
        if let Some(k) = &settings.auth.secret_key {
            return Ok(Self::new(k.as_bytes()));
        }
        let path = settings.secret_key_file();
        Ok(Self::new(read_or_create_key(&path)?.as_bytes()))
    }

    fn mac(&self, purpose: Purpose, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(purpose.label().as_bytes());
        for p in parts {
            mac.update(b"\n");
            mac.update(p.as_bytes());
        }
        mac
    }

    fn sign(&self, purpose: Purpose, parts: &[&str]) -> String {
        hex::encode(self.mac(purpose, parts).finalize().into_bytes())
    }

    fn verify(&self, purpose: Purpose, parts: &[&str], sig: &str) -> bool {
        hex::decode(sig).is_ok_and(|sig| self.mac(purpose, parts).verify_slice(&sig).is_ok())
    }

    /// Signs `fields` (none holds a `.`) for `purpose`: `<field>.<field>...<signature>`. For the LTI purposes.
    pub fn seal(&self, purpose: Purpose, fields: &[&str]) -> String {
        debug_assert!(fields.iter().all(|f| !f.contains('.')));
        let mut out = fields.join(".");
        out.push('.');
        out.push_str(&self.sign(purpose, fields));
        out
    }

    /// The `n` fields of a value [`Signer::seal`] made for `purpose`; `None` when altered, of another purpose or
    /// shape.
    pub fn unseal(&self, purpose: Purpose, value: &str, n: usize) -> Option<Vec<String>> {
        if value.len() > MAX_CREDENTIAL {
            return None;
        }
        let parts: Vec<&str> = value.split('.').collect();
        let (sig, fields) = parts.split_last()?;
        (fields.len() == n && self.verify(purpose, fields, sig)).then(|| fields.iter().map(|f| f.to_string()).collect())
    }

    /// A launch token for `student`, valid until `now + ttl`: `<student>.<expiry ms>.<nonce>.<signature>`.
    pub fn launch_token(&self, student: &StudentId, now: DateTime<Utc>, ttl: Duration) -> (String, DateTime<Utc>) {
        let exp = expiry(now, ttl);
        let exp_ms = exp.timestamp_millis().to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let sig = self.sign(Purpose::Launch, &[student.as_str(), &exp_ms, &nonce]);
        (format!("{student}.{exp_ms}.{nonce}.{sig}"), exp)
    }

    /// Checks a launch token's signature and expiry (not its single use: that is the store's).
    pub fn check_launch(&self, token: &str, now: DateTime<Utc>) -> Result<LaunchClaims, TokenError> {
        if token.len() > MAX_CREDENTIAL {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(student), Some(exp_ms), Some(nonce), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if !self.verify(Purpose::Launch, &[student, exp_ms, nonce], sig) {
            return Err(TokenError::BadSignature);
        }
        let student = StudentId::parse(student).map_err(|_| TokenError::Malformed)?;
        let exp: i64 = exp_ms.parse().map_err(|_| TokenError::Malformed)?;
        let expires_at = crate::store::from_ms(exp);
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(LaunchClaims { student, expires_at, nonce: nonce.to_owned() })
    }

    /// A credential of `purpose` (session or student token) for `student`:
    /// `<student>.<generation>.<expiry ms>.<signature>`.
    pub fn credential(
        &self,
        purpose: Purpose,
        student: &StudentId,
        generation: Generation,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> (String, DateTime<Utc>) {
        let exp = expiry(now, ttl);
        let exp_ms = exp.timestamp_millis().to_string();
        let generation = generation.encode();
        let sig = self.sign(purpose, &[student.as_str(), &generation, &exp_ms]);
        (format!("{student}.{generation}.{exp_ms}.{sig}"), exp)
    }

    /// The claims of a credential signed for `purpose` and not yet expired. A credential of another purpose,
    /// however valid there, is `None` here.
    pub fn check_credential(&self, purpose: Purpose, value: &str, now: DateTime<Utc>) -> Option<SessionClaims> {
        if value.len() > MAX_CREDENTIAL || purpose == Purpose::Launch {
            return None;
        }
        let mut parts = value.split('.');
        let (Some(student), Some(generation), Some(exp_ms), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !self.verify(purpose, &[student, generation, exp_ms], sig) {
            return None;
        }
        let exp: i64 = exp_ms.parse().ok()?;
        (now.timestamp_millis() < exp).then_some(())?;
        Some(SessionClaims {
            student: StudentId::parse(student).ok()?,
            generation: Generation::decode(generation)?,
            expires_at: crate::store::from_ms(exp),
        })
    }
}

/// How long a key or a session generation seen before stays good while the database cannot be reached.
pub const STALE_IF_UNAVAILABLE: Duration = Duration::from_secs(300);

/// How long a student's session generation is trusted from memory before the store is asked again: a
/// revocation made by another process (the CLI) takes effect within this time; one made through this server's
/// admin route at once.
pub const GENERATION_CACHE_TTL: Duration = Duration::from_secs(2);

/// The current session generation of each student, read from the store and remembered for
/// [`GENERATION_CACHE_TTL`] (by the injected clock), so a proxied request costs no database read.
#[derive(Default)]
pub struct SessionGenerations {
    cache: Mutex<HashMap<StudentId, (Generation, DateTime<Utc>)>>,
    outage: Outage,
}

impl SessionGenerations {
    /// The student's generation now.
    pub async fn current(
        &self,
        store: &Reads,
        student: &StudentId,
        now: DateTime<Utc>,
    ) -> Result<Generation, StoreError> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(student).copied();
        if let Some((g, at)) = cached {
            if fresh(at, now, GENERATION_CACHE_TTL)
                || (self.outage.ongoing(now) && fresh(at, now, STALE_IF_UNAVAILABLE))
            {
                return Ok(g);
            }
        }
        let g = match within_outage_wait(cached.is_some(), store.session_generation(student)).await {
            Ok(g) => g,
            // As for keys: while the database is away nobody can end a session, so the last generation seen holds.
            Err(e) if e.is_unavailable() => {
                self.outage.seen(now);
                match cached {
                    Some((g, at)) if fresh(at, now, STALE_IF_UNAVAILABLE) => return Ok(g),
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(student.clone(), (g, now));
        Ok(g)
    }

    /// Whether the claims' generation is the student's current one.
    pub async fn is_current(
        &self,
        store: &Reads,
        claims: &SessionClaims,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.current(store, &claims.student, now).await? == claims.generation)
    }

    /// Forgets what is remembered (after a revocation in this process).
    pub fn forget(&self, student: Option<&StudentId>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match student {
            Some(s) => {
                cache.remove(s);
            }
            None => cache.clear(),
        }
    }
}

/// Why the signing key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("signing key file {0} holds fewer than 32 characters")]
    TooShort(PathBuf),
    #[error(
        "signing key file {path} may be read by other users (mode {mode:04o}); make it owner-only: chmod 600 {path}"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read the signing key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create the signing key file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
}

/// Reads the key file, or creates it with 32 random bytes (hex) and mode 0600 when it does not exist. A file that
/// group or others may read is refused: the key signs every session.
fn read_or_create_key(path: &Path) -> Result<String, KeyFileError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let read_err = |source| KeyFileError::Read { path: path.to_path_buf(), source };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen { path: path.to_path_buf(), mode });
            }
            let k = std::fs::read_to_string(path).map_err(read_err)?;
            if k.trim().len() < 32 {
                return Err(KeyFileError::TooShort(path.to_path_buf()));
            }
            return Ok(k.trim().to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_err(e)),
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    let create_err = |source| KeyFileError::Create { path: path.to_path_buf(), source };
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(mut f) => {
            f.write_all(key.as_bytes()).map_err(create_err)?;
            f.sync_all().map_err(create_err)?;
            tracing::info!(path = ?path, "created a new signing key file");
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_create_key(path),
        Err(e) => Err(create_err(e)),
    }
}

/// The name of the browser session cookie over plain HTTP (development).
pub const SESSION_COOKIE: &str = "workspaced_session";

/// The name of the session cookie when it is `Secure`: the `__Host-` prefix makes the browser refuse it unless it
/// was set by this host, over HTTPS, for `Path=/` and without `Domain`, so a sibling subdomain (another student's
/// host in host mode) cannot plant or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-workspaced_session";

/// The session cookie's name for this configuration.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// Every value of cookie `name` in a `Cookie` header, in order. A browser sends several cookies of one name when
/// they differ in path or domain; a planted one may come first, so callers try them all.
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').map(str::trim).filter_map(move |kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
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
    fn each_credential_passes_only_for_its_own_purpose_and_sessions_expire() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let alice = StudentId::parse("alice").unwrap();
        let g = Generation { all: 2, own: 5 };
        let (t, _) = s.launch_token(&alice, now(), Duration::from_secs(60));
        let parts: Vec<&str> = t.split('.').collect();
        let as_session = format!("{}.{}.{}.{}", parts[0], "0-0", parts[1], parts[3]);
        assert_eq!(s.check_credential(Purpose::Session, &as_session, now()), None);
        let (c, exp) = s.credential(Purpose::Session, &alice, g, now(), Duration::from_secs(10));
        let claims = s.check_credential(Purpose::Session, &c, now()).unwrap();
        assert_eq!((claims.student.as_str(), claims.generation, claims.expires_at), ("alice", g, exp));
        assert_eq!(s.check_credential(Purpose::Session, &c, exp), None, "expired");
        assert_eq!(s.check_credential(Purpose::Session, &c.replacen("alice", "alicf", 1), now()), None);
        assert_eq!(s.check_credential(Purpose::Session, &c.replacen("2-5", "2-6", 1), now()), None);
        // A student token (the SDK's) is no session cookie, and a session is no student token.
        assert_eq!(s.check_credential(Purpose::StudentToken, &c, now()), None);
        let (st, _) = s.credential(Purpose::StudentToken, &alice, g, now(), Duration::from_secs(10));
        assert_eq!(s.check_credential(Purpose::Session, &st, now()), None);
        assert!(s.check_credential(Purpose::StudentToken, &st, now()).is_some());
        assert_eq!(s.check_credential(Purpose::Launch, &st, now()), None);
        assert_eq!(s.check_launch(&st, now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn expiries_saturate_and_oversized_credentials_are_refused_unparsed() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let alice = StudentId::parse("alice").unwrap();
        let (_, exp) = s.credential(Purpose::Session, &alice, Generation::default(), now(), Duration::MAX);
        assert_eq!(exp, DateTime::<Utc>::MAX_UTC);
        let huge = "a".repeat(MAX_CREDENTIAL + 1);
        assert_eq!(s.check_credential(Purpose::Session, &huge, now()), None);
        assert_eq!(s.check_launch(&huge, now()), Err(TokenError::Malformed));
    }

    /// Found by `tests/fuzz.rs` (`0a.-1-0.1000.<sig>` did not verify): `-1-0` was split at its first `-`.
    #[test]
    fn every_generation_round_trips_negative_ones_included() {
        for (all, own) in [(0, 0), (-1, 0), (0, -1), (-5, -3), (i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (12, 7)] {
            let g = Generation { all, own };
            assert_eq!(Generation::decode(&g.encode()), Some(g), "{}", g.encode());
        }
        for bad in ["", "-", "1", "1-", "-1", "--1", "1--", "a-1", "1-b", "1-2-3"] {
            assert_eq!(Generation::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_key_file_that_others_may_read_is_refused_and_a_new_one_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("new.key");
        read_or_create_key(&made).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o600);
        let open = dir.path().join("open.key");
        std::fs::write(&open, "x".repeat(64)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_or_create_key(&open).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn keys_have_the_documented_shape_and_roles_nest() {
        let k = generate_key();
        assert!(k.key.starts_with(&format!("wsd_{}_", k.id)));
        assert_eq!(k.key.len(), 4 + 8 + 1 + 64);
        assert_eq!(k.hash, hash_key(&k.key));
        assert!(Role::Admin.allows(Role::Lms) && !Role::Lms.allows(Role::Admin));
        let all: Vec<&str> =
            cookie_values("a=1; workspaced_session=x.y; b=2; workspaced_session=z", SESSION_COOKIE).collect();
        assert_eq!(all, ["x.y", "z"]);
        assert_eq!(cookie_values("workspaced_sessionx=1", SESSION_COOKIE).count(), 0);
    }
}
