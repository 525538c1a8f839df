//! The console's HTTP API (docs/console.md): sessions, CSRF, roles, and every action as an
//! operator's command through the core (stored, taken, recorded, then answered).

use super::board::{Activity, Board, Counters, Done};
use super::session::{LoginLimiter, Session, Sessions};
use super::users::{Role, UserStore};
use crate::clock;
use crate::core::{Input, Millis, OfficerId, ParcelId, TrackingId, Verdict, Waybill};
use crate::daemon::{Command, CoreMsg};
use crate::mqtt::command::{self as mqtt_command, Action, Reply};
use crate::mqtt::wiring::Figures;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_stream::StreamExt;

/// Largest request body read.
pub const MAX_BODY: usize = 16 * 1024;
/// Longest note at the inspection desk.
pub const MAX_NOTE: usize = 500;
pub const COOKIE: &str = "sortline_session";
/// How long an action waits for the line's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What the line was configured with, shown where no operator changed it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Defaults {
    pub sample_rate: crate::core::PerChannel<f64>,
    pub xray_review_ratio: crate::core::PerChannel<f64>,
    pub review_window_ms: Option<u64>,
}

impl Defaults {
    pub fn of(cfg: &crate::config::Loaded) -> Defaults {
        Defaults {
            sample_rate: cfg.line.sampling.sample_rate,
            xray_review_ratio: cfg.line.sampling.xray_review_ratio,
            review_window_ms: cfg.line.timing.review_window_ms,
        }
    }
}

