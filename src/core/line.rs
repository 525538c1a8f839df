//! The `Line`: every parcel's state, the deadlines, and the decision engine,
//! behind `handle(input, now)`. No I/O and no clock (see DESIGN.md).
//!
//! Life of a parcel: the PLC reports it at the reading gate with the scanner
//! trigger count; the scan with the same trigger count identifies it; the
//! engine decides. A hold that nothing can lift goes to the PLC at once;
//! anything else stays provisional until the review cut-off, so that an
//! officer's verdict or transfer can still move it, and is sent then. A
//! destination is sent once. The PLC then confirms the lane the parcel
//! physically took, or reports it lost.

use super::engine::{Facts, Policy, WeightTolerance};
use super::manifest::Manifest;
use super::policy::{InterceptionRule, ManualTarget, RuleError, RuleSet};
use super::reason::{Decision, Reason};
use super::sampling::SiteSecret;
use super::types::{Channel, Lane, Millis, OfficerId, PerChannel, TrackingId, TriggerCount, Verdict};
use super::waybill::{Carriers, Identity, Waybill};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The physical lane ids the PLC uses for our three lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneMap {
    pub release: u16,
    pub inspection: u16,
    pub hold: u16,
}

impl LaneMap {
    pub fn id(&self, lane: Lane) -> u16 {
        match lane {
            Lane::Release => self.release,
            Lane::Inspection => self.inspection,
            Lane::Hold => self.hold,
        }
    }

    pub fn lane(&self, id: u16) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| self.id(*l) == id)
    }
}

/// Timing and limits of the line, derived from configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSettings {
    pub lanes: LaneMap,
    /// Reading gate to review cut-off, at belt speed.
    pub gate_to_cutoff_ms: u64,
    /// Reading gate to the end of the line, at belt speed.
    pub gate_to_end_ms: u64,
    /// A parcel with no scan this long after its gate event is a no-read.
    pub scan_timeout_ms: u64,
    /// How long a scan may wait for its gate event.
    pub scan_match_window_ms: u64,
    /// Time past the end of the line before an unconfirmed parcel counts as lost.
    pub confirm_grace_ms: u64,
    pub max_in_flight: usize,
    pub max_pending_scans: usize,
    /// Carriers' own waybill formats, beside S10 and SSCC (absent in older records).
    #[serde(default)]
    pub carriers: Carriers,
    /// A scan without a trigger count belongs to the one parcel whose gate event came at most
    /// this long before it; with two such parcels it belongs to neither (unmatched: both end
    /// as no-reads). 0: such scans are never matched.
    #[serde(default)]
    pub untriggered_after_ms: u64,
    /// …or to the one parcel whose gate event comes at most this long after it (0: never).
    #[serde(default)]
    pub untriggered_before_ms: u64,
    /// The X-ray station, when the line has one: release then waits for each parcel's
    /// pre-screen (absent in older records: no station).
    #[serde(default)]
    pub xray: Option<XraySettings>,
    /// The review window: an officer has at most this long for a verdict after the request,
    /// the cut-off being the limit anyway. `None`: until the cut-off.
    #[serde(default)]
    pub review_window_ms: Option<u64>,
}

/// What the core needs to know of the X-ray station.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XraySettings {
    /// Where a parcel otherwise bound for release goes when no screened image came by its
    /// cut-off: inspection or hold (never release).
    pub missing_image_lane: Lane,
    /// How long an image may wait for its parcel's `XrayEntered` (the PLC's event can come
    /// after the station's file).
    pub image_match_window_ms: u64,
}

/// A line's settings and policy, less its secret. See [`Line::snapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineSnapshot {
    pub settings: LineSettings,
    pub sample_rate: PerChannel<f64>,
    pub xray_review_ratio: PerChannel<f64>,
    pub max_parcel_length_mm: u32,
    /// Absent in records from before the weight check.
    #[serde(default)]
    pub weight_tolerance: Option<WeightTolerance>,
    pub rules: Vec<InterceptionRule>,
    pub targets: Vec<ManualTarget>,
}

impl LineSnapshot {
    pub fn line(self, secret: SiteSecret) -> Result<Line, RuleError> {
        let policy = Policy {
            secret,
            sample_rate: self.sample_rate,
            xray_review_ratio: self.xray_review_ratio,
            rules: Arc::new(RuleSet::new(self.rules)?),
            targets: self.targets,
            max_parcel_length_mm: self.max_parcel_length_mm,
            weight_tolerance: self.weight_tolerance,
        };
        Ok(Line::new(self.settings, policy))
    }
}

/// Everything that can happen to the line. All of it is recorded, so the
/// record replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Input {
    /// PLC: a parcel entered the reading gate.
    Gate {
        tracking: TrackingId,
        trigger: TriggerCount,
        length_mm: Option<u32>,
    },
    /// Scanner: the codes read at one trigger (empty: no read).
    /// Scanner: the codes read at one trigger. `trigger` is the scanner's trigger count when
    /// it sends one (matched to the PLC's gate event), else `None` (matched by the gate's
    /// time window, [`LineSettings::untriggered_after_ms`]).
    Scan {
        trigger: Option<TriggerCount>,
        codes: Vec<String>,
    },
    /// Platform: a declaration list, new or amended.
    Manifest(Arc<Manifest>),
    /// PLC: the line scale weighed the parcel at the gate (lines with a scale only).
    Weighed {
        tracking: TrackingId,
        weight_g: u32,
    },
    /// PLC: the parcel entered the X-ray tunnel; the image will carry this sequence number.
    XrayEntered {
        tracking: TrackingId,
        image_seq: u32,
    },
    /// X-ray station: an image arrived and is stored under its SHA-256 (hex); the sequence
    /// number pairs it with the parcel the PLC reported entering the tunnel with it. The
    /// station may name a barcode too.
    XrayImage {
        image_seq: u32,
        sha256: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        barcode: Option<String>,
    },
    /// X-ray pre-screen findings for a parcel (empty: clean).
    XrayScreened {
        tracking: TrackingId,
        flags: Vec<Arc<str>>,
    },
    /// Officer at the X-ray screen.
    Verdict {
        tracking: TrackingId,
        officer: OfficerId,
        verdict: Verdict,
    },
    /// Officer watching green parcels moves one to review by hand.
    ManualTransfer {
        tracking: TrackingId,
        officer: OfficerId,
    },
    /// PLC driver: the destination is in the PLC's destination ring.
    DestinationWritten {
        tracking: TrackingId,
        lane_id: u16,
    },
    /// PLC: the photo-eye at a lane mouth saw the parcel.
    Divert {
        tracking: TrackingId,
        lane_id: u16,
    },
    /// PLC: the parcel was not where its tracking window said.
    Lost {
        tracking: TrackingId,
    },
    /// PLC: the parcel goes to the hold lane whatever was decided (the PLC's default).
    PlcHold {
        tracking: TrackingId,
        cause: PlcHoldCause,
    },
    PlcStatus {
        safe_mode: bool,
    },
    /// PLC: the belt stopped (jam, emergency stop) or runs again. Parcels do not move while it
    /// is stopped, so the deadlines tied to their position (cut-off, end of line) wait too.
    Belt {
        running: bool,
    },
    TargetAdd(ManualTarget),
    TargetRemove {
        id: Arc<str>,
        officer: OfficerId,
    },
    /// Inspection bench: the parcel was opened and the result entered (查验并录入结果).
    /// It has left the line by then, so this is recorded, not decided on.
    InspectionResult {
        waybill: Waybill,
        officer: OfficerId,
        discrepancy: bool,
    },
    /// Operator: new random-inspection rates and X-ray review ratios (each 0 to 1), from now
    /// on; a rate left out stays as it was.
    Parameters {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<PerChannel<f64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xray_review_ratio: Option<PerChannel<f64>>,
        /// The review window for reviews requested from now on (above 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review_window_ms: Option<u64>,
        officer: OfficerId,
    },
    /// The interception rules, replaced whole (a reload of the rule files, by signal or
    /// command). An invalid set is refused and the old one stays.
    Rules {
        rules: Vec<InterceptionRule>,
        officer: Option<OfficerId>,
    },
    /// Operator: stop the line (from now on every parcel is held; the belt is the PLC's) or
    /// start it again.
    LineControl {
        running: bool,
        officer: OfficerId,
    },
    /// Nothing happened but time passed.
    Tick,
}

