//! The CLI's HTTP client of a running server: sends the key from `WORKSPACED_API_KEY`, reads every answer into
//! the shared types of [`crate::api`], and turns an error answer into [`ClientError::Api`] with its code.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::ErrorBody;
use crate::config::Settings;

/// The environment variable the CLI's server calls take their API key from.
pub const API_KEY_ENV: &str = "WORKSPACED_API_KEY";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("cannot reach workspaced (is `workspaced serve` running?)")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server refused: its error body, shown as `<message> (<code>)`.
    #[error("{message} ({code})")]
    Api { status: StatusCode, code: String, message: String },
    #[error("unexpected answer from {url} ({status})")]
    Unexpected {
        url: String,
        status: StatusCode,
        #[source]
        source: reqwest::Error,
    },
}

/// The server's base URL: `--server` (or `WORKSPACED_URL`), else the configured public URL.
pub fn server_base(settings: &Settings, server: Option<&str>) -> String {
    server.map(str::to_owned).unwrap_or_else(|| settings.public_url()).trim_end_matches('/').to_owned()
}

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: String) -> Result<Self, ClientError> {
        Self::build(base, None)
    }

    /// A client whose every call gives up after `timeout` (for a question asked on the side, like "does it run?").
    pub fn with_timeout(base: String, timeout: Duration) -> Result<Self, ClientError> {
        Self::build(base, Some(timeout))
    }

    fn build(base: String, timeout: Option<Duration>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty()) {
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")) {
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        Ok(Self { base, http: builder.build().map_err(ClientError::Build)? })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, ClientError> {
        read(self.send(self.http.get(self.url(path)).query(query)).await?).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        read(self.send(self.http.post(self.url(path))).await?).await
    }

    /// A DELETE whose answer has no body.
    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(path)).query(query)).await.map(drop)
    }

    /// A PUT of a JSON body, its answer read as `T`.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        read(self.send(self.http.put(self.url(path)).json(body)).await?).await
    }

    /// A POST whose successful answer the caller reads itself (a stream).
    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<reqwest::Response, ClientError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// Sends, and turns an unsuccessful answer into its error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Unreachable { base: self.base.clone(), source })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Not every failure carries our body (a proxy in front, another service on the port): the status then.
        let body = resp.json::<ErrorBody>().await.ok();
        let (code, message) = match body {
            Some(b) => (b.error.code, b.error.message),
            None => ("unknown".to_owned(), status.to_string()),
        };
        Err(ClientError::Api { status, code, message })
    }
}

async fn read<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let (url, status) = (resp.url().to_string(), resp.status());
    resp.json().await.map_err(|source| ClientError::Unexpected { url, status, source })
}
