//! LTI 1.3 without a browser: registrations (API and CLI), the tool's key set, and the login and launch exchange
//! played by a platform of the test's own (its key given inline, as for a closed network). The browser tests against
//! a platform this project did not write are `tests/ui/lti.rs`.

use serde_json::{json, Value};
use workspaced::lti::token::{
    ToolKey, CLAIM_CONTEXT, CLAIM_DEPLOYMENT, CLAIM_MESSAGE_TYPE, CLAIM_ROLES, CLAIM_VERSION,
};

use crate::helpers::*;

const ISSUER: &str = "https://lms.example.edu";
const LEARNER: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner";

/// A platform's key and its registration body (the key set inline).
fn platform() -> (ToolKey, Value) {
    let (kid, pem) = ToolKey::generate();
    let key = ToolKey::from_pem(&kid, &pem).unwrap();
    let body = json!({
        "issuer": ISSUER, "client_id": "tool-7", "deployment_ids": ["dep-1"],
        "auth_url": "https://lms.example.edu/auth", "token_url": "https://lms.example.edu/token",
        "jwks": workspaced::lti::token::key_set(std::slice::from_ref(&key)),
    });
    (key, body)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The login: its redirect to the platform's auth URL, and the state and nonce in it.
async fn login(app: &TestApp) -> (String, String) {
    let r = no_redirects()
        .get(app.url("/lti/login"))
        .query(&[
            ("iss", ISSUER),
            ("login_hint", "u-1"),
            ("target_link_uri", &app.url("/lti/launch")),
            ("client_id", "tool-7"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "login redirects: {}", r.status());
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(to.as_str().split('?').next(), Some("https://lms.example.edu/auth"));
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    for (k, v) in [
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("prompt", "none"),
        ("client_id", "tool-7"),
        ("login_hint", "u-1"),
    ] {
        assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(q["redirect_uri"], app.url("/lti/launch"));
    (q["state"].clone(), q["nonce"].clone())
}

fn claims(nonce: &str, sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": "tool-7", "sub": sub, "iat": now, "exp": now + 300, "nonce": nonce,
        CLAIM_MESSAGE_TYPE: "LtiResourceLinkRequest", CLAIM_VERSION: "1.3.0", CLAIM_DEPLOYMENT: "dep-1",
        CLAIM_ROLES: [LEARNER], CLAIM_CONTEXT: {"id": "ctx-9", "title": "Data Structures"},
        "name": "Ada Lovelace",
    })
}

async fn post_launch(app: &TestApp, id_token: &str, state: &str) -> (u16, String) {
    let r = no_redirects()
        .post(app.url("/lti/launch"))
        .form(&[("id_token", id_token), ("state", state)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn code_of(page: &str) -> Option<&str> {
    page.split("<code id=\"code\">").nth(1)?.split('<').next()
}

#[tokio::test]
async fn platforms_are_registered_listed_and_removed_by_api_and_cli() {
    let app = spawn_app().await;
    let (_key, body) = platform();
    let (code, p) = app.post_json("/api/lti/platforms", &body.to_string()).await;
    assert_eq!(code, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    // The same issuer and client id again: 409, nothing changed.
    let (code, e) = app.post_json("/api/lti/platforms", &body.to_string()).await;
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("platform_exists")));
    // Bad registrations are named and change nothing.
    for (edit, field) in [
        (json!({"issuer": "http://lms.example.edu"}), "issuer"),
        (json!({"deployment_ids": []}), "deployment_ids"),
        (json!({"auth_url": "javascript:alert(1)"}), "auth_url"),
        (json!({"jwks": null}), "jwks_url"),
        (json!({"jwks": {"keys": "nope"}}), "jwks"),
    ] {
        let mut b = body.clone();
        b["client_id"] = json!("other");
        for (k, v) in edit.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (code, e) = app.post_json("/api/lti/platforms", &b.to_string()).await;
        assert_eq!((code, e["error"]["code"].as_str()), (400, Some("invalid_platform")), "{edit}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(field), "{edit}: {e}");
    }
    let (_, list) = app.get("/api/lti/platforms").await;
    assert_eq!(list["platforms"].as_array().unwrap().len(), 1);
    // An LMS key is not enough.
    let r = client_with_key(&app.lms_key).get(app.url("/api/lti/platforms")).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The CLI: info, list, add, remove.
    let server = app.url("");
    let out = cli(&server, &app.admin_key, &["lti", "info"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{server}/lti/login")) && text.contains(&format!("{server}/lti/jwks")), "{text}");
    let out = cli(
        &server,
        &app.admin_key,
        &[
            "lti",
            "add",
            "--issuer",
            "https://moodle.example.edu",
            "--client-id",
            "abc",
            "--deployment-id",
            "1",
            "--deployment-id",
            "2",
            "--auth-url",
            "https://moodle.example.edu/mod/lti/auth.php",
            "--token-url",
            "https://moodle.example.edu/mod/lti/token.php",
            "--jwks-url",
            "https://moodle.example.edu/mod/lti/certs.php",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&server, &app.admin_key, &["lti", "list"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("https://moodle.example.edu") && text.contains("1,2") && text.contains(ISSUER), "{text}");
    // A bad value is named before anything is sent.
    let out = cli(
        &server,
        &app.admin_key,
        &[
            "lti",
            "add",
            "--issuer",
            "ftp://x",
            "--client-id",
            "c",
            "--deployment-id",
            "1",
            "--auth-url",
            "https://a",
            "--token-url",
            "https://a",
            "--jwks-url",
            "https://a",
        ],
    )
    .await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("issuer"));
    let out = cli(&server, &app.admin_key, &["lti", "remove", &id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = app.client.delete(app.url(&format!("/api/lti/platforms/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "platform_not_found");
    let (_, list) = app.get("/api/lti/platforms").await;
    assert_eq!(list["platforms"].as_array().unwrap().len(), 1, "the Moodle one is left");

    // The tool's key set: one RS256 key, the same on every read (it is stored, not made per request).
    let jwks: Value = reqwest::get(app.url("/lti/jwks")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!((jwks["keys"][0]["kty"].as_str(), jwks["keys"][0]["alg"].as_str()), (Some("RSA"), Some("RS256")));
    let mut app = app;
    app.restart().await;
    let again: Value = reqwest::get(app.url("/lti/jwks")).await.unwrap().json().await.unwrap();
    assert_eq!(again, jwks, "the key survives a restart");
}

#[tokio::test]
async fn a_launch_is_checked_recorded_once_and_handed_over() {
    let app = spawn_app().await;
    let (key, body) = platform();
    assert_eq!(app.post_json("/api/lti/platforms", &body.to_string()).await.0, 201);
    let student = workspaced::lti::student_id_for(ISSUER, "u-1", "ctx-9", None);
    let course = workspaced::lti::course_id_for(ISSUER, "ctx-9");

    // Refusals first: each has its code, and none makes a course or a workspace.
    let (state, nonce) = login(&app).await;
    let mut bad = claims(&nonce, "u-1");
    bad["aud"] = json!("someone-else");
    let (code, page) = post_launch(&app, &key.sign(&bad), &state).await;
    assert_eq!((code, code_of(&page)), (401, Some("lti_wrong_audience")), "{page}");
    let (code, page) = post_launch(&app, &key.sign(&claims(&nonce, "u-1")), &format!("{state}x")).await;
    assert_eq!((code, code_of(&page)), (401, Some("lti_bad_state")));
    let (code, page) = post_launch(&app, &key.sign(&claims("another-nonce", "u-1")), &state).await;
    assert_eq!((code, code_of(&page)), (401, Some("lti_wrong_nonce")));
    let (code, page) = post_launch(&app, "not.a.jwt", &state).await;
    assert_eq!((code, code_of(&page)), (400, Some("lti_malformed_token")));
    let r = no_redirects()
        .get(app.url("/lti/login"))
        .query(&[
            ("iss", "https://unknown.example.edu"),
            ("login_hint", "u"),
            ("target_link_uri", &app.url("/lti/launch")),
        ])
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert_eq!(code_of(&page), Some("lti_unknown_platform"));
    assert!(page.contains("workspaced lti add"), "the page says what to do: {page}");
    let r = no_redirects()
        .get(app.url("/lti/login"))
        .query(&[("iss", ISSUER), ("login_hint", "u"), ("target_link_uri", "https://evil.example.com/")])
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(&r.text().await.unwrap()), Some("lti_bad_request"));
    assert_eq!(app.get("/api/courses").await.1["courses"], json!([]), "no course from refused launches");
    assert_eq!(app.get("/api/workspaces").await.1["workspaces"], json!([]), "no workspace from refused launches");

    // A good launch: the course is made (titled as the context), the workspace put in it, and the page hands the
    // browser a launch link for it; the LMS (and only it) may show the page in a frame.
    let token = key.sign(&claims(&nonce, "u-1"));
    let r = no_redirects()
        .post(app.url("/lti/launch"))
        .form(&[("id_token", token.as_str()), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert_eq!(csp, "frame-ancestors 'self' https://lms.example.edu");
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!("/w/{student}/_workspaced/launch?token=")), "{page}");
    let (_, c) = app.get(&format!("/api/courses/{course}")).await;
    assert_eq!(c["title"], "Data Structures");
    let (_, w) = app.get(&format!("/api/workspaces/{student}")).await;
    assert_eq!(w["course"], course.as_str());
    // The same launch again (a reload, or a replay by someone who saw it): refused.
    let (code, page) = post_launch(&app, &token, &state).await;
    assert_eq!((code, code_of(&page)), (401, Some("lti_replayed")));
    // An operator's profile of the course is never replaced by a later launch.
    assert_eq!(app.put_json(&format!("/api/courses/{course}"), r#"{"title":"DS (operator)","cpus":2}"#).await.0, 200);
    let (state, nonce) = login(&app).await;
    assert_eq!(post_launch(&app, &key.sign(&claims(&nonce, "u-2")), &state).await.0, 200);
    let (_, c) = app.get(&format!("/api/courses/{course}")).await;
    assert_eq!((c["title"].as_str(), c["profile"]["cpus"].as_f64()), (Some("DS (operator)"), Some(2.0)));
    assert_eq!(c["workspaces"], 2);
}

/// The staff's course page and its actions, attacked as a learner or another course's staff would: no cookie, a
/// forged one, one for another course, a used ticket, a missing form token, a student of another course.
#[tokio::test]
async fn the_course_page_and_its_actions_refuse_everyone_but_this_courses_staff() {
    let app = spawn_app().await;
    let (key, body) = platform();
    assert_eq!(app.post_json("/api/lti/platforms", &body.to_string()).await.0, 201);
    let course = workspaced::lti::course_id_for(ISSUER, "ctx-9");
    // A learner launches (so the course has a workspace), then an instructor.
    let (state, nonce) = login(&app).await;
    assert_eq!(post_launch(&app, &key.sign(&claims(&nonce, "u-1")), &state).await.0, 200);
    let learner = workspaced::lti::student_id_for(ISSUER, "u-1", "ctx-9", None);
    let (state, nonce) = login(&app).await;
    let mut staff = claims(&nonce, "u-9");
    staff[CLAIM_ROLES] = json!(["http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"]);
    let (code, page) = post_launch(&app, &key.sign(&staff), &state).await;
    assert_eq!(code, 200, "{page}");
    let path = format!("/lti/course/{course}?ticket=");
    let at = page.find(&path).expect("the hand-off names the course page");
    let ticket_url = page[at..].split('"').next().unwrap().replace("&amp;", "&");
    let r = no_redirects().get(app.url(&ticket_url)).send().await.unwrap();
    assert!(r.status().is_redirection());
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("workspaced_lti_staff="), "{cookie}");
    let get = |path: String, cookie: Option<String>| {
        let mut req = no_redirects().get(app.url(&path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let page_path = format!("/lti/course/{course}");
    let (code, page) = get(page_path.clone(), Some(cookie.clone())).await;
    assert_eq!(code, 200, "the staff member's own page");
    assert!(page.contains(&format!("data-student=\"{learner}\"")), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    // The ticket works once.
    let (_, page) = get(ticket_url.clone(), None).await;
    assert_eq!(code_of(&page), Some("lti_replayed"));
    // No cookie, a forged one, and this cookie on another course's page.
    let (code, page) = get(page_path.clone(), None).await;
    assert_eq!((code, code_of(&page)), (400, Some("lti_bad_request")));
    let forged = format!("{}0", cookie.trim_end_matches(|c: char| c.is_ascii_hexdigit()));
    assert_eq!(get(page_path.clone(), Some(forged)).await.0, 400);
    let other = format!("workspaced_lti_staff={course}.x.99999999999999.{}", "0".repeat(64));
    assert_eq!(get(page_path.clone(), Some(other)).await.0, 400);
    assert_eq!(get("/lti/course/lti-000000000000".into(), Some(cookie.clone())).await.0, 400);
    assert_eq!(get("/lti/course/NOT..VALID".into(), Some(cookie.clone())).await.0, 400);

    let post = |action: &str, form: Vec<(&str, String)>, cookie: Option<String>| {
        let mut req = no_redirects().post(app.url(&format!("/lti/course/{course}/{action}"))).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let student = || ("student", learner.to_string());
    // Without the staff cookie (a learner's browser): 403; without the form token (a page of another site): refused.
    let (code, page) = post("stop", vec![student(), ("csrf", csrf.clone())], None).await;
    assert_eq!((code, code_of(&page)), (403, Some("lti_not_staff")));
    let (_, page) = post("stop", vec![student()], Some(cookie.clone())).await;
    assert_eq!(code_of(&page), Some("lti_bad_state"));
    // A student of no course here, an id that is none, an unknown action.
    let (_, page) = post("open", vec![("student", "bob".into()), ("csrf", csrf.clone())], Some(cookie.clone())).await;
    assert_eq!(code_of(&page), Some("lti_bad_request"));
    let (_, page) = post("open", vec![("student", "../x".into()), ("csrf", csrf.clone())], Some(cookie.clone())).await;
    assert_eq!(code_of(&page), Some("lti_bad_request"));
    let (_, page) = post("delete", vec![student(), ("csrf", csrf.clone())], Some(cookie.clone())).await;
    assert_eq!(code_of(&page), Some("lti_bad_request"));
    // None of it was audited: only real actions are.
    let (_, events) = app.get(&format!("/api/workspaces/{learner}")).await;
    assert_ne!(events["status"], "running", "the learner's workspace was never started by a refused action");
    let kinds = app.event_kinds(learner.as_str()).await;
    assert!(!kinds.iter().any(|k| k == "staff_access"), "{kinds:?}");
    // The real action, with cookie and token, is audited.
    let (code, _) = post("open", vec![student(), ("csrf", csrf)], Some(cookie)).await;
    assert_eq!(code, 303);
    assert!(app.event_kinds(learner.as_str()).await.iter().any(|k| k == "staff_access"));
}