impl Input {
    /// Audit kinds of the inputs that are recorded (all but ticks).
    pub const RECORDED_KINDS: [&'static str; 21] = [
        "gate",
        "scan",
        "manifest",
        "xray_entered",
        "xray_screened",
        "verdict",
        "manual_transfer",
        "destination_written",
        "divert",
        "lost",
        "plc_hold",
        "plc_status",
        "belt",
        "target_add",
        "target_remove",
        "inspection_result",
        "parameters",
        "rules",
        "line_control",
        "weighed",
        "xray_image",
    ];

    /// The audit kind of this input.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Gate { .. } => "gate",
            Input::Scan { .. } => "scan",
            Input::Manifest(_) => "manifest",
            Input::XrayEntered { .. } => "xray_entered",
            Input::XrayScreened { .. } => "xray_screened",
            Input::Verdict { .. } => "verdict",
            Input::ManualTransfer { .. } => "manual_transfer",
            Input::DestinationWritten { .. } => "destination_written",
            Input::Divert { .. } => "divert",
            Input::Lost { .. } => "lost",
            Input::PlcHold { .. } => "plc_hold",
            Input::PlcStatus { .. } => "plc_status",
            Input::Belt { .. } => "belt",
            Input::TargetAdd(_) => "target_add",
            Input::TargetRemove { .. } => "target_remove",
            Input::InspectionResult { .. } => "inspection_result",
            Input::Parameters { .. } => "parameters",
            Input::Rules { .. } => "rules",
            Input::LineControl { .. } => "line_control",
            Input::Weighed { .. } => "weighed",
            Input::XrayImage { .. } => "xray_image",
            Input::Tick => "tick",
        }
    }

    /// The parcel this input is about, if any.
    pub fn tracking(&self) -> Option<TrackingId> {
        match self {
            Input::Gate { tracking, .. }
            | Input::XrayEntered { tracking, .. }
            | Input::Weighed { tracking, .. }
            | Input::XrayScreened { tracking, .. }
            | Input::Verdict { tracking, .. }
            | Input::ManualTransfer { tracking, .. }
            | Input::DestinationWritten { tracking, .. }
            | Input::Divert { tracking, .. }
            | Input::Lost { tracking }
            | Input::PlcHold { tracking, .. } => Some(*tracking),
            _ => None,
        }
    }
}

/// Why the PLC sends a parcel to hold whatever the host decided (docs/register-map.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum PlcHoldCause {
    /// The destination reached the PLC after the parcel had passed the latch point.
    Late,
    /// The PLC refused the destination for another reason (`codes.reject` of the map).
    Rejected { code: u32 },
    /// The PLC forced the parcel to hold (`codes.forced_hold`: gap, window check, safe mode…).
    Forced { code: u32 },
    /// The PLC restarted and forgot the parcel's window: it runs on into the end lane, and no
    /// confirmation will come.
    Restart,
}

impl PlcHoldCause {
    pub fn describe(&self) -> String {
        match self {
            PlcHoldCause::Late => "destination reached the PLC too late".into(),
            PlcHoldCause::Rejected { code } => format!("PLC refused the destination (reject code {code})"),
            PlcHoldCause::Forced { code } => format!("PLC forced hold (code {code})"),
            PlcHoldCause::Restart => "PLC restarted and forgot the parcel".into(),
        }
    }
}

/// Why a parcel left the line without a confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostWhy {
    /// The PLC reported it lost from its window.
    Plc,
    /// No confirmation came by the end of the line plus the grace time.
    Unconfirmed,
    /// The PLC gave its tracking id to a new parcel.
    TrackingReused,
    /// The PLC restarted: the parcel runs on into the end lane (hold) unconfirmed.
    PlcRestart,
}

/// One entry for the audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Record {
    /// An input as it arrived (not ticks).
    Input(Input),
    /// Who a parcel is, from its scan (or from the scan timeout: a no-read).
    Identified {
        tracking: TrackingId,
        trigger: TriggerCount,
        identity: Identity,
        timed_out: bool,
    },
    ReviewRequested {
        tracking: TrackingId,
        waybill: Waybill,
        deadline: Millis,
    },
    /// The final decision, as sent to the PLC.
    Decision {
        tracking: TrackingId,
        waybill: Option<Waybill>,
        lane: Lane,
        reasons: Vec<Reason>,
        manifest_version: Option<u64>,
        /// The channel of the list used, if there was one.
        channel: Option<Channel>,
    },
    /// The PLC confirmed a lane other than the one decided.
    Missort {
        tracking: TrackingId,
        decided: Option<Lane>,
        actual: Option<Lane>,
        lane_id: u16,
    },
    Lost {
        tracking: TrackingId,
        waybill: Option<Waybill>,
        why: LostWhy,
    },
    /// An input that could not be applied, and why.
    Refused {
        input: String,
        tracking: Option<TrackingId>,
        why: String,
    },
    /// The X-ray image that belongs to the parcel, by its hash.
    ImageAttached {
        tracking: TrackingId,
        image_seq: u32,
        sha256: Arc<str>,
    },
    /// An X-ray image that no parcel claimed in its time window.
    UnmatchedImage {
        image_seq: u32,
        sha256: Arc<str>,
    },
    /// A scan that no gate event claimed.
    UnmatchedScan {
        trigger: Option<TriggerCount>,
        codes: Vec<String>,
    },
    /// A parcel's story is complete.
    Completed {
        tracking: TrackingId,
        waybill: Option<Waybill>,
        decided: Option<Lane>,
        confirmed: Option<Lane>,
    },
}

