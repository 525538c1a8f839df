//! The API over the router in process (no socket), against a stand-in core that records every
//! command it is sent and answers as the daemon does: accepted, or refused by the line.

use super::board::ConsoleScreen;
use super::users::{Role, UserStore};
use super::*;
use crate::core::*;
use crate::daemon::{CoreMsg, Screen};
use crate::mqtt::command::Reply;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Mutex;
use tower::ServiceExt;

/// What the stand-in core was sent: the reply as it came and the input.
type Sent = Arc<Mutex<Vec<(Reply, Option<Input>)>>>;

struct NoScreen;
impl Screen for NoScreen {
    fn review_requested(&mut self, _: &ReviewRequest) {}
    fn parcel_done(&mut self, _: ParcelReport) {}
}

struct Rig {
    app: axum::Router,
    sent: Sent,
    board: Arc<Board>,
    line_ms: Arc<std::sync::atomic::AtomicU64>,
    _dir: tempfile::TempDir,
}

const PASSWORD: &str = "a long enough password";
/// The image the stand-in core says the review is of.
const IMAGE: &str = "ab12";

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let users = UserStore::open(dir.path()).unwrap();
    for (name, role) in
        [("off", Role::Officer), ("vi", Role::Viewer), ("sup", Role::Supervisor), ("insp", Role::Inspector)]
    {
        users.add(name, role, PASSWORD, 0).unwrap();
    }
    let line_ms = Arc::new(std::sync::atomic::AtomicU64::new(1_000));
    let clock = line_ms.clone();
    let board = Board::new(Box::new(move || clock.load(std::sync::atomic::Ordering::SeqCst)), None);
    let (core, inbox) = crossbeam_channel::bounded::<CoreMsg>(16);
    let sent: Sent = Arc::default();
    let log = sent.clone();
    std::thread::spawn(move || {
        for msg in inbox {
            let CoreMsg::Command(c) = msg else { continue };
            // The line refuses a verdict about another image, as the real one does.
            let refused =
                matches!(&c.input, Some(Input::Verdict { image_sha256, .. }) if image_sha256.as_deref() != Some(IMAGE));
            let reply = if refused { c.reply.clone().refused_with("another image".into()) } else { c.reply.clone() };
            log.lock().unwrap().push((c.reply, c.input));
            if let Some(r) = c.respond {
                let _ = r.send(reply);
            }
        }
    });
    let figures =
        crate::mqtt::wiring::Figures { line: Arc::default(), mode: Arc::default(), plc: Arc::default(), scanner: None };
    let ctx = Setup {
        board: board.clone(),
        core,
        figures,
        data_dir: dir.path().to_path_buf(),
        rules_dir: dir.path().to_path_buf(),
        defaults: Defaults {
            sample_rate: PerChannel { green: 0.03, red: 0.0 },
            xray_review_ratio: PerChannel { green: 0.2, red: 0.0 },
            review_window_ms: None,
        },
        session_minutes: 60,
        xray: false,
        broker: None,
    }
    .ctx()
    .unwrap();
    Rig { app: http::router(ctx), sent, board, line_ms, _dir: dir }
}

fn waybill() -> Waybill {
    Waybill::parse("EA123456785CN").unwrap()
}

fn review(n: u64, deadline: u64) -> ReviewRequest {
    let manifest = crate::core::policy::tests::manifest();
    ReviewRequest {
        review: ReviewId(n),
        parcel: ParcelId { tracking: TrackingId(7), boot: 1, serial: 40 + n },
        waybill: waybill(),
        manifest: Arc::new(manifest),
        image_sha256: Some(IMAGE.into()),
        flags: vec![],
        deadline: Millis(deadline),
    }
}

/// A logged-in user's cookie and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
}

