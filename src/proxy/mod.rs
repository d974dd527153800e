//! The reverse proxy to each student's IDE: HTTP with streamed bodies both ways (a pooled hyper client) and
//! WebSocket (the upgrade is forwarded, then bytes are copied both ways). It knows nothing of sessions or students:
//! `http::ide` decides who may reach which IDE; this module only forwards to the host and port of its route, and it
//! never calls Docker.

pub mod path;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::ProxySettings;
use crate::domain::{is_code_server_cookie, Credential};

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Nothing listens on the port (the container is gone or not ready).
    #[error("the IDE does not answer: {0}")]
    Unreachable(String),
    /// The IDE took longer than the proxy timeout to send its response headers.
    #[error("the IDE did not answer within {0:?}")]
    Timeout(Duration),
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// What the proxy adds about the original request.
pub struct Forwarded<'a> {
    /// The path prefix the IDE is served under (`/w/alice`), prepended to absolute redirects; empty in host mode.
    pub prefix: &'a str,
    /// The path and query to send upstream: without the prefix, or with it when `full_path`.
    pub path_and_query: String,
    /// The IDE knows its prefix (`proxy_path = full`, as under JupyterHub's proxy): the path goes upstream whole,
    /// its redirects already name the prefix, and no `X-Forwarded-Prefix` is sent.
    pub full_path: bool,
    pub client_addr: Option<SocketAddr>,
    /// `http` or `https`, as the browser sees this service.
    pub proto: &'a str,
    /// Cookies to leave out of what the IDE sees (the service's session cookies, under every name they take).
    pub strip_cookies: &'a [&'a str],
    /// Whose IDE this is (the student id): the cookies forwarded are those this IDE set.
    pub owner: &'a str,
    /// The IDE's secret as the request carries it (see `domain::IdeAuth`); only the proxy adds it.
    pub credential: Option<Credential>,
    /// Held until the exchange is over (the response body sent, the WebSocket closed): a per-student connection
    /// slot, say.
    pub hold: Option<Box<dyn Send + Sync>>,
}

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    settings: ProxySettings,
    websockets: Arc<AtomicI64>,
    /// The names of the cookies each IDE set (by owner): the only cookies of the browser's that reach it, so that
    /// cookies of the parent domain (the university's single sign-on, a classmate's tossed cookie) never do.
    cookie_jar: Arc<dyn CookieJar>,
}

/// Where the proxy keeps the names of the cookies each IDE set, learnt from its `Set-Cookie`s (the store, so a
/// restart and every replica forward the same ones). Bounded per owner by the jar; a failure is the jar's to log,
/// and the proxy goes on with what it has.
#[async_trait::async_trait]
pub trait CookieJar: Send + Sync {
    /// The cookie names `owner`'s IDE has set.
    async fn names(&self, owner: &str) -> BTreeSet<String>;
    /// Remembers `names`, just set by `owner`'s IDE. Cheap when none is new (no write).
    async fn learn(&self, owner: &str, names: &[String]);
}

/// Headers meaningful only for one connection (RFC 9110 section 7.6.1); never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

impl Proxy {
    pub fn new(settings: ProxySettings, cookie_jar: Arc<dyn CookieJar>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { client, settings, websockets: Arc::new(AtomicI64::new(0)), cookie_jar }
    }

    /// Remembers the names of the cookies the IDE sets in this (already filtered) response.
    async fn learn_cookies(&self, owner: &str, h: &HeaderMap) {
        let names: Vec<String> =
            h.get_all(header::SET_COOKIE).iter().filter_map(|v| cookie_name(v.to_str().ok()?)).collect();
        if !names.is_empty() {
            self.cookie_jar.learn(owner, &names).await;
        }
    }