impl Record {
    /// The audit kind: inputs under their own name, the rest under the variant's.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Input(i) => i.kind(),
            Record::Identified { .. } => "identified",
            Record::ReviewRequested { .. } => "review_requested",
            Record::Decision { .. } => "decision",
            Record::Missort { .. } => "missort",
            Record::Lost { .. } => "parcel_lost",
            Record::Refused { .. } => "refused",
            Record::UnmatchedScan { .. } => "unmatched_scan",
            Record::ImageAttached { .. } => "image_attached",
            Record::UnmatchedImage { .. } => "unmatched_image",
            Record::Completed { .. } => "completed",
        }
    }

    pub fn tracking(&self) -> Option<TrackingId> {
        match self {
            Record::Input(i) => i.tracking(),
            Record::ReviewRequested { tracking, .. }
            | Record::Identified { tracking, .. }
            | Record::Decision { tracking, .. }
            | Record::Missort { tracking, .. }
            | Record::Lost { tracking, .. }
            | Record::Completed { tracking, .. }
            | Record::ImageAttached { tracking, .. } => Some(*tracking),
            Record::Refused { tracking, .. } => *tracking,
            Record::UnmatchedScan { .. } | Record::UnmatchedImage { .. } => None,
        }
    }

    pub fn waybill(&self) -> Option<Waybill> {
        match self {
            Record::Input(Input::Manifest(m)) => Some(m.waybill),
            Record::Input(Input::InspectionResult { waybill, .. }) => Some(*waybill),
            Record::Input(Input::TargetAdd(ManualTarget {
                criterion: super::policy::TargetCriterion::Waybill(w),
                ..
            })) => Some(*w),
            Record::ReviewRequested { waybill, .. } => Some(*waybill),
            Record::Identified { identity: Identity::Waybill { waybill }, .. } => Some(*waybill),
            Record::Decision { waybill, .. } | Record::Lost { waybill, .. } | Record::Completed { waybill, .. } => {
                *waybill
            }
            _ => None,
        }
    }
}

/// What the officer's screen needs to show a parcel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewRequest {
    pub tracking: TrackingId,
    pub waybill: Waybill,
    pub manifest: Arc<Manifest>,
    /// The verdict must arrive before this.
    pub deadline: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alarm {
    pub code: &'static str,
    pub severity: Severity,
    pub tracking: Option<TrackingId>,
    pub message: String,
}

/// The final story of one parcel, for monitoring.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParcelReport {
    pub tracking: TrackingId,
    pub waybill: Option<Waybill>,
    pub channel: Option<Channel>,
    pub reasons: Vec<Reason>,
    pub decided: Option<Lane>,
    pub confirmed: Option<Lane>,
    pub lost: bool,
    /// The PLC took the parcel to hold on its own, and why.
    pub held_by_plc: Option<PlcHoldCause>,
    /// The X-ray image's sequence number, when the parcel passed the tunnel.
    pub image_seq: Option<u32>,
    pub entered_at: Millis,
    pub decided_at: Option<Millis>,
    pub done_at: Millis,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Record(Record),
    /// Tell the PLC where the parcel goes. Sent once per parcel, after the
    /// `Record::Decision` that produced it.
    SetDestination {
        tracking: TrackingId,
        lane: Lane,
        lane_id: u16,
    },
    ReviewRequested(ReviewRequest),
    /// Screen this parcel's X-ray image against its declaration (none known: against nothing);
    /// the result comes back as `Input::XrayScreened`.
    ScreenImage {
        tracking: TrackingId,
        image_seq: u32,
        sha256: Arc<str>,
        manifest: Option<Arc<Manifest>>,
    },
    /// The parcel no longer waits for a verdict (decided, late or gone).
    ReviewClosed {
        tracking: TrackingId,
    },
    ParcelDone(ParcelReport),
    Alarm(Alarm),
}

/// The line's standing conditions, for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineMode {
    pub safe_mode: bool,
    /// The operator who stopped the line, while it is stopped.
    pub stopped_by: Option<OfficerId>,
}

/// Counters for monitoring; all since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineStats {
    pub parcels: u64,
    pub decided_release: u64,
    pub decided_inspection: u64,
    pub decided_hold: u64,
    pub confirmed: u64,
    pub missorts: u64,
    pub lost: u64,
    /// Parcels the PLC sent to hold on its own (its default), confirmed or not.
    pub held_by_plc: u64,
    pub late: u64,
    pub no_reads: u64,
    pub reviews: u64,
    pub refused: u64,
    pub unmatched_scans: u64,
}

#[derive(Clone, Debug)]
struct Sent {
    decision: Decision,
    at: Millis,
    written: bool,
}

#[derive(Clone, Debug)]
struct Parcel {
    serial: u64,
    trigger: TriggerCount,
    entered_at: Millis,
    cutoff_at: Millis,
    length_mm: Option<u32>,
    /// From the line scale, when the line has one.
    weight_g: Option<u32>,
    codes: Vec<String>,
    identity: Option<Identity>,
    /// For matching the X-ray image to the parcel.
    image_seq: Option<u32>,
    /// The image's hash, once it came.
    image: Option<Arc<str>>,
    /// The pre-screen's result came.
    screened: bool,
    image_mismatch: bool,
    xray_flags: Vec<Arc<str>>,
    verdict: Option<(OfficerId, Verdict)>,
    transfer: Option<OfficerId>,
    review_open: bool,
    sent: Option<Sent>,
    /// The PLC said it will take this parcel to hold, whatever was sent.
    plc_hold: Option<PlcHoldCause>,
}