/// Everything the handlers share.
pub struct Ctx {
    pub board: Arc<Board>,
    pub core: crossbeam_channel::Sender<CoreMsg>,
    pub users: Mutex<UserStore>,
    pub sessions: Mutex<Sessions>,
    pub limiter: Mutex<LoginLimiter>,
    pub counters: Counters,
    pub figures: Figures,
    /// `true` when the line has an X-ray station.
    pub xray: bool,
    /// The MQTT publisher's figures, when there is one (is the broker connected).
    pub broker: Option<tokio::sync::watch::Receiver<crate::mqtt::MqttStats>>,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub defaults: Defaults,
    pub clock: clock::Stopwatch,
    pub requests: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Answer = Result<Response, ApiError>;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", super::INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", super::APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", super::APP_CSS) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/reviews", get(reviews))
        .route("/api/reviews/:review/verdict", post(verdict))
        .route("/api/images/:sha256/:kind", get(image))
        .route("/api/line", get(line))
        .route("/api/transfer", post(transfer))
        .route("/api/inspection", get(find_inspection).post(inspection))
        .route("/api/supervision", get(supervision))
        .route("/api/targets", post(target_add))
        .route("/api/targets/:id/remove", post(target_remove))
        .route("/api/rates", post(rates))
        .route("/api/flags/clear", post(clear_flag))
        .route("/api/line/stop", post(line_stop))
        .route("/api/line/start", post(line_start))
        .route("/events", get(events))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ctx)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let csp = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; frame-ancestors 'none'";
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Equal in time whatever the contents (a CSRF token compared byte by byte would leak its prefix).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed_ms()
    }

    /// The request's session, or 401. It ends once its user is disabled or their password
    /// changed (`sortline user`, while the daemon runs).
    fn session(&self, headers: &HeaderMap) -> Result<Session, ApiError> {
        let token = cookie_token(headers).ok_or_else(|| self.unauthenticated())?;
        let s = lock(&self.sessions).touch(token, self.now_ms()).ok_or_else(|| self.unauthenticated())?;
        if !self.user_stands(&s) {
            lock(&self.sessions).close(token);
            return Err(self.unauthenticated());
        }
        Ok(s)
    }

    fn user_stands(&self, s: &Session) -> bool {
        let current = lock(&self.users).get(&s.user).ok().flatten();
        current.is_some_and(|u| !u.disabled && u.changed_ms == s.user_changed_ms)
    }

    /// Whether an event stream opened with `token` may go on.
    fn stream_stands(&self, token: &str) -> bool {
        let s = lock(&self.sessions).stands(token, self.now_ms()).cloned();
        s.is_some_and(|s| self.user_stands(&s))
    }

    fn unauthenticated(&self) -> ApiError {
        self.counters.count("no_session");
        ApiError(StatusCode::UNAUTHORIZED, "not logged in, or the session ended".into())
    }

    /// The session of a state-changing request: its CSRF token checked, its role allowed. A
    /// refusal past the session is recorded with the user.
    async fn acting(
        &self,
        headers: &HeaderMap,
        action: &'static str,
        allowed: fn(Role) -> bool,
    ) -> Result<Session, ApiError> {
        let s = self.session(headers)?;
        let token = headers.get("x-csrf-token").map(|v| v.as_bytes()).unwrap_or_default();
        if !same(token, s.csrf.as_bytes()) {
            return Err(self
                .refuse(Some(&s), action, "csrf", StatusCode::FORBIDDEN, "missing or stale CSRF token")
                .await);
        }
        if !allowed(s.role) {
            let why = format!("the role {} may not {action}", s.role.as_str());
            return Err(self.refuse(Some(&s), action, "role", StatusCode::FORBIDDEN, &why).await);
        }
        Ok(s)
    }

    fn reply(&self, user: Option<&str>, action: &str) -> Reply {
        Reply {
            command: action.into(),
            request_id: Some(format!("console-{}", self.requests.fetch_add(1, Ordering::Relaxed) + 1)),
            operator: user.map(str::to_string),
            status: "accepted",
            error: None,
            via: Some("console"),
        }
    }

    /// Counts and logs a refused request, and says why; with a session, records it too (nobody
    /// logged in may write to the chain but by logging in, which is limited).
    async fn refuse(
        &self,
        s: Option<&Session>,
        action: &str,
        kind: &'static str,
        status: StatusCode,
        why: &str,
    ) -> ApiError {
        self.counters.count(kind);
        tracing::warn!(user = s.map(|s| s.user.as_str()), action, kind, why, "console request refused");
        if let Some(s) = s {
            let reply = self.reply(Some(&s.user), action).refused_with(format!("{kind}: {why}"));
            self.send(reply, None).await;
        }
        ApiError(status, why.into())
    }

    /// An operator's action through the core: stored, taken, recorded; the core's answer.
    async fn send(&self, reply: Reply, input: Option<Input>) -> Option<Reply> {
        let (respond, mut answer) = tokio::sync::mpsc::unbounded_channel();
        let msg = CoreMsg::Command(Box::new(Command { reply, input, respond: Some(respond) }));
        let core = self.core.clone();
        // The core's queue is bounded: waiting for room is for a blocking thread.
        let sent = tokio::task::spawn_blocking(move || core.send(msg).is_ok()).await.unwrap_or(false);
        if !sent {
            return None;
        }
        tokio::time::timeout(ANSWER_WITHIN, answer.recv()).await.ok().flatten()
    }

    /// `input` on behalf of `s`: 200 with the reply once the line took it and it is on record,
    /// 409 with the line's reason when it refused.
    async fn act(&self, s: &Session, action: &str, input: Input) -> Result<Reply, ApiError> {
        let reply = self.reply(Some(&s.user), action);
        match self.send(reply, Some(input)).await {
            None => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the line did not answer".into())),
            Some(r) if r.status == "accepted" => Ok(r),
            Some(r) => {
                self.counters.count("refused_by_line");
                Err(ApiError(StatusCode::CONFLICT, r.error.unwrap_or_else(|| "refused".into())))
            }
        }
    }

    /// An MQTT-schema command from a console body: the console names the operator and the
    /// request, so a body cannot speak for anyone else.
    async fn mqtt_command(&self, s: &Session, name: &'static str, mut body: serde_json::Map<String, Value>) -> Answer {
        body.insert("request_id".into(), json!("console"));
        body.insert("operator".into(), json!(s.user));
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let accepted = match mqtt_command::parse(name, &payload) {
            Ok(a) => a,
            Err(r) => return Err(self.refuse(Some(s), name, "bad_request", StatusCode::BAD_REQUEST, &r.error).await),
        };
        let Action::Core(input) = accepted.action else {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("{name} is not a console action")));
        };
        ok(self.act(s, name, input).await?)
    }
}

fn ok(reply: Reply) -> Answer {
    Ok(Json(json!({ "status": reply.status, "request_id": reply.request_id })).into_response())
}