    /// Forwards `req` to the IDE on `host:port` (the route's: `127.0.0.1`, or the node a Swarm task runs on; the
    /// store keeps only checked hosts, see `domain::parse_upstream_host`).
    pub async fn forward(
        &self,
        host: &str,
        port: u16,
        req: Request,
        fwd: Forwarded<'_>,
    ) -> Result<Response, ProxyError> {
        let target = crate::domain::authority(host, port);
        if is_upgrade(req.headers()) {
            return self.forward_upgrade(&target, req, fwd).await;
        }
        let max = self.settings.max_body;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::TooLarge(max));
        }
        let (mut parts, body) = req.into_parts();
        parts.uri = upstream_uri(&target, &upstream_path(&fwd))?;
        prepare_request_headers(&mut parts.headers, &fwd, &self.cookie_jar.names(fwd.owner).await);
        let body = Body::new(http_body_util::Limited::new(body, max as usize));
        let upstream = Request::from_parts(parts, body);
        let resp = match tokio::time::timeout(self.settings.timeout, self.client.request(upstream)).await {
            Err(_) => return Err(ProxyError::Timeout(self.settings.timeout)),
            Ok(Err(e)) if e.is_connect() => return Err(ProxyError::Unreachable(e.to_string())),
            Ok(Err(e)) if over_limit(&e) => return Err(ProxyError::TooLarge(max)),
            Ok(Err(e)) => return Err(ProxyError::Unreachable(format!("{e}: {:?}", std::error::Error::source(&e)))),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        strip_origin_wide(&mut parts.headers, &fwd);
        self.learn_cookies(fwd.owner, &parts.headers).await;
        rewrite_location(&mut parts.headers, &target, fwd.prefix, fwd.full_path);
        let body = match fwd.hold {
            // The slot is given back when the body is done or dropped (the client went away).
            Some(hold) => Body::from_stream(Body::new(body).into_data_stream().map(move |chunk| {
                let _held = &hold;
                chunk
            })),
            None => Body::new(body),
        };
        Ok(Response::from_parts(parts, body))
    }

    /// A WebSocket (or any `Upgrade`): its own connection to the IDE; after `101` both upgraded streams are joined.
    async fn forward_upgrade(
        &self,
        upstream: &str,
        mut req: Request,
        mut fwd: Forwarded<'_>,
    ) -> Result<Response, ProxyError> {
        let hold = fwd.hold.take();
        let client_upgrade = hyper::upgrade::on(&mut req);
        let upgrade_to = req.headers().get(header::UPGRADE).cloned();
        let (mut parts, _) = req.into_parts();
        parts.uri = upstream_uri(upstream, &upstream_path(&fwd))?;
        prepare_request_headers(&mut parts.headers, &fwd, &self.cookie_jar.names(fwd.owner).await);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = upgrade_to {
            parts.headers.insert(header::UPGRADE, u);
        }
        // HTTP/1.1 request line takes the path only.
        parts.uri = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/").parse().expect("valid path");
        let upstream_req = Request::from_parts(parts, http_body_util::Empty::<axum::body::Bytes>::new());

        let timeout = self.settings.timeout;
        let connect = tokio::time::timeout(self.settings.connect_timeout, tokio::net::TcpStream::connect(upstream));
        let stream = match connect.await {
            Err(_) => return Err(ProxyError::Unreachable("connect timed out".into())),
            Ok(Err(e)) => return Err(ProxyError::Unreachable(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut resp = match tokio::time::timeout(timeout, sender.send_request(upstream_req)).await {
            Err(_) => return Err(ProxyError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ProxyError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            strip_origin_wide(&mut parts.headers, &fwd);
            self.learn_cookies(fwd.owner, &parts.headers).await;
            rewrite_location(&mut parts.headers, upstream, fwd.prefix, fwd.full_path);
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let counter = self.websockets.clone();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::debug!(client = ?c.err(), upstream = ?u.err(), "websocket upgrade did not complete");
                    return;
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            crate::metrics::proxy_websockets(counter.load(Ordering::Relaxed));
            let _held = hold;
            join_streams(TokioIo::new(client), TokioIo::new(upstream)).await;
            counter.fetch_sub(1, Ordering::Relaxed);
            crate::metrics::proxy_websockets(counter.load(Ordering::Relaxed));
        });
        let mut headers = resp.headers().clone();
        strip_origin_wide(&mut headers, &fwd);
        self.learn_cookies(fwd.owner, &headers).await;
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in &headers {
            out = out.header(k, v);
        }
        Ok(out.body(Body::empty()).expect("valid response"))
    }
}

/// How long the other direction of an upgraded connection may go on after one side has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Copies bytes both ways until one side closes, then gives the other direction [`CLOSE_GRACE`] to finish (a
/// closing handshake) and drops both. Not `copy_bidirectional`, which waits for both sides to close: an IDE that
/// keeps its half open after the browser left would hold the connection forever.
async fn join_streams<A, B>(a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(CLOSE_GRACE, down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(CLOSE_GRACE, up).await; }
    }
}

/// Whether a failed request failed because its (chunked) body went over the size limit.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `upstream` is `host:port` ([`crate::domain::authority`]).
fn upstream_uri(upstream: &str, path_and_query: &str) -> Result<Uri, ProxyError> {
    format!("http://{upstream}{path_and_query}")
        .parse()
        .map_err(|e| ProxyError::BadRequest(format!("cannot forward this path: {e}")))
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
    h.remove(header::UPGRADE);
}

/// The path and query sent upstream: the request's, with the IDE's secret in the query when that is how it goes
/// (any parameter of the client's by that name is dropped first).
fn upstream_path(fwd: &Forwarded<'_>) -> String {
    let Some(Credential::Query { param, value }) = &fwd.credential else { return fwd.path_and_query.clone() };
    let (path, query) = fwd.path_and_query.split_once('?').unwrap_or((&fwd.path_and_query, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| path::percent_decode(kv.split_once('=').map_or(*kv, |(k, _)| k)) != *param)
        .collect();
    let ours = format!("{param}={value}");
    pairs.push(&ours);
    format!("{path}?{}", pairs.join("&"))
}

/// The name of a `Set-Cookie` value.
fn cookie_name(set_cookie: &str) -> Option<String> {
    let (name, _) = set_cookie.split(';').next()?.split_once('=')?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// What the IDE receives: no hop-by-hop headers, none of the service's credentials, only the cookies it set
/// itself (`ide_cookies`), the IDE's secret (added here and nowhere else), and forwarding headers set by the proxy.
fn prepare_request_headers(h: &mut HeaderMap, fwd: &Forwarded<'_>, ide_cookies: &BTreeSet<String>) {
    strip_hop_by_hop(h);
    // The service's own credentials stay here.
    h.remove(header::AUTHORIZATION);
    let mut cookies: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| {
            let name = kv.split_once('=').map_or(*kv, |(n, _)| n).trim();
            !kv.is_empty()
                && !fwd.strip_cookies.contains(&name)
                && !is_code_server_cookie(name)
                && ide_cookies.contains(name)
        })
        .map(str::to_owned)
        .collect();
    match &fwd.credential {
        Some(Credential::Cookie { name, value }) => cookies.push(format!("{name}={value}")),
        Some(Credential::Header { name, value }) => {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                h.insert(name, value);
            }
        }
        Some(Credential::Query { .. }) | None => {}
    }
    h.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
    if let Some(addr) = fwd.client_addr {
        let ip = addr.ip().to_string();
        let value = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert("x-forwarded-for", v);
        }
    }
    // Set here, never taken from the client: a browser could send any value, and the IDE builds URLs from them.
    h.insert("x-forwarded-proto", HeaderValue::from_static(if fwd.proto == "https" { "https" } else { "http" }));
    h.remove("x-forwarded-host");
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert("x-forwarded-host", host);
    }
    // Ours alone too: an IDE that builds its URLs from it must not be pointed elsewhere by the client.
    h.remove("x-forwarded-prefix");
    if !fwd.prefix.is_empty() && !fwd.full_path {
        if let Ok(v) = HeaderValue::from_str(fwd.prefix) {
            h.insert("x-forwarded-prefix", v);
        }
    }
}

