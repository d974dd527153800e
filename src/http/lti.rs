//! LTI 1.3 over HTTP (see `lti/mod.rs` and docs/lti.md).
//!
//! The browser side, outside the API's route table (it answers pages, and its own credentials are the platform's
//! signatures and a staff cookie):
//! - `GET|POST /lti/login`: OIDC third-party-initiated login; redirects to the platform with a signed `state` and a
//!   `nonce`.
//! - `POST /lti/launch`: the platform's form post of the `id_token`; checked, then a learner is handed to their
//!   workspace, staff to the course page, a deep linking request to the "add a link" page.
//! - `GET /lti/course/{course}`, `POST /lti/course/{course}/{open|stop}`: the staff's course page.
//! - `GET /lti/jwks`: the tool's public keys.
//!
//! The admin API (in the route table): `GET|POST /api/lti/platforms`, `DELETE /api/lti/platforms/{platform}`,
//! `GET /api/lti/info`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::pages::escape;
use super::AppState;
use crate::auth::Purpose;
use crate::domain::{CourseId, Status, StopReason, StudentId};
use crate::lti::nrps::form_escape;
use crate::lti::token::{self, Expect, KeySets, Launch, MessageType, ToolKey};
use crate::lti::{self as lti, LtiError, LtiRole, NewPlatform, Platform};
use crate::store::{LtiContext, LtiUser};

/// How long a login's `state` is good for (the platform answers within seconds).
const STATE_TTL: Duration = Duration::from_secs(600);
/// How long the link a launch hands over (to the workspace or the course page) works: long enough to click
/// "Open in a new window" after reading the page; each link works once.
const HANDOFF_TTL: Duration = Duration::from_secs(600);
/// How long a staff member's course page cookie lasts.
const STAFF_TTL: Duration = Duration::from_secs(8 * 3600);
const STAFF_COOKIE: &str = "workspaced_lti_staff";

/// The LTI caches of this replica.
#[derive(Default)]
pub struct LtiState {
    pub key_sets: KeySets,
    tool_keys: tokio::sync::OnceCell<Arc<Vec<ToolKey>>>,
}

/// The tool's keys, read (or made) once.
async fn tool_keys(state: &AppState) -> Result<Arc<Vec<ToolKey>>, ApiError> {
    let keys = state
        .lti
        .tool_keys
        .get_or_try_init(|| async {
            let raw = state.lifecycle.lti_signing_keys().await?;
            let keys: Result<Vec<ToolKey>, String> = raw.iter().map(|(kid, pem)| ToolKey::from_pem(kid, pem)).collect();
            keys.map(Arc::new).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "lti_tool_key", e))
        })
        .await?;
    Ok(keys.clone())
}

/// The browser side's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/lti/login", get(login_get).post(login_post))
        .route("/lti/launch", post(launch))
        .route("/lti/jwks", get(jwks))
        .route("/lti/course/{course}", get(course_page))
        .route("/lti/course/{course}/{action}", post(course_action))
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginParams {
    iss: Option<String>,
    login_hint: Option<String>,
    target_link_uri: Option<String>,
    lti_message_hint: Option<String>,
    client_id: Option<String>,
    lti_deployment_id: Option<String>,
}

async fn login_get(
    State(state): State<Arc<AppState>>,
    q: Result<Query<LoginParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = q.map(|Query(p)| p).unwrap_or_default();
    answer(&state, login(&state, p).await).await
}

async fn login_post(State(state): State<Arc<AppState>>, f: Result<Form<LoginParams>, FormRejection>) -> Response {
    let p = f.map(|Form(p)| p).unwrap_or_default();
    answer(&state, login(&state, p).await).await
}

fn required<'a>(name: &str, v: &'a Option<String>) -> Result<&'a str, LtiError> {
    match v.as_deref() {
        Some(s) if !s.is_empty() && s.len() <= lti::MAX_FIELD => Ok(s),
        _ => Err(LtiError::BadRequest(name.to_owned())),
    }
}

/// The platform a login names: by issuer and client id, or the only one of the issuer.
async fn platform_for(state: &AppState, iss: &str, client_id: Option<&str>) -> Result<Platform, Refusal> {
    let all = state.lifecycle.reads().lti_platforms_of(iss).await.map_err(|e| Refusal::Api(ApiError::store(e)))?;
    let unknown = || LtiError::UnknownPlatform {
        issuer: iss.to_owned(),
        client_id: client_id.unwrap_or("(none sent)").to_owned(),
    };
    match client_id {
        Some(c) => all.into_iter().find(|p| p.client_id == c).ok_or_else(|| unknown().into()),
        None if all.len() > 1 => Err(LtiError::AmbiguousPlatform(iss.to_owned()).into()),
        None => all.into_iter().next().ok_or_else(|| unknown().into()),
    }
}