/// The body as JSON, at most [`MAX_BODY`] bytes.
async fn body_json<T: for<'de> Deserialize<'de>>(
    ctx: &Ctx,
    s: Option<&Session>,
    action: &str,
    body: Body,
) -> Result<T, ApiError> {
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let why = format!("body larger than {MAX_BODY} bytes");
            return Err(ctx.refuse(s, action, "too_large", StatusCode::PAYLOAD_TOO_LARGE, &why).await);
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => Err(ctx.refuse(s, action, "bad_request", StatusCode::BAD_REQUEST, &format!("bad body: {e}")).await),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(State(ctx): State<Arc<Ctx>>, peer: Option<ConnectInfo<SocketAddr>>, body: Body) -> Answer {
    let b: LoginBody = body_json(&ctx, None, "login", body).await?;
    let name: String = b.user.chars().filter(|c| !c.is_control()).take(64).collect();
    let addr = peer.map_or_else(|| "unknown".to_string(), |p| p.0.ip().to_string());
    let keys = [name.as_str(), addr.as_str()];
    if !lock(&ctx.limiter).allowed(&keys, ctx.now_ms()) {
        ctx.counters.count("login_limited");
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try again in a few minutes".into(),
        ));
    }
    let (c, who) = (ctx.clone(), name.clone());
    let user = tokio::task::spawn_blocking(move || {
        let credentials = lock(&c.users).credentials(&who)?;
        credentials.check(&b.password)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Some(user) = user else {
        lock(&ctx.limiter).failed(&keys, ctx.now_ms());
        let operator = OfficerId::new(&name).ok().map(|o| o.to_string());
        ctx.counters.count("login_failed");
        let reply =
            ctx.reply(operator.as_deref(), "login").refused_with(format!("wrong user or password, from {addr}"));
        ctx.send(reply, None).await;
        return Err(ApiError(StatusCode::UNAUTHORIZED, "wrong user or password".into()));
    };
    lock(&ctx.limiter).succeeded(&user.name);
    let (token, session) = lock(&ctx.sessions).open(&user, ctx.now_ms());
    ctx.send(ctx.reply(Some(&user.name), "login"), None).await;
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    let body = json!({ "user": user.name, "role": user.role, "csrf": session.csrf });
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

async fn logout(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    let s = ctx.acting(&headers, "logout", |_| true).await?;
    if let Some(token) = cookie_token(&headers) {
        lock(&ctx.sessions).close(token);
    }
    ctx.send(ctx.reply(Some(&s.user), "logout"), None).await;
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Json(json!({ "status": "logged out" }))).into_response())
}

async fn me(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    let s = ctx.session(&headers)?;
    let expires_in_s = lock(&ctx.sessions).remaining_ms(&s, ctx.now_ms()) / 1000;
    Ok(Json(json!({ "user": s.user, "role": s.role, "csrf": s.csrf, "expires_in_s": expires_in_s })).into_response())
}