/// Response headers that act on the whole origin, not on the student's own IDE: a service worker scope wider than
/// the IDE, wiping the origin's storage and cookies, CORS grants (workspaced decides those), and cookies that are
/// workspaced's own or reach beyond the student's prefix (path mode) or host (a `Domain` attribute). In path mode
/// every IDE shares the service's origin, so whatever a student's IDE or web server answers must stay inside it.
fn strip_origin_wide(h: &mut HeaderMap, fwd: &Forwarded<'_>) {
    for name in ["service-worker-allowed", "clear-site-data"] {
        h.remove(name);
    }
    let cors: Vec<header::HeaderName> =
        h.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
    for k in cors {
        h.remove(k);
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| v.to_str().is_ok_and(|c| cookie_stays_inside(c, fwd)))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// Whether a `Set-Cookie` from the IDE stays inside the student's own workspace: not one of workspaced's names, no
/// `Domain` (which would reach sibling hosts), and in path mode a `Path` under the student's prefix.
fn cookie_stays_inside(cookie: &str, fwd: &Forwarded<'_>) -> bool {
    let mut parts = cookie.split(';').map(str::trim);
    let name = parts.next().and_then(|kv| kv.split_once('=')).map_or("", |(n, _)| n.trim());
    // The IDE's session cookie holds its secret, which only the proxy presents: the browser never gets it.
    if name.is_empty()
        || fwd.strip_cookies.iter().any(|ours| ours.eq_ignore_ascii_case(name))
        || is_code_server_cookie(name)
    {
        return false;
    }
    let mut path = None;
    for attr in parts {
        let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
        if k.trim().eq_ignore_ascii_case("domain") {
            return false;
        }
        if k.trim().eq_ignore_ascii_case("path") {
            path = Some(v.trim());
        }
    }
    if fwd.prefix.is_empty() {
        return true;
    }
    // Path mode: a cookie without `Path` belongs to the request's folder, which is under the prefix.
    path.is_none_or(|p| p == fwd.prefix || p.starts_with(&format!("{}/", fwd.prefix)))
}

/// An IDE that redirects to an absolute path (`/login`) or to its own address means a path under our prefix. With
/// `full_path` the IDE knows its prefix: a path already under it is kept as is, any other still gets the prefix, so a
/// redirect never leaves the student's workspace for one of the service's own paths.
fn rewrite_location(h: &mut HeaderMap, upstream: &str, prefix: &str, full_path: bool) {
    let Some(loc) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()) else { return };
    let own = format!("http://{upstream}");
    let path = if let Some(rest) = loc.strip_prefix(&own) {
        Some(if rest.is_empty() { "/".to_owned() } else { rest.to_owned() })
    } else if loc.starts_with('/') && !loc.starts_with("//") {
        Some(loc.to_owned())
    } else {
        None
    };
    if let Some(path) = path {
        let inside = !prefix.is_empty()
            && (path == prefix || path.starts_with(&format!("{prefix}/")) || path.starts_with(&format!("{prefix}?")));
        let path = if full_path && inside { path } else { format!("{prefix}{path}") };
        if let Ok(v) = HeaderValue::from_str(&path) {
            h.insert(header::LOCATION, v);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A cookie jar in memory, for tests of the proxy alone.
    #[derive(Default)]
    pub struct MemoryJar(std::sync::Mutex<std::collections::HashMap<String, BTreeSet<String>>>);

    #[async_trait::async_trait]
    impl CookieJar for MemoryJar {
        async fn names(&self, owner: &str) -> BTreeSet<String> {
            self.0.lock().unwrap().get(owner).cloned().unwrap_or_default()
        }
        async fn learn(&self, owner: &str, names: &[String]) {
            self.0.lock().unwrap().entry(owner.to_owned()).or_default().extend(names.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_session_cookie_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer wsd_x".parse().unwrap());
        h.insert(header::COOKIE, "a=1; workspaced_session=s.1.f; b=2".parse().unwrap());
        h.insert(header::HOST, "lms.example:8443".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        let fwd = Forwarded {
            prefix: "/w/alice",
            path_and_query: "/".into(),
            full_path: false,
            client_addr: Some("10.0.0.7:5555".parse().unwrap()),
            proto: "https",
            strip_cookies: &["workspaced_session", "__Host-workspaced_session"],
            hold: None,
            owner: "alice",
            credential: None,
        };
        let ide_cookies = BTreeSet::from(["a".to_owned(), "b".to_owned(), "workspaced_session".to_owned()]);
        prepare_request_headers(&mut h, &fwd, &ide_cookies);
        for gone in ["connection", "x-private", "keep-alive", "te", "authorization"] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "lms.example:8443");
        assert_eq!(h["x-forwarded-prefix"], "/w/alice");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn headers_that_act_on_the_whole_origin_never_leave_the_proxy() {
        let fwd = Forwarded {
            prefix: "/w/alice",
            path_and_query: "/".into(),
            full_path: false,
            client_addr: None,
            proto: "http",
            strip_cookies: &["workspaced_session", "__Host-workspaced_session"],
            hold: None,
            owner: "alice",
            credential: None,
        };
        let mut h = HeaderMap::new();
        h.insert("service-worker-allowed", "/".parse().unwrap());
        h.insert("clear-site-data", "\"*\"".parse().unwrap());
        h.insert("access-control-allow-origin", "*".parse().unwrap());
        h.insert("access-control-allow-credentials", "true".parse().unwrap());
        for c in [
            "workspaced_session=planted; Path=/",
            "__Host-workspaced_session=planted; Path=/; Secure",
            "wide=1; Path=/",
            "parent=1; Domain=example.edu; Path=/w/alice",
            "other=1; Path=/w/bob",
            "prefixlike=1; Path=/w/alicex",
            "ide=1; Path=/w/alice/",
            "bare=1",
            "exact=1; path=/w/alice",
        ] {
            h.append(header::SET_COOKIE, c.parse().unwrap());
        }
        strip_origin_wide(&mut h, &fwd);
        for gone in ["service-worker-allowed", "clear-site-data", "access-control-allow-origin"] {
            assert!(!h.contains_key(gone), "{gone} passed");
        }
        assert!(!h.contains_key("access-control-allow-credentials"));
        let kept: Vec<&str> = h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(kept, ["ide=1; Path=/w/alice/", "bare=1", "exact=1; path=/w/alice"]);
        // Host mode: the whole host is the student's, but workspaced's cookies and Domain cookies still stay out.
        let host = Forwarded { prefix: "", ..fwd };
        assert!(cookie_stays_inside("wide=1; Path=/", &host));
        assert!(!cookie_stays_inside("wide=1; Path=/; Domain=ide.example.edu", &host));
        assert!(!cookie_stays_inside("__Host-workspaced_session=x; Path=/", &host));
    }

    #[test]
    fn forwarded_proto_and_host_are_set_by_the_proxy_not_taken_from_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        h.insert(header::HOST, "ide.example.edu".parse().unwrap());
        let fwd = Forwarded {
            prefix: "/w/alice",
            path_and_query: "/".into(),
            full_path: false,
            client_addr: None,
            proto: "http",
            strip_cookies: &[],
            hold: None,
            owner: "alice",
            credential: None,
        };
        prepare_request_headers(&mut h, &fwd, &BTreeSet::new());
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "ide.example.edu");
    }

    #[tokio::test]
    async fn only_cookies_the_ide_set_reach_it_and_its_secret_comes_from_the_proxy_alone() {
        let fwd = |credential| Forwarded {
            prefix: "",
            path_and_query: "/api?token=planted&x=1&%74oken=again".into(),
            full_path: false,
            client_addr: None,
            proto: "http",
            strip_cookies: &[],
            hold: None,
            owner: "alice",
            credential,
        };
        let browser = |h: &mut HeaderMap| {
            h.insert(header::COOKIE, "sso=university; _xsrf=1; code-server-session=planted".parse().unwrap());
            h.insert("x-token", "planted".parse().unwrap());
        };
        let ide_cookies = BTreeSet::from(["_xsrf".to_owned()]);
        let secret = crate::domain::IdeSecret::from_random([1; 32]);

        let mut h = HeaderMap::new();
        browser(&mut h);
        let cookie = crate::domain::IdeAuth::CodeServer.credential(&secret);
        prepare_request_headers(&mut h, &fwd(cookie), &ide_cookies);
        assert_eq!(h[header::COOKIE].to_str().unwrap(), format!("_xsrf=1; code-server-session={}", secret.expose()));

        let mut h = HeaderMap::new();
        browser(&mut h);
        let header = crate::domain::IdeAuth::parse("header:X-Token:token ").unwrap().credential(&secret);
        prepare_request_headers(&mut h, &fwd(header), &ide_cookies);
        assert_eq!(h["x-token"].to_str().unwrap(), format!("token {}", secret.expose()));
        assert_eq!(h[header::COOKIE], "_xsrf=1");

        let query = crate::domain::IdeAuth::parse("query:token").unwrap().credential(&secret);
        assert_eq!(upstream_path(&fwd(query)), format!("/api?x=1&token={}", secret.expose()));
        assert_eq!(upstream_path(&fwd(None)), "/api?token=planted&x=1&%74oken=again");

        // Learnt from what the IDE sets, after the filter: never workspaced's or code-server's session cookie.
        let jar = Arc::new(testing::MemoryJar::default());
        let proxy = Proxy::new(ProxySettings::default(), jar.clone());
        let mut answer = HeaderMap::new();
        for c in ["_xsrf=2; Path=/", "code-server-session=x; Path=/", "workspaced_session=x"] {
            answer.append(header::SET_COOKIE, c.parse().unwrap());
        }
        let fwd = Forwarded { strip_cookies: &["workspaced_session"], ..fwd(None) };
        strip_origin_wide(&mut answer, &fwd);
        proxy.learn_cookies("alice", &answer).await;
        assert_eq!(jar.names("alice").await, BTreeSet::from(["_xsrf".to_owned()]));
        assert!(jar.names("bob").await.is_empty(), "one IDE's cookies are not another's");
    }

    #[test]
    fn absolute_redirects_stay_under_the_prefix() {
        let mut h = HeaderMap::new();
        for (given, strip, full) in [
            ("/login", "/w/a/login", "/w/a/login"),
            ("/w/a/lab?reset", "/w/a/w/a/lab?reset", "/w/a/lab?reset"),
            ("/w/a", "/w/a/w/a", "/w/a"),
            ("/w/ab/lab", "/w/a/w/ab/lab", "/w/a/w/ab/lab"),
            ("http://127.0.0.1:4000/x?y=1", "/w/a/x?y=1", "/w/a/x?y=1"),
            ("http://127.0.0.1:4000/w/a/tree", "/w/a/w/a/tree", "/w/a/tree"),
            ("./?folder=/home", "./?folder=/home", "./?folder=/home"),
            ("https://elsewhere.example/", "https://elsewhere.example/", "https://elsewhere.example/"),
            ("//evil.example/", "//evil.example/", "//evil.example/"),
        ] {
            h.insert(header::LOCATION, given.parse().unwrap());
            rewrite_location(&mut h, "127.0.0.1:4000", "/w/a", false);
            assert_eq!(h[header::LOCATION], strip, "strip: {given}");
            h.insert(header::LOCATION, given.parse().unwrap());
            rewrite_location(&mut h, "127.0.0.1:4000", "/w/a", true);
            assert_eq!(h[header::LOCATION], full, "full: {given}");
        }
        // Host mode (no prefix): the path is the IDE's own in both modes.
        h.insert(header::LOCATION, "/lab".parse().unwrap());
        rewrite_location(&mut h, "127.0.0.1:4000", "", true);
        assert_eq!(h[header::LOCATION], "/lab");
    }

    #[test]
    fn in_full_path_mode_no_forwarded_prefix_is_sent() {
        let fwd = Forwarded {
            prefix: "/w/alice",
            path_and_query: "/w/alice/lab".into(),
            full_path: true,
            client_addr: None,
            proto: "http",
            strip_cookies: &[],
            hold: None,
            owner: "alice",
            credential: None,
        };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", "/planted".parse().unwrap());
        prepare_request_headers(&mut h, &fwd, &BTreeSet::new());
        assert!(!h.contains_key("x-forwarded-prefix"), "the path already carries the prefix");
    }

    /// A one-shot upstream on 127.0.0.1: answers the first request on each connection with `answer` and sends the
    /// request's head back through the channel.
    async fn upstream(answer: &'static str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        (port, rx)
    }

    fn forwarded(path: &str) -> Forwarded<'static> {
        Forwarded {
            prefix: "/w/ada",
            path_and_query: path.to_owned(),
            full_path: false,
            client_addr: None,
            proto: "http",
            strip_cookies: &[],
            hold: None,
            owner: "ada",
            credential: None,
        }
    }

    #[tokio::test]
    async fn requests_and_upgrades_go_to_the_routes_host_and_its_redirects_come_back_under_the_prefix() {
        let proxy = Proxy::new(ProxySettings::default(), Arc::new(testing::MemoryJar::default()));
        // The route names the node by name; here the name is `localhost` and the IDE listens on 127.0.0.1.
        let (port, mut seen) = upstream("HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 2\r\n\r\nhi").await;
        let req = Request::builder().uri("/w/ada/x?y=1").body(Body::empty()).unwrap();
        let resp = proxy.forward("localhost", port, req, forwarded("/x?y=1")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[header::LOCATION], "/w/ada/login");
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("host: localhost:{port}")), "{head}");

        // The IDE's own address in a redirect is the route's host and port, not 127.0.0.1's.
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("http://10.0.1.5:4000/login"));
        rewrite_location(&mut h, "10.0.1.5:4000", "/w/ada", false);
        assert_eq!(h[header::LOCATION], "/w/ada/login");
        h.insert(header::LOCATION, HeaderValue::from_static("http://127.0.0.1:4000/login"));
        rewrite_location(&mut h, "10.0.1.5:4000", "/w/ada", false);
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:4000/login", "another address is not the IDE's own");

        // A WebSocket's connection of its own goes to the same host.
        let (port, mut seen) =
            upstream("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").await;
        let req = Request::builder()
            .uri("/w/ada/socket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        let resp = proxy.forward("localhost", port, req, forwarded("/socket")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET /socket HTTP/1.1\r\n"), "{head}");

        // Nothing listens: unreachable, whatever the host.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = Request::builder().uri("/w/ada/").body(Body::empty()).unwrap();
        let e = proxy.forward("localhost", closed, req, forwarded("/")).await.unwrap_err();
        assert!(matches!(e, ProxyError::Unreachable(_)), "{e}");
    }

    #[test]
    fn only_a_connection_upgrade_is_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(!is_upgrade(&h));
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&h));
    }
}