/// Why a request got no page of its own: an LTI refusal (a page for the LMS admin) or a service error.
enum Refusal {
    Lti(LtiError),
    Api(ApiError),
}

impl From<LtiError> for Refusal {
    fn from(e: LtiError) -> Self {
        Refusal::Lti(e)
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl From<crate::lifecycle::LifecycleError> for Refusal {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        Refusal::Api(e.into())
    }
}

async fn login(state: &AppState, p: LoginParams) -> Result<Response, Refusal> {
    let iss = required("iss", &p.iss)?;
    let login_hint = required("login_hint", &p.login_hint)?;
    let target = required("target_link_uri", &p.target_link_uri)?;
    for (name, v) in [
        ("lti_message_hint", &p.lti_message_hint),
        ("client_id", &p.client_id),
        ("lti_deployment_id", &p.lti_deployment_id),
    ] {
        if v.as_ref().is_some_and(|v| v.len() > lti::MAX_FIELD) {
            return Err(LtiError::BadRequest(name.to_owned()).into());
        }
    }
    let public = state.lifecycle.settings().public_url();
    if lti::origin_of(target) != lti::origin_of(&public) {
        return Err(LtiError::BadRequest("target_link_uri (it is not this tool's address)".into()).into());
    }
    let platform = platform_for(state, iss, p.client_id.as_deref()).await?;
    if let Some(d) = p.lti_deployment_id.as_ref().filter(|d| !platform.deployment_ids.contains(d)) {
        return Err(LtiError::UnknownDeployment(d.clone()).into());
    }
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let exp = state.lifecycle.clock().now() + chrono::Duration::from_std(STATE_TTL).unwrap_or_default();
    let st = state.signer.seal(Purpose::LtiState, &[&platform.id, &nonce, &exp.timestamp_millis().to_string()]);
    let mut q = vec![
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("prompt", "none"),
        ("client_id", platform.client_id.as_str()),
        ("login_hint", login_hint),
        ("state", st.as_str()),
        ("nonce", nonce.as_str()),
    ];
    let redirect_uri = format!("{public}/lti/launch");
    q.push(("redirect_uri", redirect_uri.as_str()));
    if let Some(h) = &p.lti_message_hint {
        q.push(("lti_message_hint", h.as_str()));
    }
    let query = q.iter().map(|(k, v)| format!("{k}={}", form_escape(v))).collect::<Vec<_>>().join("&");
    let sep = if platform.auth_url.contains('?') { '&' } else { '?' };
    let mut resp = Redirect::to(&format!("{}{sep}{query}", platform.auth_url)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
pub struct LaunchForm {
    id_token: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn launch(State(state): State<Arc<AppState>>, f: Result<Form<LaunchForm>, FormRejection>) -> Response {
    let form = f.map(|Form(p)| p).unwrap_or_default();
    let result = launch_flow(&state, form).await;
    answer(&state, result).await
}

/// The launch: every check first (nothing is written before they all pass), then the nonce is used up, then the
/// launch is recorded and handed over.
async fn launch_flow(state: &AppState, form: LaunchForm) -> Result<Response, Refusal> {
    if let Some(e) = &form.error {
        let detail = form.error_description.as_deref().unwrap_or_default();
        let text: String = format!("the platform answered {e}: {detail}").chars().take(300).collect();
        return Err(LtiError::BadRequest(text).into());
    }
    // An id_token is a few KB (claims and an RS256 signature): it has its own bound, not a field's.
    let id_token = match form.id_token.as_deref() {
        Some(t) if !t.is_empty() && t.len() <= token::MAX_ID_TOKEN => t,
        _ => return Err(LtiError::BadRequest("id_token".into()).into()),
    };
    let raw_state = form.state.as_deref().ok_or(LtiError::BadState)?;
    let fields = state.signer.unseal(Purpose::LtiState, raw_state, 3).ok_or(LtiError::BadState)?;
    let (platform_id, nonce, exp_ms) = (&fields[0], &fields[1], &fields[2]);
    let lc = &state.lifecycle;
    let now = lc.clock().now();
    let exp = exp_ms.parse::<i64>().map(crate::store::from_ms).map_err(|_| LtiError::BadState)?;
    if now >= exp {
        return Err(LtiError::BadState.into());
    }
    let platform = lc.reads().lti_platform(platform_id).await.map_err(ApiError::store)?.ok_or(LtiError::BadState)?;
    let kid = token::token_kid(id_token)?;
    let key = state.lti.key_sets.key_for(&platform, kid.as_deref()).await?;
    let launch = token::check_id_token(id_token, &key, &Expect { platform: &platform, nonce, now: now.timestamp() })?;
    if !lc.redeem_launch_nonce(&format!("lti-{nonce}"), exp).await? {
        return Err(LtiError::Replayed.into());
    }
    let role = lti::role_of(&launch.roles);
    match (launch.message, role) {
        (MessageType::DeepLinking, LtiRole::Staff) => deep_linking_page(state, &platform, &launch).await,
        (MessageType::DeepLinking, LtiRole::Learner) => Err(LtiError::NotStaff.into()),
        (MessageType::ResourceLink, role) => {
            let (context, user) = records(state, &platform, &launch, role, now);
            lc.record_lti_launch(&context, &user).await?;
            tracing::info!(course = %context.course_id, student = %user.student_id, ?role, "LTI launch");
            let title = context.title.clone().unwrap_or_else(|| context.course_id.to_string());
            if role == LtiRole::Staff {
                let exp = (now + chrono::Duration::from_std(HANDOFF_TTL).unwrap_or_default()).timestamp_millis();
                let nonce = hex::encode(rand::random::<[u8; 16]>());
                let ticket = state.signer.seal(
                    Purpose::LtiStaffTicket,
                    &[context.course_id.as_str(), &user.user_key, &exp.to_string(), &nonce],
                );
                let url = format!("{}/lti/course/{}?ticket={ticket}", lc.settings().public_url(), context.course_id);
                Ok(handoff_page(state, "Open the course's workspaces", &title, &url, false))
            } else {
                let (token, _) = state.signer.launch_token(&user.student_id, now, HANDOFF_TTL);
                let base = super::ide::workspace_url(lc.settings(), &user.student_id);
                let url = format!("{}{}launch?token={token}", base.trim_end_matches('/'), super::ide::RESERVED);
                Ok(handoff_page(state, "Open your workspace", &title, &url, true))
            }
        }
    }
}

/// The context and user rows a launch records.
fn records(
    state: &AppState,
    p: &Platform,
    l: &Launch,
    role: LtiRole,
    now: chrono::DateTime<chrono::Utc>,
) -> (LtiContext, LtiUser) {
    let course_id = lti::course_id_for(&p.issuer, &l.context.id);
    let claim = state.lifecycle.settings().auth.lti_login_claim.as_deref();
    let login = claim.and_then(|c| l.claim_text(c));
    let context = LtiContext {
        course_id,
        platform_id: p.id.clone(),
        context_id: l.context.id.chars().take(lti::MAX_FIELD).collect(),
        title: l.context.title.clone().or_else(|| l.context.label.clone()).map(|t| t.chars().take(200).collect()),
        nrps_url: l.nrps.as_ref().map(|n| n.context_memberships_url.clone()).filter(|u| u.len() <= lti::MAX_FIELD),
    };
    let user = LtiUser {
        user_key: lti::user_key(&p.issuer, &l.sub),
        student_id: lti::student_id_for(&p.issuer, &l.sub, &l.context.id, login),
        sub: l.sub.chars().take(255).collect(),
        name: l.name.clone(),
        email: l.email.clone(),
        staff: role == LtiRole::Staff,
        last_launch: now,
    };
    (context, user)
}

/// The page a launch lands on, in the LMS's frame or window. In a window it goes on to `url` at once. In a frame
/// it shows a button that opens `url` in a new window (first-party there, so its cookie works in every browser);
/// with `lti_embed` (and `embeddable`) it goes on in the frame instead, with a partitioned cookie.
fn handoff_page(state: &AppState, action: &str, title: &str, url: &str, embeddable: bool) -> Response {
    let embed = embeddable && state.lifecycle.settings().auth.lti_embed;
    let url_json = serde_json::to_string(url).expect("a string serializes").replace('<', "\\u003c");
    let body = format!(
        r#"<p class="muted">{title}</p>
<h1>{action}</h1>
<p><a id="open" class="button" href="{href}" target="_blank" rel="noopener">{action} in a new window</a></p>
<p class="muted" id="why">The LMS shows this tool in a frame; it opens in its own window so that it works in every
browser.</p>
<script>
(() => {{
  const url = {url_json};
  const framed = window.top !== window.self;
  if (!framed) {{ location.replace(url); return; }}
  if ({embed}) {{ location.replace(url + '&embed=1'); return; }}
  document.getElementById('open').addEventListener('click', () => {{
    document.getElementById('why').textContent = 'Opened in a new window. You can close this frame.';
  }});
}})();
</script>"#,
        title = escape(title),
        action = escape(action),
        href = escape(url),
    );
    page(state, StatusCode::OK, action, &body)
}

/// The deep linking page: the staff member adds an "Open workspace" link to the course with one click (a form that
/// posts the signed response to the platform).
async fn deep_linking_page(state: &AppState, platform: &Platform, l: &Launch) -> Result<Response, Refusal> {
    let settings = l.deep_linking.as_ref().ok_or_else(|| LtiError::MissingClaims(token::CLAIM_DL_SETTINGS.into()))?;
    // The return URL becomes a form's action on this origin: only a web address, never `javascript:` or `data:`.
    let back = &settings.deep_link_return_url;
    if !(back.starts_with("https://") || back.starts_with("http://")) || back.len() > lti::MAX_FIELD {
        return Err(LtiError::MissingClaims("deep_link_return_url (an http(s) URL)".into()).into());
    }
    if !settings.accept_types.is_empty() && !settings.accept_types.iter().any(|t| t == "ltiResourceLink") {
        return Err(LtiError::Unsupported("the platform does not accept LTI resource links here".into()).into());
    }
    let keys = tool_keys(state).await?;
    let key = keys.last().expect("at least one tool key");
    let now = chrono::Utc::now().timestamp();
    let public = state.lifecycle.settings().public_url();
    let mut claims = serde_json::json!({
        "iss": platform.client_id, "aud": [platform.issuer], "iat": now, "exp": now + 600,
        "nonce": hex::encode(rand::random::<[u8; 16]>()),
        token::CLAIM_DEPLOYMENT: l.deployment_id,
        token::CLAIM_MESSAGE_TYPE: "LtiDeepLinkingResponse",
        token::CLAIM_VERSION: "1.3.0",
        token::CLAIM_DL_ITEMS: [{
            "type": "ltiResourceLink",
            "title": "Open workspace",
            "text": "Your own browser IDE for this course.",
            "url": format!("{public}/lti/launch"),
            "window": { "targetName": "_blank" },
        }],
    });
    if let Some(data) = &settings.data {
        claims[token::CLAIM_DL_DATA] = serde_json::Value::String(data.clone());
    }
    let jwt = key.sign(&claims);
    let body = format!(
        r#"<p class="muted">{course}</p>
<h1>Add a workspace link</h1>
<p>This adds an <strong>Open workspace</strong> link to the course. Each student who opens it gets their own IDE.</p>
<form id="add" method="post" action="{action}"><input type="hidden" name="JWT" value="{jwt}">
<button class="button" type="submit">Add "Open workspace"</button></form>"#,
        course = escape(l.context.title.as_deref().unwrap_or(&l.context.id)),
        action = escape(&settings.deep_link_return_url),
        jwt = escape(&jwt),
    );
    Ok(page(state, StatusCode::OK, "Add a workspace link", &body))
}

/// A staff member on a course page.
struct Staff {
    course: CourseId,
    user_key: String,
}

fn staff_of(state: &AppState, headers: &HeaderMap, course: &CourseId) -> Option<Staff> {
    let now = state.lifecycle.clock().now().timestamp_millis();
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let values: Vec<&str> = cookies.flat_map(|v| crate::auth::cookie_values(v, STAFF_COOKIE)).take(8).collect();
    values.into_iter().find_map(|v| {
        let f = state.signer.unseal(Purpose::LtiStaff, v, 3)?;
        let exp: i64 = f[2].parse().ok()?;
        (f[0] == course.as_str() && now < exp).then(|| Staff { course: course.clone(), user_key: f[1].clone() })
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct TicketQuery {
    ticket: Option<String>,
}

/// `GET /lti/course/{course}`: with a ticket (from a staff launch), sets the staff cookie and comes back without
/// it; with the cookie, the page: the course's students and their workspaces.
async fn course_page(
    State(state): State<Arc<AppState>>,
    Path(course): Path<String>,
    q: Result<Query<TicketQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = course_flow(&state, &course, q.map(|Query(q)| q).unwrap_or_default(), &headers).await;
    answer(&state, result).await
}

async fn course_flow(state: &AppState, raw: &str, q: TicketQuery, headers: &HeaderMap) -> Result<Response, Refusal> {
    let course = CourseId::parse(raw).map_err(|_| LtiError::BadRequest("course".into()))?;
    let lc = &state.lifecycle;
    if let Some(ticket) = q.ticket {
        let f = state.signer.unseal(Purpose::LtiStaffTicket, &ticket, 4).ok_or(LtiError::BadState)?;
        let exp = f[2].parse::<i64>().map(crate::store::from_ms).map_err(|_| LtiError::BadState)?;
        if f[0] != course.as_str() || lc.clock().now() >= exp {
            return Err(LtiError::BadState.into());
        }
        if !lc.redeem_launch_nonce(&format!("lti-staff-{}", f[3]), exp).await? {
            return Err(LtiError::Replayed.into());
        }
        let until = (lc.clock().now() + chrono::Duration::from_std(STAFF_TTL).unwrap_or_default()).timestamp_millis();
        let value = state.signer.seal(Purpose::LtiStaff, &[course.as_str(), &f[1], &until.to_string()]);
        let mut resp = Redirect::to(&format!("/lti/course/{course}")).into_response();
        let cookie = format!(
            "{STAFF_COOKIE}={value}; Path=/lti/; HttpOnly; Max-Age={}; {}",
            STAFF_TTL.as_secs(),
            cookie_attrs(state, headers)
        );
        resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    let staff = staff_of(state, headers, &course).ok_or_else(|| {
        LtiError::BadRequest("a staff session for this course: open it from the LMS as an instructor".into())
    })?;
    roster_page(state, &staff).await
}

/// `SameSite=Lax` for a first-party window; in an LMS frame with `lti_embed`, `SameSite=None; Secure;
/// Partitioned` (the only cookie a browser that blocks third-party cookies keeps in a frame).
fn cookie_attrs(state: &AppState, _headers: &HeaderMap) -> &'static str {
    if state.lifecycle.settings().auth.lti_embed {
        "SameSite=None; Secure; Partitioned"
    } else if state.lifecycle.settings().cookie_secure() {
        "SameSite=Lax; Secure"
    } else {
        "SameSite=Lax"
    }
}

/// One row of the course page.
struct Row {
    name: String,
    email: String,
    student: StudentId,
    launched: Option<chrono::DateTime<chrono::Utc>>,
    status: Option<Status>,
}

/// The course page. Long because it gathers three sources (who launched, the platform's roster, the workspaces)
/// into one table and writes it out.
async fn roster_page(state: &AppState, staff: &Staff) -> Result<Response, Refusal> {
    let reads = state.lifecycle.reads();
    let store = |e| Refusal::Api(ApiError::store(e));
    let context = reads.lti_context(&staff.course).await.map_err(store)?;
    let users = reads.lti_users(&staff.course).await.map_err(store)?;
    let workspaces = reads.list_in_course(&staff.course).await.map_err(store)?;
    let mut rows: Vec<Row> = users
        .iter()
        .filter(|u| !u.staff)
        .map(|u| Row {
            name: u.name.clone().unwrap_or_else(|| "(no name sent)".into()),
            email: u.email.clone().unwrap_or_default(),
            student: u.student_id.clone(),
            launched: Some(u.last_launch),
            status: None,
        })
        .collect();
    let roster_note;
    let platform = match &context {
        Some(c) => reads.lti_platform(&c.platform_id).await.map_err(store)?,
        None => None,
    };
    match (&context, &platform) {
        (Some(c), Some(p)) if c.nrps_url.is_some() => {
            let keys = tool_keys(state).await?;
            match lti::nrps::roster(p, keys.last().expect("a tool key"), c.nrps_url.as_deref().unwrap_or_default())
                .await
            {
                Ok(members) => {
                    for m in members.iter().filter(|m| lti::role_of(&m.roles) == LtiRole::Learner) {
                        let key = lti::user_key(&p.issuer, &m.user_id);
                        if users.iter().any(|u| u.user_key == key) {
                            continue;
                        }
                        rows.push(Row {
                            name: m.name.clone().unwrap_or_else(|| "(no name)".into()),
                            email: m.email.clone().unwrap_or_default(),
                            student: lti::student_id_for(&p.issuer, &m.user_id, &c.context_id, None),
                            launched: None,
                            status: None,
                        });
                    }
                    roster_note = format!("{} enrolled (from the LMS's roster).", members.len());
                }
                Err(e) => {
                    roster_note = format!("The LMS's roster could not be read: {e}. Students appear once they launch.")
                }
            }
        }
        _ => roster_note = "The LMS sends no roster service: students appear once they launch.".into(),
    }
    for r in &mut rows {
        r.status = workspaces.iter().find(|w| w.student_id == r.student).map(|w| w.status);
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let csrf = state.signer.seal(Purpose::LtiCsrf, &[staff.course.as_str(), &staff.user_key]);
    let mut table = String::new();
    for r in &rows {
        let status = r.status.map(|s| s.to_string()).unwrap_or_else(|| "no workspace yet".into());
        let launched = r.launched.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "never".into());
        let actions = if r.status.is_some() {
            let form = |action: &str, label: &str| {
                format!(
                    r#"<form method="post" action="/lti/course/{course}/{action}"><input type="hidden" name="student" value="{student}"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" aria-label="{label} of {name}">{label}</button></form>"#,
                    course = staff.course,
                    student = escape(r.student.as_str()),
                    csrf = escape(&csrf),
                    name = escape(&r.name),
                )
            };
            let stop = if matches!(r.status, Some(Status::Running | Status::Starting | Status::Queued)) {
                form("stop", "Stop")
            } else {
                String::new()
            };
            format!("{}{stop}", form("open", "Open IDE"))
        } else {
            String::new()
        };
        table.push_str(&format!(
            r#"<tr data-student="{student}"><td>{name}</td><td>{email}</td><td><span class="st">{status}</span></td><td>{launched}</td><td class="actions">{actions}</td></tr>"#,
            student = escape(r.student.as_str()),
            name = escape(&r.name),
            email = escape(&r.email),
        ));
    }
    let title = context.as_ref().and_then(|c| c.title.clone()).unwrap_or_else(|| staff.course.to_string());
    let body = format!(
        r#"<p class="muted">Course {course}</p>
<h1>{title}</h1>
<p id="counts">{n} students, {running} running. <span class="muted">{note}</span></p>
<table><thead><tr><th>Student</th><th>Email</th><th>Workspace</th><th>Last launch</th><th>Actions</th></tr></thead>
<tbody id="students">{table}</tbody></table>
<p class="muted">Opening a student's IDE is recorded in the event log.</p>"#,
        course = staff.course,
        title = escape(&title),
        n = rows.len(),
        running = rows.iter().filter(|r| r.status == Some(Status::Running)).count(),
        note = escape(&roster_note),
    );
    Ok(page(state, StatusCode::OK, &title, &body))
}

#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    student: Option<String>,
    csrf: Option<String>,
}

/// `POST /lti/course/{course}/open|stop`: a staff member opens (audited) or stops a student's workspace.
async fn course_action(
    State(state): State<Arc<AppState>>,
    Path((course, action)): Path<(String, String)>,
    headers: HeaderMap,
    f: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = f.map(|Form(p)| p).unwrap_or_default();
    let result = action_flow(&state, &course, &action, &headers, form).await;
    answer(&state, result).await
}

async fn action_flow(
    state: &AppState,
    raw: &str,
    action: &str,
    headers: &HeaderMap,
    form: ActionForm,
) -> Result<Response, Refusal> {
    let course = CourseId::parse(raw).map_err(|_| LtiError::BadRequest("course".into()))?;
    let staff = staff_of(state, headers, &course).ok_or(LtiError::NotStaff)?;
    let csrf = state.signer.unseal(Purpose::LtiCsrf, form.csrf.as_deref().unwrap_or_default(), 2);
    if csrf.as_deref() != Some(&[course.to_string(), staff.user_key.clone()][..]) {
        return Err(LtiError::BadState.into());
    }
    let student = form
        .student
        .as_deref()
        .and_then(|s| StudentId::parse(s).ok())
        .ok_or_else(|| LtiError::BadRequest("student".into()))?;
    let lc = &state.lifecycle;
    let rec = lc.reads().get(&student).await.map_err(ApiError::store)?;
    if rec.as_ref().and_then(|r| r.course.as_ref()) != Some(&course) {
        return Err(LtiError::BadRequest("student (not in this course)".into()).into());
    }
    let who = lc
        .reads()
        .lti_users(&course)
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .find(|u| u.user_key == staff.user_key)
        .and_then(|u| u.name.or(Some(u.sub)))
        .unwrap_or_else(|| "a staff member".into());
    match action {
        "open" => {
            lc.audit_staff_access(&student, &course, &who, "opened the IDE").await?;
            let (token, _) = state.signer.launch_token(&student, lc.clock().now(), HANDOFF_TTL);
            let base = super::ide::workspace_url(lc.settings(), &student);
            let url = format!("{}{}launch?token={token}", base.trim_end_matches('/'), super::ide::RESERVED);
            Ok(Redirect::to(&url).into_response())
        }
        "stop" => {
            lc.audit_staff_access(&student, &course, &who, "stopped the workspace").await?;
            lc.stop(&student, StopReason::Admin).await?;
            Ok(Redirect::to(&format!("/lti/course/{course}")).into_response())
        }
        _ => Err(LtiError::BadRequest("action".into()).into()),
    }
}

/// `GET /lti/jwks`: the tool's public keys.
async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    match tool_keys(&state).await {
        Ok(keys) => {
            let mut r = Json(token::key_set(&keys)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            r
        }
        Err(e) => e.into_response(),
    }
}

/// A refusal as a page (the person in front of it is a student, an instructor or an LMS admin testing the setup).
async fn answer(state: &AppState, result: Result<Response, Refusal>) -> Response {
    refresh_origins(state).await;
    match result {
        Ok(r) => r,
        Err(Refusal::Lti(e)) => {
            crate::metrics::proxy_request("lti_refused");
            tracing::info!(code = e.code(), reason = ?e.to_string(), "LTI request refused");
            let body = format!(
                r#"<h1>This LMS launch did not work</h1>
<p id="reason">{reason}</p>
<p><strong>For the LMS administrator:</strong> {advice}</p>
<p class="muted">Error code: <code id="code">{code}</code></p>"#,
                reason = escape(&capitalize(&e.to_string())),
                advice = escape(e.advice()),
                code = e.code(),
            );
            page(state, e.status(), "LMS launch refused", &body)
        }
        Err(Refusal::Api(e)) => {
            let (status, code, message) = (e.status, e.code, e.message.clone());
            tracing::warn!(code, message = ?message, "LTI request failed");
            let body = format!(
                r#"<h1>Something went wrong</h1><p id="reason">{}</p><p class="muted">Error code: <code id="code">{code}</code></p>"#,
                escape(&capitalize(&message))
            );
            page(state, status, "Something went wrong", &body)
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// An LTI page: shown in the LMS's frame, so framing is allowed for the registered platforms only.
fn page(state: &AppState, status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · workspaced</title><style>
body {{ font: 15px/1.5 system-ui, sans-serif; color: #1d2330; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
.muted {{ color: #4b5563; }} h1 {{ font-size: 1.35rem; }}
.button, button {{ font: inherit; display: inline-block; padding: .45rem .9rem; border-radius: 8px; border: 1px solid #1d4ed8;
  background: #1d4ed8; color: #fff; text-decoration: none; cursor: pointer; }}
td form {{ display: inline; margin-right: .3rem; }} td button {{ padding: .2rem .6rem; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #e5e7eb; }}
</style></head><body><main>{body}</main></body></html>"#,
        title = escape(title),
    );
    let mut r = (status, Html(html)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&frame_ancestors(state)) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// `frame-ancestors 'self'` and the registered platforms' origins (issuer and authorization URL): the pages an LMS
/// may frame. Kept in memory, read again every minute.
pub fn frame_ancestors(state: &AppState) -> String {
    let origins = state.lti_origins.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
    let mut v = "frame-ancestors 'self'".to_owned();
    for o in origins.iter().filter(|o| o.chars().all(|c| c.is_ascii_graphic() && c != ';' && c != ',')) {
        v.push(' ');
        v.push_str(o);
    }
    v
}

/// Reads the registered platforms' origins into [`AppState::lti_origins`] when older than a minute.
pub async fn refresh_origins(state: &AppState) {
    let stale = state
        .lti_origins
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .is_none_or(|at| at.elapsed() > Duration::from_secs(60));
    if !stale {
        return;
    }
    if let Ok(platforms) = state.lifecycle.reads().lti_platforms().await {
        let mut origins: Vec<String> =
            platforms.iter().flat_map(|p| [lti::origin_of(&p.issuer), lti::origin_of(&p.auth_url)]).flatten().collect();
        origins.sort();
        origins.dedup();
        *state.lti_origins.lock().unwrap_or_else(|e| e.into_inner()) = (Some(std::time::Instant::now()), origins);
    }
}

// ---- The admin API ----

/// `GET /api/lti/platforms`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlatformList {
    pub platforms: Vec<Platform>,
}

/// The URLs and values an LMS administrator pastes into the LMS.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolInfo {
    pub title: String,
    /// OIDC login initiation URL (Canvas: "OpenID Connect Initiation Url"; Moodle: "Initiate login URL").
    pub login_url: String,
    /// Redirect URI and target link URI (Moodle: "Tool URL" and "Redirection URI(s)").
    pub launch_url: String,
    /// The tool's public key set URL (Moodle: "Public keyset URL"; Canvas: "Public JWK URL").
    pub jwks_url: String,
    /// Deep linking URL (Moodle: "Content Selection URL"): the same launch URL.
    pub deep_linking_url: String,
    pub embed: bool,
    pub platforms: usize,
}

/// Lists the registered platforms.
#[utoipa::path(get, path = "/api/lti/platforms", tag = "lti",
    responses((status = 200, description = "The registered LMSs", body = PlatformList)))]
pub async fn list_platforms(State(state): State<Arc<AppState>>) -> Result<Json<PlatformList>, ApiError> {
    let platforms = state.lifecycle.reads().lti_platforms().await.map_err(ApiError::store)?;
    Ok(Json(PlatformList { platforms }))
}

/// Registers an LMS: its issuer, the client id it gave this tool, deployment ids, endpoints and keys.
#[utoipa::path(post, path = "/api/lti/platforms", tag = "lti",
    request_body = NewPlatform,
    responses(
        (status = 201, description = "Registered", body = Platform),
        (status = 400, description = "`invalid_platform`, `invalid_json`, `invalid_body`", body = crate::api::ErrorBody),
        (status = 409, description = "`platform_exists`: this issuer and client id are registered", body = crate::api::ErrorBody),
    ))]
pub async fn add_platform(
    State(state): State<Arc<AppState>>,
    super::extract::ApiJson(new): super::extract::ApiJson<NewPlatform>,
) -> Result<(StatusCode, Json<Platform>), ApiError> {
    new.check().map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_platform", m))?;
    let p = state.lifecycle.register_lti_platform(&new).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "platform_exists",
            "a platform with this issuer and client id is registered; remove it first",
        )
    })?;
    *state.lti_origins.lock().unwrap_or_else(|e| e.into_inner()) = (None, Vec::new());
    Ok((StatusCode::CREATED, Json(p)))
}

/// Removes an LMS's registration (launches from it are refused from then on; courses and workspaces stay).
#[utoipa::path(delete, path = "/api/lti/platforms/{platform}", tag = "lti",
    params(("platform" = String, Path, description = "The platform's id (`workspaced lti list`)", max_length = 64)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`platform_not_found`", body = crate::api::ErrorBody),
    ))]
pub async fn remove_platform(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "platform_not_found", "no platform with this id");
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    if !state.lifecycle.unregister_lti_platform(&id).await? {
        return Err(not_found());
    }
    state.lti.key_sets.forget(&id);
    *state.lti_origins.lock().unwrap_or_else(|e| e.into_inner()) = (None, Vec::new());
    Ok(StatusCode::NO_CONTENT)
}

/// The values to paste into an LMS to add this tool.
#[utoipa::path(get, path = "/api/lti/info", tag = "lti",
    responses((status = 200, description = "The tool's LTI URLs", body = ToolInfo)))]
pub async fn info(State(state): State<Arc<AppState>>) -> Result<Json<ToolInfo>, ApiError> {
    let settings = state.lifecycle.settings();
    let public = settings.public_url();
    let platforms = state.lifecycle.reads().lti_platforms().await.map_err(ApiError::store)?.len();
    Ok(Json(ToolInfo {
        title: "workspaced".into(),
        login_url: format!("{public}/lti/login"),
        launch_url: format!("{public}/lti/launch"),
        jwks_url: format!("{public}/lti/jwks"),
        deep_linking_url: format!("{public}/lti/launch"),
        embed: settings.auth.lti_embed,
        platforms,
    }))
}
