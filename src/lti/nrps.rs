//! Names and Role Provisioning Services: the course's roster, read from the platform with an OAuth 2 token the
//! tool gets by signing a client assertion with its own key (LTI Advantage's client credentials grant).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::token::ToolKey;
use super::Platform;

const SCOPE: &str = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";
const MEDIA_TYPE: &str = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";
/// Deadline of each request to the platform.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (token or one page of members).
const MAX_BODY: usize = 4 << 20;
/// Most pages followed (`Link: <...>; rel="next"`).
const MAX_PAGES: usize = 20;

/// One member of the context as the platform lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// The roster at `memberships_url` (from the launch's NRPS claim). The error is a sentence for the course page.
pub async fn roster(platform: &Platform, key: &ToolKey, memberships_url: &str) -> Result<Vec<Member>, String> {
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let assertion = key.sign(&serde_json::json!({
        "iss": platform.client_id, "sub": platform.client_id, "aud": platform.token_url,
        "iat": now, "exp": now + 300, "jti": hex::encode(rand::random::<[u8; 16]>()),
    }));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
        ("scope", SCOPE),
    ];
    let body = serde_urlencoded_form(&form);
    let r = http
        .post(&platform.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the token request failed: {}", e.without_url()))?;
    let status = r.status();
    let answer = read_limited(r).await?;
    if !status.is_success() {
        return Err(format!("the platform refused the token request ({status})"));
    }
    let token: TokenAnswer =
        serde_json::from_slice(&answer).map_err(|e| format!("the token answer is not one: {e}"))?;
    let mut members = Vec::new();
    let mut next = Some(memberships_url.to_owned());
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let r = http
            .get(&url)
            .bearer_auth(&token.access_token)
            .header("accept", MEDIA_TYPE)
            .send()
            .await
            .map_err(|e| format!("the roster request failed: {}", e.without_url()))?;
        if !r.status().is_success() {
            return Err(format!("the platform refused the roster request ({})", r.status()));
        }
        next = r.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).find_map(next_link);
        let page: Container =
            serde_json::from_slice(&read_limited(r).await?).map_err(|e| format!("the roster is not one: {e}"))?;
        members.extend(page.members);
    }
    Ok(members)
}

/// `<url>; rel="next"` out of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        params.contains("rel=\"next\"").then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

async fn read_limited(mut r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.without_url().to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err("the platform's answer is too large".into());
        }
    }
    Ok(body)
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn serde_urlencoded_form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v))).collect::<Vec<_>>().join("&")
}

/// Percent-encodes everything but the unreserved characters.
pub fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_and_escaping() {
        assert_eq!(
            next_link(r#"<https://lms/x?p=2>; rel="next", <https://lms/x?p=1>; rel="prev""#),
            Some("https://lms/x?p=2".into())
        );
        assert_eq!(next_link(r#"<https://lms/x?p=1>; rel="prev""#), None);
        assert_eq!(form_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
