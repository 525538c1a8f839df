//! A client of the console's API, as the page uses it: log in, keep the cookie and the CSRF
//! token, call the API. The demo's simulated officers act through it, so they meet the same
//! sessions, roles and refusals a person does. Blocking (ureq): call from a blocking context.

use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("console at {url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    #[error("console at {url}: {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("console login: no session cookie in the answer")]
    NoCookie,
}

pub struct ConsoleClient {
    base: String,
    agent: ureq::Agent,
    cookie: String,
    csrf: String,
}

/// An answer: its status and its JSON (`{}` when it had none).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

impl ConsoleClient {
    /// Logs `user` in at `base` (`http://127.0.0.1:8470`).
    pub fn login(base: &str, user: &str, password: &str) -> Result<ConsoleClient, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{base}/login");
        let mut r = agent
            .post(&url)
            .send_json(json!({ "user": user, "password": password }))
            .map_err(|e| ClientError::Http { url: url.clone(), source: Box::new(e) })?;
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let body: Value = r.body_mut().read_json().unwrap_or_default();
        if status != 200 {
            return Err(ClientError::Status { url, status, body: body.to_string() });
        }
        let csrf = body["csrf"].as_str().unwrap_or_default().to_string();
        Ok(ConsoleClient { base: base.into(), agent, cookie: cookie.ok_or(ClientError::NoCookie)?, csrf })
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).header("cookie", &self.cookie).call();
        answer(url, r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.post(&url).header("cookie", &self.cookie).header("x-csrf-token", &self.csrf).send_json(body);
        answer(url, r)
    }

    /// The open review of the parcel with `tracking` on the officer's screen, if any (the
    /// newest, should a tracking id have been reused).
    pub fn review_of(&self, tracking: u32) -> Result<Option<Value>, ClientError> {
        let a = self.get("/api/reviews")?;
        let reviews = a.body["reviews"].as_array().cloned().unwrap_or_default();
        Ok(reviews.into_iter().filter(|r| r["tracking"] == json!(tracking)).max_by_key(|r| r["serial"].as_u64()))
    }

    /// The parcel with `tracking` on the live line, if any.
    pub fn on_line(&self, tracking: u32) -> Result<Option<Value>, ClientError> {
        let a = self.get("/api/line")?;
        let parcels = a.body["parcels"].as_array().cloned().unwrap_or_default();
        Ok(parcels.into_iter().filter(|p| p["tracking"] == json!(tracking)).max_by_key(|p| p["serial"].as_u64()))
    }
}

fn answer(url: String, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, ClientError> {
    let mut r = r.map_err(|e| ClientError::Http { url, source: Box::new(e) })?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_json().unwrap_or_else(|_| json!({}));
    Ok(Answer { status, body })
}