impl Rig {
    fn screen(&self) -> ConsoleScreen<NoScreen> {
        ConsoleScreen { inner: NoScreen, board: self.board.clone() }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let r = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn login(&self, user: &str) -> Login {
        let (status, headers, body) =
            self.call(post("/login", None, &json!({ "user": user, "password": PASSWORD }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        Login { cookie: cookie.split(';').next().unwrap().to_string(), csrf: body["csrf"].as_str().unwrap().into() }
    }

    fn commands(&self, name: &str) -> Vec<(Reply, Option<Input>)> {
        self.sent.lock().unwrap().iter().filter(|(r, _)| r.command == name).cloned().collect()
    }
}

fn post(path: &str, who: Option<&Login>, body: &Value) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(l) = who {
        r = r.header(header::COOKIE, &l.cookie).header("x-csrf-token", &l.csrf);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn get(path: &str, who: Option<&Login>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(l) = who {
        r = r.header(header::COOKIE, &l.cookie);
    }
    r.body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_is_recorded_and_wrong_passwords_are_limited() {
    let rig = rig();
    let from = |ip: [u8; 4], password: &str| {
        let mut r = post("/login", None, &json!({ "user": "off", "password": password }));
        r.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40_000))));
        r
    };
    for _ in 0..session::LOGIN_FAILURES {
        assert_eq!(rig.call(from([10, 0, 0, 1], "wrong password")).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, ..) = rig.call(from([10, 0, 0, 2], PASSWORD)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the right password too, from anywhere, once the name is locked");
    let logins = rig.commands("login");
    assert_eq!(logins.len(), session::LOGIN_FAILURES);
    assert!(logins.iter().all(|(r, _)| r.status == "refused" && r.operator.as_deref() == Some("off")));
    assert!(logins.iter().all(|(r, _)| r.via == Some("console")));

    let l = rig.login("sup").await;
    let (status, _, me) = rig.call(get("/api/me", Some(&l))).await;
    assert_eq!((status, me["user"].as_str(), me["role"].as_str()), (StatusCode::OK, Some("sup"), Some("supervisor")));
    assert_eq!(rig.commands("login").last().unwrap().0.status, "accepted");
    assert_eq!(rig.call(get("/api/me", None)).await.0, StatusCode::UNAUTHORIZED);

    let (status, ..) = rig.call(post("/logout", Some(&l), &json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rig.call(get("/api/me", Some(&l))).await.0, StatusCode::UNAUTHORIZED, "the session ended");
    assert_eq!(rig.commands("logout").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_change_without_the_sessions_csrf_token_is_refused_and_recorded() {
    let rig = rig();
    let l = rig.login("sup").await;
    for token in ["", "0".repeat(64).as_str()] {
        let forged = Login { cookie: l.cookie.clone(), csrf: token.into() };
        let (status, ..) = rig.call(post("/api/line/stop", Some(&forged), &json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let stops = rig.commands("line_stop");
    assert_eq!(stops.len(), 2);
    assert!(stops
        .iter()
        .all(|(r, i)| r.status == "refused" && i.is_none() && r.error.as_deref().unwrap().starts_with("csrf")));
    // A token of an earlier session of the same user is stale too.
    let again = rig.login("sup").await;
    let stale = Login { cookie: again.cookie.clone(), csrf: l.csrf.clone() };
    assert_eq!(rig.call(post("/api/line/stop", Some(&stale), &json!({}))).await.0, StatusCode::FORBIDDEN);
    let (status, _, body) = rig.call(post("/api/line/stop", Some(&again), &json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (reply, input) = rig.commands("line_stop").pop().unwrap();
    assert_eq!(reply.operator.as_deref(), Some("sup"));
    assert!(matches!(input, Some(Input::LineControl { running: false, ref officer }) if officer.as_str() == "sup"));
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_bound_what_a_user_may_do() {
    let rig = rig();
    rig.screen().review_requested(&review(1, 60_000));
    let (vi, off, insp) = (rig.login("vi").await, rig.login("off").await, rig.login("insp").await);
    let verdict = json!({ "verdict": "release", "image_sha256": IMAGE });
    assert_eq!(rig.call(post("/api/reviews/1/verdict", Some(&vi), &verdict)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rig.call(post("/api/reviews/1/verdict", Some(&insp), &verdict)).await.0, StatusCode::FORBIDDEN);
    let rates = json!({ "sample_rate": { "green": 1.0, "red": 1.0 } });
    assert_eq!(rig.call(post("/api/rates", Some(&off), &rates)).await.0, StatusCode::FORBIDDEN);
    let result = json!({ "waybill": "EA123456785CN", "outcome": "no_discrepancy" });
    assert_eq!(rig.call(post("/api/inspection", Some(&off), &result)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rig.call(post("/api/line/stop", Some(&off), &json!({}))).await.0, StatusCode::FORBIDDEN);
    // A viewer reads every screen.
    assert_eq!(rig.call(get("/api/reviews", Some(&vi))).await.0, StatusCode::OK);
    assert_eq!(rig.call(get("/api/line", Some(&vi))).await.0, StatusCode::OK);
    // Every refusal is on record with who asked; nothing reached the line as an input.
    let sent = rig.sent.lock().unwrap().clone();
    let refused: Vec<_> = sent.iter().filter(|(r, _)| r.status == "refused").collect();
    assert_eq!(refused.len(), 5);
    assert!(refused.iter().all(|(r, i)| i.is_none() && r.error.as_deref().unwrap().starts_with("role")));
    assert_eq!(rig.call(post("/api/reviews/1/verdict", Some(&off), &verdict)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_names_the_review_and_the_image_and_leaves_the_queue() {
    let rig = rig();
    let mut screen = rig.screen();
    screen.review_requested(&review(1, 60_000));
    screen.review_requested(&review(2, 60_000));
    let off = rig.login("off").await;
    let (_, _, q) = rig.call(get("/api/reviews", Some(&off))).await;
    assert_eq!(q["reviews"].as_array().unwrap().len(), 2);
    assert_eq!(q["reviews"][0]["remaining_ms"], json!(59_000));

    // Another image than the one reviewed: the line refuses it, the queue keeps the review.
    let forged = json!({ "verdict": "release", "image_sha256": "ffff" });
    let (status, _, body) = rig.call(post("/api/reviews/1/verdict", Some(&off), &forged)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(rig.call(get("/api/reviews", Some(&off))).await.2["reviews"].as_array().unwrap().len(), 2);

    let good = json!({ "verdict": "inspect", "image_sha256": IMAGE });
    assert_eq!(rig.call(post("/api/reviews/1/verdict", Some(&off), &good)).await.0, StatusCode::OK);
    let (reply, input) = rig.commands("verdict").pop().unwrap();
    assert_eq!((reply.operator.as_deref(), reply.via), (Some("off"), Some("console")));
    match input {
        Some(Input::Verdict { parcel, review, image_sha256, officer, verdict }) => {
            assert_eq!((parcel.serial, review, image_sha256.as_deref()), (41, ReviewId(1), Some(IMAGE)));
            assert_eq!((officer.as_str(), verdict), ("off", Verdict::Inspect));
        }
        other => panic!("{other:?}"),
    }
    let left = rig.call(get("/api/reviews", Some(&off))).await.2;
    assert_eq!(left["reviews"].as_array().unwrap().len(), 1);
    // Replayed: the review is no longer open; refused before the line, on record.
    let (status, ..) = rig.call(post("/api/reviews/1/verdict", Some(&off), &good)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let replayed = rig.commands("verdict").pop().unwrap();
    assert!(replayed.1.is_none() && replayed.0.error.unwrap().starts_with("review_not_open"));
    // An unknown review, and one past its cut-off (closed by the line).
    assert_eq!(rig.call(post("/api/reviews/99/verdict", Some(&off), &good)).await.0, StatusCode::CONFLICT);
    rig.line_ms.store(61_000, std::sync::atomic::Ordering::SeqCst);
    let mut events = rig.board.subscribe();
    screen.review_closed(review(2, 60_000).parcel, ReviewId(2));
    let closed = events.recv().await.unwrap();
    assert_eq!((closed.name, closed.data.as_str()), ("review_closed", r#"{"outcome":"late","review":2}"#));
    assert_eq!(rig.call(post("/api/reviews/2/verdict", Some(&off), &good)).await.0, StatusCode::CONFLICT);
    let activity = rig.board.activity();
    assert_eq!((activity.len(), activity[0].verdicts, activity[0].inspect), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_malformed_bodies_are_refused_and_recorded() {
    let rig = rig();
    let sup = rig.login("sup").await;
    let big = json!({ "target_id": "T1", "by": "consignor", "value": "x".repeat(http::MAX_BODY), "reason": "r" });
    let (status, ..) = rig.call(post("/api/targets", Some(&sup), &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, ..) = rig.call(post("/api/targets", Some(&sup), &json!({ "target_id": 5 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = rig
        .call(post(
            "/api/targets",
            Some(&sup),
            &json!({ "target_id": "T1", "by": "hs_prefix", "value": "x", "reason": "r" }),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("HS prefix"));
    let refused = rig.commands("target_add");
    assert_eq!(refused.len(), 3);
    assert!(refused[0].0.error.as_deref().unwrap().starts_with("too_large"));
    // A body cannot speak for another operator: the console names the one logged in.
    let (status, ..) = rig
        .call(post(
            "/api/rates",
            Some(&sup),
            &json!({ "operator": "someone", "sample_rate": { "green": 0.5, "red": 0.1 } }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (reply, input) = rig.commands("set_rates").pop().unwrap();
    assert_eq!(reply.operator.as_deref(), Some("sup"));
    assert!(matches!(input, Some(Input::Parameters { ref officer, .. }) if officer.as_str() == "sup"));
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_with_expiry_transfers_and_inspection_results_reach_the_line_as_inputs() {
    let rig = rig();
    let (sup, insp, off) = (rig.login("sup").await, rig.login("insp").await, rig.login("off").await);
    let target =
        json!({ "target_id": "T-7", "by": "consignor", "value": "Acme", "reason": "tip-off", "expires_in_min": 30 });
    assert_eq!(rig.call(post("/api/targets", Some(&sup), &target)).await.0, StatusCode::OK);
    match rig.commands("target_add").pop().unwrap().1 {
        Some(Input::TargetAdd(t)) => {
            assert_eq!(
                (&*t.id, t.author.as_str(), t.created_at, t.expires_at),
                ("T-7", "sup", Millis(1_000), Some(Millis(1_801_000)))
            );
            assert_eq!(t.criterion, TargetCriterion::Consignor("Acme".into()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.call(post("/api/targets/T-7/remove", Some(&sup), &json!({}))).await.0, StatusCode::OK);
    assert!(matches!(rig.commands("target_remove").pop().unwrap().1, Some(Input::TargetRemove { .. })));

    let transfer = json!({ "boot": 1, "tracking": 7, "serial": 41 });
    assert_eq!(rig.call(post("/api/transfer", Some(&off), &transfer)).await.0, StatusCode::OK);
    assert!(matches!(
        rig.commands("transfer").pop().unwrap().1,
        Some(Input::ManualTransfer { parcel: ParcelId { serial: 41, .. }, ref officer }) if officer.as_str() == "off"
    ));

    let no_note = json!({ "waybill": "EA123456785CN", "outcome": "discrepancy" });
    assert_eq!(rig.call(post("/api/inspection", Some(&insp), &no_note)).await.0, StatusCode::BAD_REQUEST);
    let returned = json!({ "waybill": "EA123456785CN", "outcome": "returned", "note": "undeclared battery; returned" });
    assert_eq!(rig.call(post("/api/inspection", Some(&insp), &returned)).await.0, StatusCode::OK);
    match rig.commands("inspection_result").pop().unwrap().1 {
        Some(Input::InspectionResult { waybill: w, officer, discrepancy, returned, note }) => {
            assert_eq!((w, officer.as_str(), discrepancy, returned), (waybill(), "insp", true, true));
            assert_eq!(note.as_deref(), Some("undeclared battery; returned"));
        }
        other => panic!("{other:?}"),
    }
    let clear = json!({ "boot": 1, "tracking": 7, "serial": 41, "image_sha256": IMAGE, "flag": "dense object",
                        "officer": "off", "reason": "known dense item: a ceramic mug" });
    assert_eq!(rig.call(post("/api/flags/clear", Some(&sup), &clear)).await.0, StatusCode::OK);
    assert!(matches!(
        rig.commands("clear_flag").pop().unwrap().1,
        Some(Input::ClearFlag { ref officer, ref supervisor, .. }) if officer.as_str() == "off" && supervisor.as_str() == "sup"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_answer_without_a_session_and_pages_carry_a_strict_policy() {
    let rig = rig();
    let (status, headers, _) = rig.call(get("/", None)).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let r = rig.app.clone().oneshot(get("/metrics", None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    for metric in ["sortline_line_parcels ", "sortline_plc_connected 0", "sortline_console_open_reviews 0"] {
        assert!(text.contains(metric), "{metric} missing from\n{text}");
    }
    // The stand-in PLC link is down: the line cannot sort.
    assert_eq!(rig.app.clone().oneshot(get("/healthz", None)).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rig.call(get("/events", None)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_ends_with_its_session() {
    let rig = rig();
    let l = rig.login("vi").await;
    let r = rig.app.clone().oneshot(get("/events", Some(&l))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(rig.call(post("/logout", Some(&l), &json!({}))).await.0, StatusCode::OK);
    // The next event (a `line` every second) finds the session gone and ends the stream.
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), axum::body::to_bytes(r.into_body(), 1 << 20));
    assert!(body.await.expect("the stream ended").is_ok());
}