async fn reviews(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    ctx.session(&headers)?;
    Ok(Json(json!({ "reviews": ctx.board.reviews() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    verdict: String,
    image_sha256: Option<String>,
}

async fn verdict(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Path(review): Path<String>, body: Body) -> Answer {
    let s = ctx.acting(&headers, "verdict", Role::decides).await?;
    let b: VerdictBody = body_json(&ctx, Some(&s), "verdict", body).await?;
    let verdict = match b.verdict.as_str() {
        "release" => Verdict::Release,
        "inspect" => Verdict::Inspect,
        "hold" => Verdict::Hold,
        _ => {
            let why = "verdict: one of release, inspect, hold";
            return Err(ctx.refuse(Some(&s), "verdict", "bad_request", StatusCode::BAD_REQUEST, why).await);
        }
    };
    let id = review.trim_start_matches('R').parse().map(crate::core::ReviewId);
    let Some(request) = id.ok().and_then(|id| ctx.board.review(id)) else {
        let why = format!("review {review:.20} is not open: answered, past its cut-off, withdrawn or unknown");
        return Err(ctx.refuse(Some(&s), "verdict", "review_not_open", StatusCode::CONFLICT, &why).await);
    };
    let officer = OfficerId::new(&s.user).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // The image named is the one the officer's screen showed; the line compares it with the
    // review's own, so a verdict about another image is refused on record.
    let input = Input::Verdict {
        parcel: request.parcel,
        review: request.review,
        image_sha256: b.image_sha256.map(Into::into),
        officer,
        verdict,
    };
    let reply = ctx.act(&s, "verdict", input).await?;
    ctx.board.answered(request.review, &s.user, verdict);
    ok(reply)
}

async fn image(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Path((sha256, kind)): Path<(String, String)>,
) -> Answer {
    ctx.session(&headers)?;
    let grey = match kind.as_str() {
        "colour.png" => false,
        "grey.png" => true,
        _ => return Err(ApiError(StatusCode::NOT_FOUND, "colour.png or grey.png".into())),
    };
    let Some((screen, image)) = ctx.board.review_image(&sha256) else {
        return Err(ApiError(StatusCode::NOT_FOUND, "no open review shows this image".into()));
    };
    let png = tokio::task::spawn_blocking(move || {
        if grey {
            crate::xray::display::grey_png(&image)
        } else {
            // Without the regions: the page outlines them, and turns them off.
            crate::xray::display::review_png(&screen, &image, &Default::default())
        }
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=600")], png).into_response())
}

impl Ctx {
    fn health(&self) -> Value {
        let up = |b: bool| if b { "up" } else { "down" };
        let plc = lock(&self.figures.plc).connected;
        let scanner = self.figures.scanner.as_ref().map(|s| s().link.connected);
        json!({
            "plc": up(plc),
            "scanner": scanner.map_or("none", up),
            "xray": if self.xray { "up" } else { "none" },
            "broker": self.broker.as_ref().map_or("none", |b| up(b.borrow().connected)),
        })
    }

    fn line_json(&self) -> Value {
        let mut v = serde_json::to_value(self.board.line()).unwrap_or_default();
        v["stats"] = serde_json::to_value(&*lock(&self.figures.line)).unwrap_or_default();
        v["mode"] = serde_json::to_value(&*lock(&self.figures.mode)).unwrap_or_default();
        v["health"] = self.health();
        v
    }
}

async fn line(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    ctx.session(&headers)?;
    Ok(Json(ctx.line_json()).into_response())
}

async fn transfer(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Answer {
    let s = ctx.acting(&headers, "transfer", Role::decides).await?;
    let b = body_json(&ctx, Some(&s), "transfer", body).await?;
    ctx.mqtt_command(&s, "transfer", b).await
}

#[derive(Deserialize)]
struct WaybillQuery {
    waybill: String,
}

/// One parcel's story as the desk shows it.
#[derive(serde::Serialize)]
struct Story {
    #[serde(flatten)]
    parcel: Done,
    /// Results entered at the bench for the waybill, from the record.
    inspection: Vec<Value>,
}

/// What a decision entry of the record says, as the desk shows a parcel that left the line
/// before this run (its confirmed lane is not known here).
fn decided(e: &crate::audit::Entry) -> Option<Done> {
    let Some(crate::core::Record::Decision { parcel, waybill, lane, reasons, channel, .. }) =
        crate::recorder::record_of(&e.kind, &e.payload)
    else {
        return None;
    };
    Some(Done {
        parcel,
        waybill: waybill.map(|w| w.to_string()),
        channel,
        decided: Some(lane),
        confirmed: None,
        reasons: super::board::labels(&reasons),
        done_wall_ms: None,
    })
}

fn result_view(e: &crate::audit::Entry) -> Option<Value> {
    let Some(Ok(input)) = crate::recorder::input_of(&e.kind, &e.payload) else { return None };
    let event = crate::mqtt::payload::InspectionEvent::new(&input, e.wall_ms)?;
    serde_json::to_value(event).ok()
}

async fn find_inspection(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Query(q): Query<WaybillQuery>) -> Answer {
    ctx.session(&headers)?;
    let waybill = Waybill::parse(q.waybill.trim())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not a waybill: {e}")))?
        .to_string();
    let db = ctx.data_dir.join(crate::audit::DB_FILE);
    let w = waybill.clone();
    let entries = tokio::task::spawn_blocking(move || crate::audit::story(&db, &w))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let own: Vec<_> = entries.iter().filter(|e| e.waybill.as_deref() == Some(waybill.as_str())).collect();
    let inspection: Vec<Value> = own.iter().filter_map(|e| result_view(e)).collect();
    let mut done = ctx.board.done_of(&waybill);
    if done.is_empty() {
        // Left the line before this run: the record's decisions tell, newest first.
        done = own.iter().rev().filter_map(|e| decided(e)).collect();
    }
    if done.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("the line has no record of {waybill}")));
    }
    let parcels: Vec<Story> = done.into_iter().map(|d| Story { parcel: d, inspection: inspection.clone() }).collect();
    Ok(Json(json!({ "waybill": waybill, "parcels": parcels })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectionBody {
    waybill: String,
    outcome: String,
    #[serde(default)]
    note: Option<String>,
}

async fn inspection(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Answer {
    let s = ctx.acting(&headers, "inspection_result", Role::inspects).await?;
    let b: InspectionBody = body_json(&ctx, Some(&s), "inspection_result", body).await?;
    let checked = (|| {
        let waybill = Waybill::parse(b.waybill.trim()).map_err(|e| format!("waybill: {e}"))?;
        let (discrepancy, returned) = match b.outcome.as_str() {
            "no_discrepancy" => (false, false),
            "discrepancy" => (true, false),
            "returned" => (true, true),
            _ => return Err("outcome: one of no_discrepancy, discrepancy, returned".to_string()),
        };
        let note = match b.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => Some(mqtt_command::check_text("note", n, MAX_NOTE)?.to_string()),
            None if discrepancy => return Err("note: say what was found and where the parcel went".to_string()),
            None => None,
        };
        let officer = OfficerId::new(&s.user).map_err(|e| e.to_string())?;
        Ok(Input::InspectionResult { waybill, officer, discrepancy, returned, note })
    })();
    let input = match checked {
        Ok(i) => i,
        Err(why) => {
            return Err(ctx.refuse(Some(&s), "inspection_result", "bad_request", StatusCode::BAD_REQUEST, &why).await)
        }
    };
    ok(ctx.act(&s, "inspection_result", input).await?)
}

async fn supervision(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    ctx.session(&headers)?;
    let (db, rules_dir) = (ctx.data_dir.join(crate::manifest::DB_FILE), ctx.rules_dir.clone());
    let read = tokio::task::spawn_blocking(move || {
        let store = crate::manifest::OperatorStore::open(&db).map_err(|e| e.to_string())?;
        let state = store.operator_state().map_err(|e| e.to_string())?;
        let targets = store.standing_targets(clock::wall_ms()).map_err(|e| e.to_string())?;
        let rules = match crate::config::rules_input(&rules_dir, None) {
            Ok(Input::Rules { rules, .. }) => serde_json::to_value(rules).unwrap_or_default(),
            Ok(_) => Value::Null,
            Err(e) => json!({ "error": e.to_string() }),
        };
        Ok::<_, String>((state, targets, rules))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (state, targets, rules) = read.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let targets: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({ "id": t.id, "criterion": t.criterion, "author": t.author, "reason": t.reason,
                    "created_wall_ms": t.created_ms, "expires_wall_ms": t.expires_ms })
        })
        .collect();
    let d = &ctx.defaults;
    let activity: Vec<Activity> = ctx.board.activity();
    Ok(Json(json!({
        "targets": targets,
        "sample_rate": state.sample_rate.unwrap_or(d.sample_rate),
        "xray_review_ratio": state.xray_review_ratio.unwrap_or(d.xray_review_ratio),
        "review_window_ms": state.review_window_ms.or(d.review_window_ms),
        "stopped_by": state.stopped_by,
        "rules": rules,
        "activity": activity,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    target_id: String,
    by: String,
    value: String,
    reason: String,
    #[serde(default)]
    expires_in_min: Option<u32>,
}

async fn target_add(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Answer {
    let s = ctx.acting(&headers, "target_add", Role::supervises).await?;
    let b: TargetBody = body_json(&ctx, Some(&s), "target_add", body).await?;
    let mqtt = json!({ "request_id": "console", "operator": s.user, "target_id": b.target_id,
                       "criterion": { "by": b.by, "value": b.value }, "reason": b.reason });
    let parsed = mqtt_command::parse("target_add", mqtt.to_string().as_bytes());
    let mut target = match parsed.map(|a| a.action) {
        Ok(Action::Core(Input::TargetAdd(t))) => t,
        Ok(_) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "not a target".into())),
        Err(r) => {
            return Err(ctx.refuse(Some(&s), "target_add", "bad_request", StatusCode::BAD_REQUEST, &r.error).await)
        }
    };
    // In the core's line time, as its record shows; the store keeps it in wall time.
    let now = ctx.board.now();
    target.created_at = now;
    target.expires_at = b.expires_in_min.map(|m| Millis(now.0 + u64::from(m) * 60_000));
    ok(ctx.act(&s, "target_add", Input::TargetAdd(target)).await?)
}

async fn target_remove(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let s = ctx.acting(&headers, "target_remove", Role::supervises).await?;
    let mut body = serde_json::Map::new();
    body.insert("target_id".into(), json!(id));
    ctx.mqtt_command(&s, "target_remove", body).await
}

async fn rates(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Answer {
    let s = ctx.acting(&headers, "set_rates", Role::supervises).await?;
    let b = body_json(&ctx, Some(&s), "set_rates", body).await?;
    ctx.mqtt_command(&s, "set_rates", b).await
}

async fn line_stop(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    let s = ctx.acting(&headers, "line_stop", Role::supervises).await?;
    ctx.mqtt_command(&s, "line_stop", serde_json::Map::new()).await
}

async fn line_start(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Answer {
    let s = ctx.acting(&headers, "line_start", Role::supervises).await?;
    ctx.mqtt_command(&s, "line_start", serde_json::Map::new()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearFlagBody {
    boot: u16,
    tracking: u32,
    serial: u64,
    image_sha256: String,
    flag: String,
    /// The officer at the screen who asks; the supervisor logged in authorises.
    officer: String,
    reason: String,
}

async fn clear_flag(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Answer {
    let s = ctx.acting(&headers, "clear_flag", Role::supervises).await?;
    let b: ClearFlagBody = body_json(&ctx, Some(&s), "clear_flag", body).await?;
    let checked = (|| {
        let officer = OfficerId::new(&b.officer).map_err(|e| format!("officer: {e}"))?;
        let supervisor = OfficerId::new(&s.user).map_err(|e| e.to_string())?;
        mqtt_command::check_text("reason", &b.reason, mqtt_command::MAX_REASON)?;
        mqtt_command::check_text("flag", &b.flag, 64)?;
        mqtt_command::check_text("image_sha256", &b.image_sha256, 64)?;
        Ok::<_, String>(Input::ClearFlag {
            parcel: ParcelId { tracking: TrackingId(b.tracking), boot: b.boot, serial: b.serial },
            image_sha256: b.image_sha256.as_str().into(),
            flag: b.flag.as_str().into(),
            officer,
            supervisor,
            reason: b.reason.clone(),
        })
    })();
    match checked {
        Ok(input) => ok(ctx.act(&s, "clear_flag", input).await?),
        Err(why) => Err(ctx.refuse(Some(&s), "clear_flag", "bad_request", StatusCode::BAD_REQUEST, &why).await),
    }
}

async fn events(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Result<Response, ApiError> {
    ctx.session(&headers)?;
    let token = cookie_token(&headers).unwrap_or_default().to_string();
    let changes = tokio_stream::wrappers::BroadcastStream::new(ctx.board.subscribe())
        // A screen too slow for the events misses some; the next `line` and a reload catch up.
        .filter_map(|e| e.ok())
        .map(|e| SseEvent::default().event(e.name).data(e.data));
    let every = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let c = ctx.clone();
    let lines = every.map(move |_| SseEvent::default().event("line").data(c.line_json().to_string()));
    // The stream ends with its session (logout, expiry, the user disabled).
    let c = ctx.clone();
    let stream =
        changes.merge(lines).take_while(move |_| c.stream_stands(&token)).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn healthz(State(ctx): State<Arc<Ctx>>) -> Response {
    let mode = lock(&ctx.figures.mode).clone();
    let plc = lock(&ctx.figures.plc).connected;
    let problem = if !plc {
        Some("PLC link down")
    } else if mode.plc_events_lost {
        Some("PLC events lost: every parcel held until the PLC restarts")
    } else if mode.safe_mode {
        Some("PLC in safe mode: every parcel held")
    } else {
        None
    };
    match problem {
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, format!("{p}\n")).into_response(),
        None if mode.stopped_by.is_some() => (StatusCode::OK, "ok (line stopped by an operator)\n").into_response(),
        None if mode.shadow => (StatusCode::OK, "ok (shadow mode: every parcel to hold)\n").into_response(),
        None => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let text = super::metrics::render(&ctx);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
