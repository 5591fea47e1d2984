//! The admin API over HTTP: one request at a time, answers as JSON, failures as [`Failure`]s that
//! carry the exit code a script can act on.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How `vexilctl` ends; the numbers are its documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 1: anything else (control unreachable, a server error, an unreadable file).
    Error = 1,
    /// 3: no such environment, flag, token.
    NotFound = 3,
    /// 4: a conflict: it exists already, it changed meanwhile (`409`, `412`).
    Conflict = 4,
    /// 5: no token, a bad token, or not allowed (`401`, `403`).
    Denied = 5,
    /// 6: the server refused the input (`400`, `413`, `422`).
    Invalid = 6,
    /// 7: `wait` ended before every sidecar had the revision.
    Timeout = 7,
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::new(Exit::Error, format!("{e:#}"))
    }
}

/// An answer: status, `ETag`, body.
pub struct Answer {
    pub etag: Option<String>,
    pub body: Value,
    pub text: String,
}

/// The admin API at `base` (`http://host:port`), with a bearer token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .user_agent(concat!("vexilctl/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// `METHOD /api/v1{path}` with an optional JSON body and `If-Match`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, Failure> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::new(Exit::Error, format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .map_err(|e| Failure::new(Exit::Error, format!("{method} {url}: {e}")))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Answer { etag, body, text });
        }
        Err(problem(status, &body, &text, &method, path))
    }

    pub async fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.call(Method::GET, path, None, None).await
    }
}

/// A problem+json answer as a message and an exit code.
fn problem(status: StatusCode, body: &Value, text: &str, method: &Method, path: &str) -> Failure {
    let exit = match status.as_u16() {
        401 | 403 => Exit::Denied,
        404 => Exit::NotFound,
        409 | 412 | 428 => Exit::Conflict,
        400 | 413 | 415 | 422 => Exit::Invalid,
        _ => Exit::Error,
    };
    let detail = body["detail"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().chars().take(300).collect());
    let mut message = format!("{method} {path}: {status}: {detail}");
    for e in body["errors"].as_array().into_iter().flatten() {
        message.push_str(&format!(
            "\n  {}: {}",
            e["path"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("?")
        ));
    }
    if status == StatusCode::UNAUTHORIZED {
        message.push_str("\n  (give a token with --token or VEXIL_TOKEN)");
    }
    Failure::new(exit, message)
}
