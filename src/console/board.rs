//! What the screens show, fed by the core's screen calls ([`ConsoleScreen`]) on the core's
//! thread: open reviews, the parcels on the belt as the line sees them now, lane counts,
//! alarms, officers' activity. Every change also goes out as a server-sent event. The lock is
//! held only to copy in or out; rendering and queries run elsewhere.

use crate::core::{
    Alarm, Lane, Manifest, Millis, ParcelId, ParcelReport, Provisional, Reason, ReviewId, ReviewRequest, Severity,
    Verdict,
};
use crate::daemon::Screen;
use crate::xray::screen::Screen as XrayScreen;
use crate::xray::station::ImageCache;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Alarms the live line lists, newest first.
const ALARMS_KEPT: usize = 50;
/// Finished parcels kept for the desk and for throughput (an hour of a busy line's
/// confirmations; older ones come from the record).
const DONE_KEPT: usize = 20_000;
/// Parcels on the belt shown at once (the line's `max_in_flight` is far below).
const BELT_KEPT: usize = 4096;
/// Reviews open at once (the core bounds them by the parcels on the belt).
const REVIEWS_KEPT: usize = 4096;

/// An event for the screens: its name and its JSON.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: &'static str,
    pub data: String,
}

/// A flagged region of a review's image, in image pixels.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RegionView {
    pub flag: &'static str,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageLinks {
    pub colour: String,
    pub grey: String,
}

