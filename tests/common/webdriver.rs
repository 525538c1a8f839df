//! A minimal W3C WebDriver client for the browser tests: Debian's chromedriver on a free loopback
//! port, one headless Chromium session with a fresh profile, blocking HTTP over ureq. Only what
//! the tests use: navigation, CSS lookups, clicks, typing, text and attributes, scripts and
//! screenshots. Dropping the [`Browser`] ends the session and the driver.

use serde_json::{json, Value};
use sortline::clock::Stopwatch;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C key of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often the `wait_*` helpers look again.
pub const POLL: Duration = Duration::from_millis(100);

/// Whether the browser and its driver are installed where the tests expect them.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

#[derive(Debug, Clone)]
pub enum Error {
    /// The driver answered with a W3C error (`code` as "stale element reference", "no such
    /// element", "element click intercepted", …).
    Driver { code: String, message: String },
    /// A `wait_*` helper gave up.
    Timeout(String),
    /// Transport, process or protocol trouble.
    Other(String),
}

impl Error {
    /// The page changed under us (re-rendered, element moved or covered): looking again may work.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Driver { code, .. } if matches!(code.as_str(),
            "stale element reference" | "no such element" | "element click intercepted"
            | "element not interactable"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Driver { code, message } => {
                // chromedriver's messages carry a stack trace after the first line.
                write!(f, "webdriver: {code}: {}", message.lines().next().unwrap_or(""))
            }
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Other(what) => write!(f, "{what}"),
        }
    }
}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An element of the current page, as the driver names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

impl Element {
    /// The reference to pass as a script argument.
    pub fn to_json(&self) -> Value {
        json!({ ELEMENT_KEY: self.0 })
    }

    fn from_json(v: &Value) -> Result<Element> {
        v.get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .map(|id| Element(id.to_string()))
            .ok_or_else(|| Error::Other(format!("not an element reference: {v}")))
    }
}

pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT`, the driver.
    base: String,
    session: Option<String>,
    driver: Child,
    driver_log: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; the driver's log goes to
    /// `log_dir/chromedriver.log`.
    pub fn start(log_dir: &Path) -> Result<Browser> {
        let port = free_port()?;
        let driver_log = log_dir.join("chromedriver.log");
        let log =
            std::fs::File::create(&driver_log).map_err(|e| Error::Other(format!("{}: {e}", driver_log.display())))?;
        let log2 = log.try_clone().map_err(|e| Error::Other(e.to_string()))?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Other(format!("starting {CHROMEDRIVER}: {e}")))?;
        let profile = tempfile::Builder::new()
            .prefix("sortline-chromium-")
            .tempdir()
            .map_err(|e| Error::Other(format!("profile directory: {e}")))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut b =
            Browser { agent, base: format!("http://127.0.0.1:{port}"), session: None, driver, driver_log, profile };
        b.wait_ready(Duration::from_secs(20))?;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1366,900".into(),
            format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let v = b.raw("POST", "/session", Some(caps))?;
        let id = v
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Other(format!("new session: no sessionId in {v}")))?;
        b.session = Some(id.to_string());
        Ok(b)
    }

    /// Where chromedriver writes its log.
    pub fn driver_log(&self) -> &Path {
        &self.driver_log
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Stopwatch::start();
        let mut last = String::from("no answer");
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(Error::Other(format!(
                    "chromedriver exited at start ({status}); see {}",
                    self.driver_log.display()
                )));
            }
            match self.raw("GET", "/status", None) {
                Ok(v) if v.get("ready").and_then(Value::as_bool) == Some(true) => return Ok(()),
                Ok(v) => last = v.to_string(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(Error::Timeout(format!("chromedriver not ready after {timeout:?}: {last}")))
    }

    /// One request to the driver; the answer's `value`, or its W3C error.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let sent = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            "POST" => self.agent.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
            other => return Err(Error::Other(format!("method {other}"))),
        };
        let mut resp = sent.map_err(|e| Error::Other(format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        // Screenshots are a few MB of base64: above ureq's default body limit.
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::Other(format!("{method} {path}: reading the answer: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("{method} {path}: HTTP {status}, not JSON ({e}): {text:.300}")))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").and_then(Value::as_str).is_some_and(|e| !e.is_empty()) {
            let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let code = if text("error").is_empty() { format!("HTTP {status}") } else { text("error") };
            return Err(Error::Driver { code, message: text("message") });
        }
        Ok(value)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let id = self.session.as_deref().ok_or_else(|| Error::Other("no session".into()))?;
        self.raw(method, &format!("/session/{id}{path}"), body)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).map(drop)
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self.cmd("GET", "/url", None)?.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Result<Option<Element>> {
        Ok(self.find_all(css)?.into_iter().next())
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self.cmd("POST", "/elements", Some(json!({ "using": "css selector", "value": css })))?;
        v.as_array()
            .ok_or_else(|| Error::Other(format!("find {css}: not a list: {v}")))?
            .iter()
            .map(Element::from_json)
            .collect()
    }

    /// The first element matching `css` below `el`, if any.
    pub fn find_in(&self, el: &Element, css: &str) -> Result<Option<Element>> {
        let v = self.cmd(
            "POST",
            &format!("/element/{}/elements", el.0),
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        v.as_array().and_then(|a| a.first()).map(Element::from_json).transpose()
    }

    /// Polls every 100 ms until `f` gives something; transient errors (a re-rendered page) count
    /// as "not yet". `what` names the wait in the timeout error.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Browser) -> Result<Option<T>>,
    ) -> Result<T> {
        let start = Stopwatch::start();
        let mut last_err = None;
        loop {
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) if e.is_transient() => last_err = Some(e),
                Err(e) => return Err(e),
            }
            if start.elapsed() >= timeout {
                let note = last_err.map(|e| format!(" (last: {e})")).unwrap_or_default();
                return Err(Error::Timeout(format!("{what} within {timeout:?}{note}")));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        self.wait_until(timeout, &format!("an element {css}"), |b| b.find(css))
    }

    /// Waits for `css` and clicks it, looking again while the page re-renders under the click.
    pub fn click_css(&self, css: &str, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, &format!("a clickable {css}"), |b| match b.find(css)? {
            Some(el) => b.click(&el).map(Some),
            None => Ok(None),
        })
    }

    pub fn click(&self, el: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({}))).map(drop)
    }

    pub fn clear(&self, el: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/clear", el.0), Some(json!({}))).map(drop)
    }

    pub fn send_keys(&self, el: &Element, text: &str) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/value", el.0), Some(json!({ "text": text }))).map(drop)
    }

    /// The element's rendered text.
    pub fn text(&self, el: &Element) -> Result<String> {
        Ok(self.cmd("GET", &format!("/element/{}/text", el.0), None)?.as_str().unwrap_or_default().to_string())
    }

    /// An attribute (or the property of that name, per WebDriver's rules); `None` when absent.
    pub fn attr(&self, el: &Element, name: &str) -> Result<Option<String>> {
        let v = self.cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None)?;
        Ok(match v {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }

    /// The element's tag name, lower case.
    pub fn tag(&self, el: &Element) -> Result<String> {
        Ok(self.cmd("GET", &format!("/element/{}/name", el.0), None)?.as_str().unwrap_or_default().to_lowercase())
    }

    /// Runs `script` as a function body with `arguments`; its return value.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The page's text of `css` (the first match), or `None` while there is none.
    pub fn text_of(&self, css: &str) -> Result<Option<String>> {
        match self.find(css)? {
            Some(el) => self.text(&el).map(Some),
            None => Ok(None),
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.cmd("GET", "/screenshot", None)?;
        let b64 = v.as_str().ok_or_else(|| Error::Other("screenshot: not a string".into()))?;
        let png = base64_decode(b64).ok_or_else(|| Error::Other("screenshot: bad base64".into()))?;
        std::fs::write(path, png).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// The page's HTML as it is now.
    pub fn page_source(&self) -> Result<String> {
        Ok(self.cmd("GET", "/source", None)?.as_str().unwrap_or_default().to_string())
    }

    /// The browser's console messages since the last call (chromedriver's log extension).
    pub fn console_log(&self) -> Result<Vec<String>> {
        let v = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        format!("{} {}", s("level"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.cmd("DELETE", "", None);
            self.session = None;
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Other(format!("free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Other(e.to_string()))?.port())
}

/// Standard base64 (with padding, whitespace ignored), enough for screenshots.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let data = clean.strip_suffix(b"==").or_else(|| clean.strip_suffix(b"=")).unwrap_or(&clean);
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