impl Parcel {
    fn waybill(&self) -> Option<Waybill> {
        match self.identity {
            Some(Identity::Waybill { waybill }) => Some(waybill),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ScanTimeout(TrackingId, u64),
    Cutoff(TrackingId, u64),
    ConfirmTimeout(TrackingId, u64),
    ScanExpiry(TriggerCount),
    ImageExpiry(u32),
    /// The officer's time for a review is up (before the cut-off: a review window).
    ReviewDeadline(TrackingId, u64),
    UntriggeredExpiry(u64),
}

/// A manifest as the line holds it, with the interception rules it matches
/// (worked out on arrival and on a rules reload, not at every decision).
struct Held {
    manifest: Arc<Manifest>,
    rule_hits: Box<[Reason]>,
}

/// The line's state machine. See the module doc.
pub struct Line {
    settings: LineSettings,
    policy: Policy,
    manifests: HashMap<Waybill, Held>,
    parcels: HashMap<TrackingId, Parcel>,
    by_trigger: HashMap<TriggerCount, TrackingId>,
    early_scans: BTreeMap<TriggerCount, (Millis, Vec<String>)>,
    /// X-ray images waiting for their parcel's `XrayEntered`, by sequence number.
    early_images: BTreeMap<u32, (Arc<str>, Option<String>)>,
    /// Scans without a trigger count waiting for a gate event, by arrival number.
    early_untriggered: BTreeMap<u64, Vec<String>>,
    next_untriggered: u64,
    timers: BTreeSet<(Millis, Timer)>,
    /// While the belt stands: since when, and the position-bound timers with the time each
    /// had left.
    belt_stopped: Option<(Millis, Vec<(u64, Timer)>)>,
    safe_mode: bool,
    /// Stopped by an operator: every parcel is held until started again.
    stopped_by: Option<OfficerId>,
    next_serial: u64,
    stats: LineStats,
}

impl Line {
    pub fn new(settings: LineSettings, policy: Policy) -> Line {
        Line {
            settings,
            policy,
            manifests: HashMap::new(),
            parcels: HashMap::new(),
            by_trigger: HashMap::new(),
            early_scans: BTreeMap::new(),
            early_images: BTreeMap::new(),
            early_untriggered: BTreeMap::new(),
            next_untriggered: 0,
            timers: BTreeSet::new(),
            belt_stopped: None,
            safe_mode: false,
            stopped_by: None,
            next_serial: 0,
            stats: LineStats::default(),
        }
    }

    // --- getters

    pub fn stats(&self) -> &LineStats {
        &self.stats
    }

    pub fn settings(&self) -> &LineSettings {
        &self.settings
    }

    pub fn in_flight(&self) -> usize {
        self.parcels.len()
    }

    pub fn manifest_count(&self) -> usize {
        self.manifests.len()
    }

    pub fn manifest(&self, waybill: &Waybill) -> Option<&Arc<Manifest>> {
        self.manifests.get(waybill).map(|h| &h.manifest)
    }

    pub fn safe_mode(&self) -> bool {
        self.safe_mode
    }

    /// Safe mode and an operator's stop, as monitoring shows them.
    pub fn mode(&self) -> LineMode {
        LineMode { safe_mode: self.safe_mode, stopped_by: self.stopped_by.clone() }
    }

    /// Safe mode or an operator's stop: nothing is released, so nothing waits to be decided.
    fn holding_all(&self) -> bool {
        self.safe_mode || self.stopped_by.is_some()
    }

    /// When the driver must call `handle(Input::Tick, ..)` next.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// What a fresh line needs, besides the secret, to decide as this one
    /// does: recorded at start so that replay needs no configuration.
    pub fn snapshot(&self) -> LineSnapshot {
        LineSnapshot {
            settings: self.settings.clone(),
            sample_rate: self.policy.sample_rate,
            xray_review_ratio: self.policy.xray_review_ratio,
            max_parcel_length_mm: self.policy.max_parcel_length_mm,
            weight_tolerance: self.policy.weight_tolerance,
            rules: self.policy.rules.rules().to_vec(),
            targets: self.policy.targets.clone(),
        }
    }

    // --- mutators

    /// Replaces the interception rules (on reload) and works out again which
    /// rules each held manifest matches; the caller records the change.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.policy.rules = rules;
        for held in self.manifests.values_mut() {
            held.rule_hits = self.policy.rule_hits(&held.manifest);
        }
    }

    /// Loads a manifest without recording it: for start-up from the store,
    /// which already holds the record. Newer versions win.
    pub fn preload_manifest(&mut self, m: Arc<Manifest>) -> bool {
        if self.manifests.get(&m.waybill).is_some_and(|held| held.manifest.version >= m.version) {
            return false;
        }
        let rule_hits = self.policy.rule_hits(&m);
        self.manifests.insert(m.waybill, Held { manifest: m, rule_hits });
        true
    }

    // --- input

    /// Applies one input at time `now` (deadlines due by `now` fire first)
    /// and appends what must happen to `out`, in order.
    pub fn handle(&mut self, input: Input, now: Millis, out: &mut Vec<Output>) {
        self.expire(now, out);
        if !matches!(input, Input::Tick) {
            out.push(Output::Record(Record::Input(input.clone())));
        }
        match input {
            Input::Tick => {}
            Input::Gate { tracking, trigger, length_mm } => self.on_gate(tracking, trigger, length_mm, now, out),
            Input::Scan { trigger, codes } => self.on_scan(trigger, codes, now, out),
            Input::Manifest(m) => {
                if !self.preload_manifest(m.clone()) {
                    self.refuse("manifest", None, format!("version {} is not newer than the one held", m.version), out);
                }
            }
            // Every parcel passes the tunnel, decided or not; only the image link is kept.
            Input::XrayEntered { tracking, image_seq } => match self.parcels.get_mut(&tracking) {
                Some(p) => {
                    p.image_seq = Some(image_seq);
                    if let Some((sha256, barcode)) = self.early_images.remove(&image_seq) {
                        self.attach_image(tracking, image_seq, sha256, barcode, now, out);
                    }
                }
                None => self.refuse("xray_entered", Some(tracking), "unknown tracking id".into(), out),
            },
            Input::Weighed { tracking, weight_g } => match self.parcels.get_mut(&tracking) {
                // A decision already sent (a hold nothing lifts) keeps the reading on record only.
                Some(p) if p.sent.is_some() => p.weight_g = Some(weight_g),
                Some(p) => {
                    p.weight_g = Some(weight_g);
                    self.evaluate(tracking, now, false, out);
                }
                None => self.refuse("weighed", Some(tracking), "unknown tracking id".into(), out),
            },
            Input::XrayImage { image_seq, sha256, barcode } => self.on_image(image_seq, sha256, barcode, now, out),
            Input::XrayScreened { tracking, flags } => match self.parcels.get_mut(&tracking) {
                // Every image is screened, held parcels' too: after the decision it is on record only.
                Some(p) if p.sent.is_some() => p.xray_flags = flags,
                Some(_) => self.amend(tracking, "xray_screened", now, out, |p| {
                    p.xray_flags = flags;
                    p.screened = true;
                }),
                None => self.refuse("xray_screened", Some(tracking), "unknown tracking id".into(), out),
            },
            Input::Verdict { tracking, officer, verdict } => {
                self.amend(tracking, "verdict", now, out, |p| p.verdict = Some((officer, verdict)));
            }
            Input::ManualTransfer { tracking, officer } => {
                self.amend(tracking, "manual_transfer", now, out, |p| p.transfer = Some(officer));
            }
            Input::DestinationWritten { tracking, lane_id } => self.on_written(tracking, lane_id, out),
            Input::Divert { tracking, lane_id } => self.on_divert(tracking, lane_id, now, out),
            Input::Lost { tracking } => {
                if !self.retire_lost(tracking, LostWhy::Plc, now, out) {
                    self.refuse("lost", Some(tracking), "unknown tracking id".into(), out);
                }
            }
            Input::PlcHold { tracking, cause } => self.on_plc_hold(tracking, cause, now, out),
            Input::PlcStatus { safe_mode } => self.on_plc_status(safe_mode, now, out),
            Input::Belt { running } => self.on_belt(running, now, out),
            Input::TargetAdd(target) => {
                self.policy.targets.retain(|t| t.id != target.id);
                self.policy.targets.push(target);
            }
            Input::InspectionResult { .. } => {}
            Input::Parameters { sample_rate, xray_review_ratio, review_window_ms, .. } => {
                self.on_parameters(sample_rate, xray_review_ratio, review_window_ms, out)
            }
            Input::Rules { rules, .. } => match RuleSet::new(rules) {
                Ok(set) => self.set_rules(Arc::new(set)),
                Err(e) => self.refuse("rules", None, format!("{e}; the rules in force stay"), out),
            },
            Input::LineControl { running, officer } => self.on_line_control(running, officer, now, out),
            Input::TargetRemove { id, .. } => {
                let before = self.policy.targets.len();
                self.policy.targets.retain(|t| t.id != id);
                if self.policy.targets.len() == before {
                    self.refuse("target_remove", None, format!("no target {id}"), out);
                }
            }
        }
    }

    fn on_gate(
        &mut self,
        tracking: TrackingId,
        trigger: TriggerCount,
        length_mm: Option<u32>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        if self.parcels.contains_key(&tracking) {
            self.retire_lost(tracking, LostWhy::TrackingReused, now, out);
        }
        if self.parcels.len() >= self.settings.max_in_flight {
            // Untracked here means no destination: the PLC default sends it to hold.
            self.refuse("gate", Some(tracking), "too many parcels in flight".into(), out);
            self.alarm(
                "in_flight_limit",
                Severity::Critical,
                Some(tracking),
                "parcel table full; parcel left to the PLC default (hold)".into(),
                out,
            );
            return;
        }
        self.stats.parcels += 1;
        self.next_serial += 1;
        let serial = self.next_serial;
        let cutoff_at = now.saturating_add(self.settings.gate_to_cutoff_ms);
        let s = &self.settings;
        self.timers.insert((now.saturating_add(s.scan_timeout_ms), Timer::ScanTimeout(tracking, serial)));
        self.timers.insert((cutoff_at, Timer::Cutoff(tracking, serial)));
        self.timers.insert((
            now.saturating_add(s.gate_to_end_ms + s.confirm_grace_ms),
            Timer::ConfirmTimeout(tracking, serial),
        ));
        // A parcel seen at the gate of a standing belt waits with the others.
        self.freeze_positional(now);
        self.parcels.insert(
            tracking,
            Parcel {
                serial,
                trigger,
                entered_at: now,
                cutoff_at,
                length_mm,
                weight_g: None,
                codes: Vec::new(),
                identity: None,
                image_seq: None,
                image: None,
                screened: false,
                image_mismatch: false,
                xray_flags: Vec::new(),
                verdict: None,
                transfer: None,
                review_open: false,
                sent: None,
                plc_hold: None,
            },
        );
        self.by_trigger.insert(trigger, tracking);
        let early = self.early_scans.remove(&trigger).map(|(_, codes)| codes).or_else(|| self.claim_untriggered(out));
        match early {
            Some(codes) => self.apply_scan(tracking, codes, now, out),
            None if self.holding_all() => self.evaluate(tracking, now, false, out),
            None => {}
        }
    }

    /// The scan without a trigger count that waited for this gate event, if exactly one did.
    fn claim_untriggered(&mut self, out: &mut Vec<Output>) -> Option<Vec<String>> {
        match self.early_untriggered.len() {
            0 => None,
            1 => self.early_untriggered.pop_first().map(|(_, codes)| codes),
            _ => {
                for (_, codes) in std::mem::take(&mut self.early_untriggered) {
                    self.unmatched(None, codes, "several scans before one gate event", out);
                }
                None
            }
        }
    }

    fn on_scan(&mut self, trigger: Option<TriggerCount>, codes: Vec<String>, now: Millis, out: &mut Vec<Output>) {
        let Some(trigger) = trigger else {
            return self.on_untriggered_scan(codes, now, out);
        };
        if let Some(&tracking) = self.by_trigger.get(&trigger) {
            self.apply_scan(tracking, codes, now, out);
            return;
        }
        // Scanners can answer before the PLC's gate event is polled.
        if self.early_scans.len() >= self.settings.max_pending_scans {
            if let Some((old_trigger, (_, old_codes))) = self.early_scans.pop_first() {
                self.unmatched(Some(old_trigger), old_codes, "too many scans waiting", out);
            }
        }
        if let Some((_, previous)) = self.early_scans.get_mut(&trigger) {
            previous.extend(codes);
        } else {
            self.early_scans.insert(trigger, (now, codes));
            self.timers.insert((now.saturating_add(self.settings.scan_match_window_ms), Timer::ScanExpiry(trigger)));
        }
    }

    /// Matched by time alone, so only where no other parcel could own the scan: every parcel
    /// gated within the window counts, decided or not (a late duplicate frame of a decided
    /// parcel must not become its neighbour's identity).
    fn on_untriggered_scan(&mut self, codes: Vec<String>, now: Millis, out: &mut Vec<Output>) {
        let after = self.settings.untriggered_after_ms;
        let mut candidates = self.parcels.iter().filter(|(_, p)| after > 0 && now.since(p.entered_at) <= after);
        match (candidates.next().map(|(t, _)| *t), candidates.next()) {
            (Some(tracking), None) => self.apply_scan(tracking, codes, now, out),
            (Some(_), Some(_)) => self.unmatched(None, codes, "several parcels in the gate's time window", out),
            (None, _) if self.settings.untriggered_before_ms == 0 => {
                self.unmatched(None, codes, "no parcel in the gate's time window", out)
            }
            (None, _) => {
                if self.early_untriggered.len() >= self.settings.max_pending_scans {
                    if let Some((_, old)) = self.early_untriggered.pop_first() {
                        self.unmatched(None, old, "too many scans waiting", out);
                    }
                }
                self.next_untriggered += 1;
                let id = self.next_untriggered;
                self.early_untriggered.insert(id, codes);
                let expiry = now.saturating_add(self.settings.untriggered_before_ms);
                self.timers.insert((expiry, Timer::UntriggeredExpiry(id)));
            }
        }
    }

    fn apply_scan(&mut self, tracking: TrackingId, codes: Vec<String>, now: Millis, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get_mut(&tracking) else {
            return;
        };
        if p.sent.is_some() {
            self.refuse("scan", Some(tracking), "scan after the parcel was decided".into(), out);
            return;
        }
        // A second frame for the same trigger adds codes: two labels stay two labels.
        p.codes.extend(codes);
        let identity = self.settings.carriers.identify(&p.codes);
        if identity == Identity::NoRead {
            self.stats.no_reads += u64::from(p.identity.is_none());
        }
        p.identity = Some(identity.clone());
        let trigger = p.trigger;
        out.push(Output::Record(Record::Identified { tracking, trigger, identity, timed_out: false }));
        self.evaluate(tracking, now, false, out);
    }

    /// Changes a parcel's facts if it is still undecided; refuses otherwise.
    fn amend(
        &mut self,
        tracking: TrackingId,
        what: &'static str,
        now: Millis,
        out: &mut Vec<Output>,
        change: impl FnOnce(&mut Parcel),
    ) {
        match self.parcels.get_mut(&tracking) {
            None => self.refuse(what, Some(tracking), "unknown tracking id".into(), out),
            Some(p) if p.sent.is_some() => {
                let why = if now >= p.cutoff_at { "after the cut-off" } else { "after the decision was sent" };
                self.refuse(what, Some(tracking), why.into(), out);
            }
            Some(p) => {
                change(p);
                self.evaluate(tracking, now, false, out);
            }
        }
    }

    fn on_written(&mut self, tracking: TrackingId, lane_id: u16, out: &mut Vec<Output>) {
        let expected =
            self.parcels.get(&tracking).and_then(|p| p.sent.as_ref()).map(|s| self.settings.lanes.id(s.decision.lane));
        match (self.parcels.get_mut(&tracking).and_then(|p| p.sent.as_mut()), expected) {
            (Some(sent), Some(id)) if id == lane_id => sent.written = true,
            _ => self.refuse(
                "destination_written",
                Some(tracking),
                format!("lane id {lane_id} was not the destination sent"),
                out,
            ),
        }
    }

    fn on_divert(&mut self, tracking: TrackingId, lane_id: u16, now: Millis, out: &mut Vec<Output>) {
        let actual = self.settings.lanes.lane(lane_id);
        if actual.is_none() {
            self.alarm(
                "unknown_lane",
                Severity::Critical,
                Some(tracking),
                format!("PLC confirmed unknown lane id {lane_id}"),
                out,
            );
        }
        let Some(p) = self.parcels.remove(&tracking) else {
            self.refuse("divert", Some(tracking), "unknown tracking id".into(), out);
            if actual != Some(Lane::Hold) {
                self.alarm(
                    "unknown_parcel_diverted",
                    Severity::Critical,
                    Some(tracking),
                    format!("a parcel we never tracked left by lane id {lane_id}"),
                    out,
                );
            }
            return;
        };
        self.by_trigger.remove(&p.trigger);
        let decided = p.sent.as_ref().map(|s| s.decision.lane);
        // Undecided parcels, and those the PLC said it holds, are meant to take the hold lane.
        let expected = if p.plc_hold.is_some() { Some(Lane::Hold) } else { decided.or(Some(Lane::Hold)) };
        if actual != expected {
            self.stats.missorts += 1;
            out.push(Output::Record(Record::Missort { tracking, decided, actual, lane_id }));
            let unsafe_release = actual == Some(Lane::Release);
            self.alarm(
                if unsafe_release { "unsafe_release" } else { "missort" },
                if unsafe_release { Severity::Critical } else { Severity::Warning },
                Some(tracking),
                format!(
                    "decided {}, PLC confirmed {}",
                    decided.map_or("nothing", Lane::as_str),
                    actual.map_or("an unknown lane", Lane::as_str)
                ),
                out,
            );
        } else {
            self.stats.confirmed += 1;
        }
        self.complete(tracking, p, actual, false, now, out);
    }

    fn on_plc_hold(&mut self, tracking: TrackingId, cause: PlcHoldCause, now: Millis, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get_mut(&tracking) else {
            self.refuse("plc_hold", Some(tracking), "unknown tracking id".into(), out);
            return;
        };
        if p.plc_hold.replace(cause).is_none() {
            self.stats.held_by_plc += 1;
        }
        match cause {
            // No window, so no confirmation will ever come: the story ends here, unconfirmed.
            PlcHoldCause::Restart => {
                self.retire_lost(tracking, LostWhy::PlcRestart, now, out);
            }
            // The geometry's write budget should make this impossible: the host is too slow.
            PlcHoldCause::Late => self.alarm(
                "destination_late",
                Severity::Critical,
                Some(tracking),
                "destination reached the PLC after the latch point; the PLC holds the parcel".into(),
                out,
            ),
            PlcHoldCause::Rejected { .. } | PlcHoldCause::Forced { .. } => {}
        }
    }

    fn on_plc_status(&mut self, safe_mode: bool, now: Millis, out: &mut Vec<Output>) {
        if safe_mode == self.safe_mode {
            return;
        }
        self.safe_mode = safe_mode;
        if safe_mode {
            self.alarm("plc_safe_mode", Severity::Critical, None, "PLC in safe mode: every parcel to hold".into(), out);
            self.hold_undecided(now, out);
        }
    }

    fn on_line_control(&mut self, running: bool, officer: OfficerId, now: Millis, out: &mut Vec<Output>) {
        match (running, self.stopped_by.is_some()) {
            (false, false) => {
                self.alarm(
                    "line_stopped",
                    Severity::Warning,
                    None,
                    format!("line stopped by {officer}: every parcel to hold"),
                    out,
                );
                self.stopped_by = Some(officer);
                self.hold_undecided(now, out);
            }
            (true, true) => self.stopped_by = None,
            (_, stopped) => self.refuse(
                "line_control",
                None,
                format!("the line is already {}", if stopped { "stopped" } else { "running" }),
                out,
            ),
        }
    }

    fn on_parameters(
        &mut self,
        sample_rate: Option<PerChannel<f64>>,
        xray_review_ratio: Option<PerChannel<f64>>,
        review_window_ms: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        let valid = |r: &Option<PerChannel<f64>>| {
            r.is_none_or(|r| [r.green, r.red].iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)))
        };
        if !(valid(&sample_rate) && valid(&xray_review_ratio)) {
            return self.refuse("parameters", None, "rates and ratios must be between 0 and 1".into(), out);
        }
        if review_window_ms == Some(0) {
            return self.refuse("parameters", None, "the review window must be above 0".into(), out);
        }
        if let Some(window_ms) = review_window_ms {
            self.settings.review_window_ms = Some(window_ms);
        }
        if let Some(rate) = sample_rate {
            self.policy.sample_rate = rate;
        }
        if let Some(ratio) = xray_review_ratio {
            self.policy.xray_review_ratio = ratio;
        }
    }

    /// Decides every undecided parcel now: the reason holding them all is final.
    fn hold_undecided(&mut self, now: Millis, out: &mut Vec<Output>) {
        let mut undecided: Vec<TrackingId> =
            self.parcels.iter().filter(|(_, p)| p.sent.is_none()).map(|(t, _)| *t).collect();
        undecided.sort_unstable(); // HashMap order is not deterministic
        for tracking in undecided {
            self.evaluate(tracking, now, false, out);
        }
    }

    fn on_belt(&mut self, running: bool, now: Millis, out: &mut Vec<Output>) {
        match (running, self.belt_stopped.take()) {
            (false, None) => {
                self.belt_stopped = Some((now, Vec::new()));
                self.freeze_positional(now);
                self.alarm(
                    "belt_stopped",
                    Severity::Warning,
                    None,
                    "belt stopped: cut-offs and confirmations wait for it".into(),
                    out,
                );
            }
            (true, Some((_, frozen))) => {
                for (left, timer) in frozen {
                    let at = now.saturating_add(left);
                    if let Timer::Cutoff(tracking, serial) = timer {
                        if let Some(p) = self.parcels.get_mut(&tracking).filter(|p| p.serial == serial) {
                            p.cutoff_at = at;
                        }
                    }
                    self.timers.insert((at, timer));
                }
            }
            (_, stopped) => self.belt_stopped = stopped,
        }
    }

    /// While the belt stands, moves the timers tied to a parcel's position out of the table,
    /// keeping the time each had left.
    fn freeze_positional(&mut self, now: Millis) {
        let Some((_, frozen)) = &mut self.belt_stopped else {
            return;
        };
        let positional: Vec<(Millis, Timer)> = self
            .timers
            .iter()
            .filter(|(_, t)| matches!(t, Timer::Cutoff(..) | Timer::ConfirmTimeout(..)))
            .copied()
            .collect();
        for (at, timer) in positional {
            self.timers.remove(&(at, timer));
            frozen.push((at.0.saturating_sub(now.0), timer));
        }
    }

    // --- deadlines

    fn expire(&mut self, now: Millis, out: &mut Vec<Output>) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::ScanTimeout(tracking, serial) => {
                    if self.live(tracking, serial).is_some_and(|p| p.identity.is_none()) {
                        self.scan_timed_out(tracking, out);
                        self.evaluate(tracking, at, false, out);
                    }
                }
                Timer::Cutoff(tracking, serial) => {
                    if let Some(p) = self.live(tracking, serial).filter(|p| p.sent.is_none()) {
                        if p.identity.is_none() {
                            self.scan_timed_out(tracking, out);
                        }
                        self.evaluate(tracking, at, true, out);
                    }
                }
                Timer::ConfirmTimeout(tracking, serial) => {
                    if self.live(tracking, serial).is_some() {
                        self.retire_lost(tracking, LostWhy::Unconfirmed, at, out);
                    }
                }
                Timer::ScanExpiry(trigger) => {
                    if let Some((_, codes)) = self.early_scans.remove(&trigger) {
                        self.unmatched(Some(trigger), codes, "no gate event came for it", out);
                    }
                }
                Timer::ReviewDeadline(tracking, serial) => {
                    let waiting = |p: &Parcel| p.sent.is_none() && p.review_open && p.verdict.is_none();
                    if self.live(tracking, serial).is_some_and(|p| waiting(p)) {
                        self.evaluate(tracking, at, true, out);
                    }
                }
                Timer::ImageExpiry(seq) => {
                    if let Some((sha256, _)) = self.early_images.remove(&seq) {
                        self.unmatched_image(seq, sha256, "no parcel entered the tunnel with it", out);
                    }
                }
                Timer::UntriggeredExpiry(id) => {
                    if let Some(codes) = self.early_untriggered.remove(&id) {
                        self.unmatched(None, codes, "no gate event came in its time window", out);
                    }
                }
            }
        }
    }

    fn scan_timed_out(&mut self, tracking: TrackingId, out: &mut Vec<Output>) {
        if let Some(p) = self.parcels.get_mut(&tracking) {
            p.identity = Some(Identity::NoRead);
            self.stats.no_reads += 1;
            let trigger = p.trigger;
            out.push(Output::Record(Record::Identified {
                tracking,
                trigger,
                identity: Identity::NoRead,
                timed_out: true,
            }));
        }
    }

    /// The parcel a timer was set for, if it is still on the line.
    fn live(&mut self, tracking: TrackingId, serial: u64) -> Option<&mut Parcel> {
        self.parcels.get_mut(&tracking).filter(|p| p.serial == serial)
    }

    // --- deciding

    /// Re-decides an undecided parcel; sends the decision when it is final:
    /// a hold nothing can lift, or anything at the cut-off.
    fn evaluate(&mut self, tracking: TrackingId, now: Millis, at_cutoff: bool, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get(&tracking) else {
            return;
        };
        if p.sent.is_some() || (p.identity.is_none() && !self.holding_all() && !at_cutoff) {
            return;
        }
        let held = p.waybill().and_then(|w| self.manifests.get(&w));
        let manifest = held.map(|h| &h.manifest);
        let facts = Facts {
            identity: p.identity.as_ref(),
            length_mm: p.length_mm,
            weight_g: p.weight_g,
            manifest: manifest.map(|m| &**m),
            rule_hits: held.map_or(&[], |h| &h.rule_hits),
            xray_flags: &p.xray_flags,
            verdict: p.verdict.as_ref().map(|(o, v)| (o, *v)),
            transfer: p.transfer.as_ref(),
            late: at_cutoff,
            safe_mode: self.safe_mode,
            line_stopped: self.stopped_by.is_some(),
            xray_missing_lane: self.settings.xray.map(|x| x.missing_image_lane),
            screened: p.screened,
            image_mismatch: p.image_mismatch,
        };
        let decision = self.policy.decide(&facts, now);
        let manifest_version = manifest.map(|m| m.version);
        let channel = manifest.map(|m| m.channel);
        let manifest = manifest.cloned();
        let waybill = p.waybill();
        let deadline = self.settings.review_window_ms.map_or(p.cutoff_at, |w| p.cutoff_at.min(now.saturating_add(w)));
        let (review_open, serial, cutoff_at) = (p.review_open, p.serial, p.cutoff_at);

        if decision.awaiting_review() && !review_open {
            if let (Some(waybill), Some(manifest)) = (waybill, manifest) {
                self.stats.reviews += 1;
                out.push(Output::Record(Record::ReviewRequested { tracking, waybill, deadline }));
                out.push(Output::ReviewRequested(ReviewRequest { tracking, waybill, manifest, deadline }));
                if let Some(p) = self.parcels.get_mut(&tracking) {
                    p.review_open = true;
                }
                if deadline < cutoff_at {
                    self.timers.insert((deadline, Timer::ReviewDeadline(tracking, serial)));
                }
            }
        }
        if !(at_cutoff || decision.is_final_hold()) {
            return;
        }
        if review_open {
            out.push(Output::ReviewClosed { tracking });
        }
        if decision.reasons.contains(&Reason::Late) {
            self.stats.late += 1;
            self.alarm(
                "review_late",
                Severity::Warning,
                Some(tracking),
                "no verdict by the cut-off; parcel held".into(),
                out,
            );
        }
        match decision.lane {
            Lane::Release => self.stats.decided_release += 1,
            Lane::Inspection => self.stats.decided_inspection += 1,
            Lane::Hold => self.stats.decided_hold += 1,
        }
        let lane = decision.lane;
        out.push(Output::Record(Record::Decision {
            tracking,
            waybill,
            lane,
            reasons: decision.reasons.clone(),
            manifest_version,
            channel,
        }));
        out.push(Output::SetDestination { tracking, lane, lane_id: self.settings.lanes.id(lane) });
        if let Some(p) = self.parcels.get_mut(&tracking) {
            p.review_open = false;
            p.sent = Some(Sent { decision, at: now, written: false });
        }
    }

    // --- leaving the line

    fn retire_lost(&mut self, tracking: TrackingId, why: LostWhy, now: Millis, out: &mut Vec<Output>) -> bool {
        let Some(p) = self.parcels.remove(&tracking) else {
            return false;
        };
        self.by_trigger.remove(&p.trigger);
        self.stats.lost += 1;
        out.push(Output::Record(Record::Lost { tracking, waybill: p.waybill(), why }));
        self.alarm(
            "parcel_lost",
            Severity::Warning,
            Some(tracking),
            format!("parcel lost ({why:?}); it runs on to the end of the line (hold)"),
            out,
        );
        self.complete(tracking, p, None, true, now, out);
        true
    }

    fn complete(
        &mut self,
        tracking: TrackingId,
        p: Parcel,
        confirmed: Option<Lane>,
        lost: bool,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        if p.review_open {
            out.push(Output::ReviewClosed { tracking });
        }
        let waybill = p.waybill();
        let decided = p.sent.as_ref().map(|s| s.decision.lane);
        if p.sent.as_ref().is_some_and(|s| !s.written) && confirmed != Some(Lane::Hold) {
            // We never learnt that the PLC had our destination: it could only have used its default.
            self.alarm(
                "destination_unconfirmed",
                Severity::Warning,
                Some(tracking),
                "parcel left before its destination was written".into(),
                out,
            );
        }
        out.push(Output::Record(Record::Completed { tracking, waybill, decided, confirmed }));
        out.push(Output::ParcelDone(ParcelReport {
            tracking,
            waybill,
            channel: waybill.and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.channel),
            reasons: p.sent.as_ref().map(|s| s.decision.reasons.clone()).unwrap_or_default(),
            decided,
            confirmed,
            lost,
            held_by_plc: p.plc_hold,
            image_seq: p.image_seq,
            entered_at: p.entered_at,
            decided_at: p.sent.as_ref().map(|s| s.at),
            done_at: now,
        }));
    }

    /// An image from the station: to its parcel if the PLC reported it in the tunnel with this
    /// sequence number, else it waits (bounded) for that report.
    fn on_image(&mut self, seq: u32, sha256: Arc<str>, barcode: Option<String>, now: Millis, out: &mut Vec<Output>) {
        let owner = self.parcels.iter().find(|(_, p)| p.image_seq == Some(seq)).map(|(t, p)| (*t, p.image.is_some()));
        match owner {
            Some((tracking, false)) => self.attach_image(tracking, seq, sha256, barcode, now, out),
            Some((tracking, true)) => {
                self.refuse("xray_image", Some(tracking), format!("a second image with sequence number {seq}"), out)
            }
            None => {
                if self.early_images.len() >= self.settings.max_pending_scans {
                    if let Some((old_seq, (old, _))) = self.early_images.pop_first() {
                        self.unmatched_image(old_seq, old, "too many images waiting", out);
                    }
                }
                let window_ms = self.settings.xray.map_or(0, |x| x.image_match_window_ms);
                self.early_images.insert(seq, (sha256, barcode));
                self.timers.insert((now.saturating_add(window_ms), Timer::ImageExpiry(seq)));
            }
        }
    }

    fn attach_image(
        &mut self,
        tracking: TrackingId,
        image_seq: u32,
        sha256: Arc<str>,
        barcode: Option<String>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.parcels.get_mut(&tracking) else { return };
        p.image = Some(sha256.clone());
        // A barcode on the image that is another parcel's waybill: the image may be theirs.
        let named = barcode.as_deref().and_then(|b| Waybill::parse(b).ok());
        let mismatch = named.zip(p.waybill()).is_some_and(|(named, own)| named != own);
        p.image_mismatch = mismatch;
        let manifest = p.waybill().and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.clone());
        out.push(Output::Record(Record::ImageAttached { tracking, image_seq, sha256: sha256.clone() }));
        out.push(Output::ScreenImage { tracking, image_seq, sha256, manifest });
        if mismatch {
            self.alarm(
                "xray_image_mismatch",
                Severity::Warning,
                Some(tracking),
                format!("image {image_seq} carries a barcode of another waybill; parcel held"),
                out,
            );
            self.evaluate(tracking, now, false, out);
        }
    }

    fn unmatched_image(&mut self, image_seq: u32, sha256: Arc<str>, why: &str, out: &mut Vec<Output>) {
        out.push(Output::Record(Record::UnmatchedImage { image_seq, sha256 }));
        self.alarm("xray_image_unmatched", Severity::Warning, None, format!("X-ray image {image_seq}: {why}"), out);
    }

    fn unmatched(&mut self, trigger: Option<TriggerCount>, codes: Vec<String>, why: &str, out: &mut Vec<Output>) {
        self.stats.unmatched_scans += 1;
        out.push(Output::Record(Record::UnmatchedScan { trigger, codes }));
        let at = trigger.map_or_else(|| "without a trigger count".into(), |t| format!("at trigger {}", t.0));
        self.alarm("unmatched_scan", Severity::Warning, None, format!("scan {at} matched no parcel: {why}"), out);
    }

    fn refuse(&mut self, input: &'static str, tracking: Option<TrackingId>, why: String, out: &mut Vec<Output>) {
        self.stats.refused += 1;
        out.push(Output::Record(Record::Refused { input: input.to_string(), tracking, why }));
    }

    fn alarm(
        &mut self,
        code: &'static str,
        severity: Severity,
        tracking: Option<TrackingId>,
        message: String,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::Alarm(Alarm { code, severity, tracking, message }));
    }
}