/// A review as the review screen shows it (docs/console.md, `Review`).
#[derive(Clone, Debug, Serialize)]
pub struct ReviewView {
    pub review: ReviewId,
    #[serde(flatten)]
    pub parcel: ParcelId,
    pub waybill: String,
    pub image_sha256: Option<Arc<str>>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub image: Option<ImageLinks>,
    pub regions: Vec<RegionView>,
    pub flags: Vec<Arc<str>>,
    pub channel: crate::core::Channel,
    /// The line's reasons so far, in words.
    pub reasons: Vec<String>,
    pub manifest: Arc<Manifest>,
    pub measured_weight_g: Option<u32>,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveParcel {
    #[serde(flatten)]
    pub parcel: ParcelId,
    pub waybill: Option<String>,
    pub channel: Option<crate::core::Channel>,
    /// Where it would go if decided now.
    pub lane: Lane,
    pub reasons: Vec<String>,
    pub in_review: bool,
    pub transferable: bool,
    pub remaining_ms: u64,
    /// Its X-ray image once attached (a flag clearance names it).
    pub image_sha256: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LaneCounts {
    pub release: u64,
    pub inspection: u64,
    pub hold: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlarmView {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub wall_ms: i64,
}

/// One officer's verdicts since the daemon started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Activity {
    pub officer: String,
    pub verdicts: u64,
    pub release: u64,
    pub inspect: u64,
    pub hold: u64,
    /// Mean time from the review asked to the verdict, in line ms.
    pub mean_ms: u64,
    #[serde(skip)]
    total_ms: u64,
}

/// A finished parcel, for the desk.
#[derive(Clone, Debug, Serialize)]
pub struct Done {
    #[serde(flatten)]
    pub parcel: ParcelId,
    pub waybill: Option<String>,
    pub channel: Option<crate::core::Channel>,
    pub decided: Option<Lane>,
    pub confirmed: Option<Lane>,
    pub reasons: Vec<String>,
    pub done_wall_ms: Option<i64>,
}

struct OpenReview {
    request: ReviewRequest,
    asked_at: Millis,
    regions: Vec<RegionView>,
    size: Option<(u32, u32)>,
    /// The image's pixels, held while the review is open: the image cache may drop them first.
    image: Option<Arc<crate::xray::XrayImage>>,
}

#[derive(Default)]
struct State {
    reviews: BTreeMap<ReviewId, OpenReview>,
    /// By serial: the belt's order.
    belt: BTreeMap<u64, Provisional>,
    lanes: LaneCounts,
    done: VecDeque<Done>,
    alarms: VecDeque<AlarmView>,
    activity: BTreeMap<String, Activity>,
}

/// The console's picture of the line.
pub struct Board {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    line_ms: Box<dyn Fn() -> u64 + Send + Sync>,
    xray: Option<(XrayScreen, ImageCache)>,
}

impl Board {
    /// `line_ms`: the core's clock (deadlines are in it); `xray`: the pre-screen and the
    /// pixels it was given, on a line with a station.
    pub fn new(line_ms: Box<dyn Fn() -> u64 + Send + Sync>, xray: Option<(XrayScreen, ImageCache)>) -> Arc<Board> {
        Arc::new(Board { state: Mutex::default(), events: broadcast::channel(1024).0, line_ms, xray })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> Millis {
        Millis((self.line_ms)())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn send(&self, name: &'static str, data: &impl Serialize) {
        // No screen listening is no error.
        let _ = self.events.send(Event { name, data: serde_json::to_string(data).unwrap_or_default() });
    }

    fn view(st: &State, r: &OpenReview, now: Millis) -> ReviewView {
        let q = &r.request;
        let seen = st.belt.get(&q.parcel.serial);
        let image = q.image_sha256.as_ref().map(|h| ImageLinks {
            colour: format!("/api/images/{h}/colour.png"),
            grey: format!("/api/images/{h}/grey.png"),
        });
        ReviewView {
            review: q.review,
            parcel: q.parcel,
            waybill: q.waybill.to_string(),
            image_sha256: q.image_sha256.clone(),
            width: r.size.map(|s| s.0),
            height: r.size.map(|s| s.1),
            image,
            regions: r.regions.clone(),
            flags: q.flags.clone(),
            channel: q.manifest.channel,
            reasons: seen.map(|p| labels(&p.reasons)).unwrap_or_default(),
            manifest: q.manifest.clone(),
            measured_weight_g: seen.and_then(|p| p.weight_g),
            remaining_ms: q.deadline.0.saturating_sub(now.0),
        }
    }

    /// Open reviews in line order (the parcel first on the belt first).
    pub fn reviews(&self) -> Vec<ReviewView> {
        let now = self.now();
        let st = self.state();
        let mut open: Vec<&OpenReview> = st.reviews.values().collect();
        open.sort_by_key(|r| (r.request.parcel.serial, r.request.review));
        open.into_iter().map(|r| Self::view(&st, r, now)).collect()
    }

    /// The open review `id`.
    pub fn review(&self, id: ReviewId) -> Option<ReviewRequest> {
        self.state().reviews.get(&id).map(|r| r.request.clone())
    }

    /// An image an open review shows, with the pre-screen that knows how to colour it.
    pub fn review_image(&self, sha256: &str) -> Option<(XrayScreen, Arc<crate::xray::XrayImage>)> {
        let (screen, _) = self.xray.as_ref()?;
        let st = self.state();
        let open = st.reviews.values().find(|r| r.request.image_sha256.as_deref() == Some(sha256))?;
        open.image.clone().map(|i| (screen.clone(), i))
    }

    /// An officer's verdict on `review` was accepted by the line: it leaves the queue (the
    /// line holds the verdict until the parcel's cut-off; a second one would be refused).
    pub fn answered(&self, review: ReviewId, officer: &str, verdict: Verdict) {
        let now = self.now();
        let mut st = self.state();
        let Some(r) = st.reviews.remove(&review) else { return };
        let took = now.0.saturating_sub(r.asked_at.0);
        let a = st
            .activity
            .entry(officer.to_string())
            .or_insert_with(|| Activity { officer: officer.to_string(), ..Activity::default() });
        a.verdicts += 1;
        a.total_ms += took;
        a.mean_ms = a.total_ms / a.verdicts;
        match verdict {
            Verdict::Release => a.release += 1,
            Verdict::Inspect => a.inspect += 1,
            Verdict::Hold => a.hold += 1,
        }
        drop(st);
        self.send("review_closed", &serde_json::json!({ "review": review, "outcome": "decided" }));
    }

    pub fn activity(&self) -> Vec<Activity> {
        self.state().activity.values().cloned().collect()
    }

    pub fn line(&self) -> LineView {
        let now = self.now();
        let st = self.state();
        let parcels = st
            .belt
            .values()
            .map(|p| {
                let remaining_ms = p.cutoff_at.0.saturating_sub(now.0);
                LiveParcel {
                    parcel: p.parcel,
                    waybill: p.waybill.map(|w| w.to_string()),
                    channel: p.channel,
                    lane: p.lane,
                    reasons: labels(&p.reasons),
                    in_review: p.in_review,
                    transferable: p.channel == Some(crate::core::Channel::Green)
                        && !p.in_review
                        && !p.transferred
                        && remaining_ms > 0,
                    remaining_ms,
                    image_sha256: p.image_sha256.clone(),
                }
            })
            .collect();
        let wall = crate::clock::wall_ms();
        let done_ms = |d: &Done| d.done_wall_ms.unwrap_or(0);
        let last_hour = st.done.iter().rev().take_while(|d| wall - done_ms(d) < 3_600_000).count();
        // Over the time the line has run in that hour, so a line just started is not shown slow.
        let span_ms = st.done.iter().rev().nth(last_hour.saturating_sub(1)).map_or(0, |d| wall - done_ms(d));
        let parcels_per_hour = if last_hour < 2 || span_ms <= 0 {
            last_hour as u64
        } else {
            (last_hour as f64 * 3_600_000.0 / span_ms.max(60_000) as f64) as u64
        };
        LineView { parcels, lanes: st.lanes.clone(), parcels_per_hour, alarms: st.alarms.iter().cloned().collect() }
    }

    /// Finished parcels of `waybill` still held, newest first.
    pub fn done_of(&self, waybill: &str) -> Vec<Done> {
        self.state().done.iter().rev().filter(|d| d.waybill.as_deref() == Some(waybill)).cloned().collect()
    }

    fn pixels(&self, sha256: &str) -> Option<Arc<crate::xray::XrayImage>> {
        self.xray.as_ref().and_then(|(_, c)| c.get(sha256))
    }

    fn regions(&self, sha256: &str) -> (Vec<RegionView>, Option<(u32, u32)>) {
        let Some((image, screening)) = self.xray.as_ref().and_then(|(_, c)| c.screened(sha256)) else {
            return (Vec::new(), None);
        };
        let regions = screening
            .flags
            .iter()
            .flat_map(|f| {
                f.regions.iter().map(|r| RegionView {
                    flag: f.kind.reason(),
                    x: r.x,
                    y: r.y,
                    width: r.width,
                    height: r.height,
                })
            })
            .collect();
        (regions, Some((image.width, image.height)))
    }
}

pub fn labels(reasons: &[Reason]) -> Vec<String> {
    reasons.iter().map(Reason::label).collect()
}

/// The live line's figures without the core's counters (the handler adds those).
#[derive(Clone, Debug, Serialize)]
pub struct LineView {
    pub parcels: Vec<LiveParcel>,
    pub lanes: LaneCounts,
    pub parcels_per_hour: u64,
    pub alarms: Vec<AlarmView>,
}

/// The daemon's screen with the console beside it: everything goes to `inner` as before and
/// onto the board.
pub struct ConsoleScreen<S> {
    pub inner: S,
    pub board: Arc<Board>,
}

impl<S: Screen> Screen for ConsoleScreen<S> {
    fn review_requested(&mut self, request: &ReviewRequest) {
        let (regions, size) = request.image_sha256.as_deref().map_or((Vec::new(), None), |h| self.board.regions(h));
        let image = request.image_sha256.as_deref().and_then(|h| self.board.pixels(h));
        let now = self.board.now();
        let mut st = self.board.state();
        if st.reviews.len() >= REVIEWS_KEPT {
            st.reviews.pop_first();
        }
        let open = OpenReview { request: request.clone(), asked_at: now, regions, size, image };
        let view = Board::view(&st, &open, now);
        if let Some(p) = st.belt.get_mut(&request.parcel.serial) {
            p.in_review = true;
        }
        st.reviews.insert(request.review, open);
        drop(st);
        self.board.send("review", &view);
        // On the board first: whoever the inner screen tells finds the review there.
        self.inner.review_requested(request);
    }

    fn review_closed(&mut self, parcel: ParcelId, review: ReviewId) {
        self.inner.review_closed(parcel, review);
        let now = self.board.now();
        let mut st = self.board.state();
        // Answered reviews left the board when their verdict was accepted.
        let Some(r) = st.reviews.remove(&review) else { return };
        let outcome = if now >= r.request.deadline { "late" } else { "withdrawn" };
        if let Some(p) = st.belt.get_mut(&parcel.serial) {
            p.in_review = false;
        }
        drop(st);
        self.board.send("review_closed", &serde_json::json!({ "review": review, "outcome": outcome }));
    }

    fn provisional(&mut self, parcel: &Provisional) {
        self.inner.provisional(parcel);
        let mut st = self.board.state();
        if st.belt.len() >= BELT_KEPT && !st.belt.contains_key(&parcel.parcel.serial) {
            st.belt.pop_first();
        }
        st.belt.insert(parcel.parcel.serial, parcel.clone());
        // A review shows the parcel's reasons: the screen gets them as they change (the line
        // asks for a review before it says where the parcel stands after asking).
        let now = self.board.now();
        let views: Vec<ReviewView> = st
            .reviews
            .values()
            .filter(|r| r.request.parcel == parcel.parcel)
            .map(|r| Board::view(&st, r, now))
            .collect();
        drop(st);
        for view in views {
            self.board.send("review", &view);
        }
    }

    fn parcel_done(&mut self, report: ParcelReport) {
        let mut st = self.board.state();
        st.belt.remove(&report.parcel.serial);
        // A review still open for a parcel that left closes with it (the core closes it first).
        st.reviews.retain(|_, r| r.request.parcel != report.parcel);
        if let Some(lane) = report.confirmed.or(report.decided) {
            let lanes = &mut st.lanes;
            *match lane {
                Lane::Release => &mut lanes.release,
                Lane::Inspection => &mut lanes.inspection,
                Lane::Hold => &mut lanes.hold,
            } += 1;
        }
        if st.done.len() >= DONE_KEPT {
            st.done.pop_front();
        }
        st.done.push_back(Done {
            parcel: report.parcel,
            waybill: report.waybill.map(|w| w.to_string()),
            channel: report.channel,
            decided: report.decided,
            confirmed: report.confirmed,
            reasons: labels(&report.reasons),
            done_wall_ms: Some(crate::clock::wall_ms()),
        });
        drop(st);
        self.inner.parcel_done(report);
    }

    fn inspection_result(&mut self, result: &crate::core::Input) {
        self.inner.inspection_result(result);
    }

    fn alarm(&mut self, alarm: &Alarm) {
        self.inner.alarm(alarm);
        let view = AlarmView {
            code: alarm.code,
            severity: alarm.severity,
            message: alarm.message.clone(),
            wall_ms: crate::clock::wall_ms(),
        };
        let mut st = self.board.state();
        if st.alarms.len() >= ALARMS_KEPT {
            st.alarms.pop_back();
        }
        st.alarms.push_front(view.clone());
        drop(st);
        self.board.send("alarm", &view);
    }
}

/// Counters of the console's refusals and logins, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub by_kind: Mutex<HashMap<&'static str, u64>>,
}

impl Counters {
    pub fn count(&self, kind: &'static str) {
        *self.by_kind.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> =
            self.by_kind.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, n)| (*k, *n)).collect();
        v.sort();
        v
    }
}
