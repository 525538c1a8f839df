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
//!
//! Identity: a parcel is a [`ParcelId`] (PLC boot, tracking id, serial). The PLC's own events
//! name the tracking id within the boot the last [`Input::PlcSync`] announced; every input from
//! the host's side (screening, verdict, transfer, cleared flag) names the whole identity and is
//! refused, with a record, when it names another parcel. A review is bound to one image and one
//! version of the list; a verdict must name the review and the image, and a release verdict
//! counts only while both stand. Sampling and review selection are drawn once, with the rates
//! in force when the parcel is identified.

use super::engine::{ClearedFlag, Facts, Policy, Rates, WeightTolerance};
use super::manifest::Manifest;
use super::operator::OperatorState;
use super::policy::{InterceptionRule, ManualTarget, RuleError, RuleSet};
use super::reason::{Decision, Reason};
use super::sampling::SiteSecret;
use super::types::{
    Channel, Lane, Millis, OfficerId, ParcelId, PerChannel, ReviewId, TrackingId, TriggerCount, Verdict,
};
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
    /// Shadow mode, for a dry run before going live: every decision is made and recorded as it
    /// would be, and the PLC is told hold for every parcel (absent in older records: off).
    #[serde(default)]
    pub shadow: bool,
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
    /// What operators had set (restored at start); absent in older records.
    #[serde(default)]
    pub operator: OperatorState,
    /// Where this run's serials and review ids start (see [`Line::set_serial_base`]).
    #[serde(default)]
    pub serial_base: u64,
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
        let mut line = Line::new(self.settings, policy);
        line.restore(self.operator);
        line.set_serial_base(self.serial_base);
        Ok(line)
    }
}

/// Everything that can happen to the line. All of it is recorded, so the
/// record replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Input {
    /// PLC driver: the PLC's boot the events that follow belong to, and why the driver
    /// (re)synchronised. A restart or lost events orphan every parcel of the line.
    PlcSync {
        boot: u16,
        cause: SyncCause,
    },
    /// PLC: a parcel entered the reading gate. `at` is when, by the PLC's clock mapped onto
    /// line time (absent: when the host took the event in, which is the upper bound anyway).
    Gate {
        tracking: TrackingId,
        trigger: TriggerCount,
        length_mm: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Millis>,
    },
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
    /// X-ray pre-screen findings (empty: clean) for one parcel's image, screened against one
    /// version of its list (`None`: no list known), as [`Output::ScreenImage`] asked.
    XrayScreened {
        #[serde(flatten)]
        parcel: ParcelId,
        #[serde(default)]
        sha256: Arc<str>,
        #[serde(default)]
        manifest_version: Option<u64>,
        flags: Vec<Arc<str>>,
    },
    /// Officer at the X-ray screen, answering one review of one image.
    Verdict {
        #[serde(flatten)]
        parcel: ParcelId,
        #[serde(default)]
        review: ReviewId,
        /// The image the officer looked at (`None` on a line without an X-ray station).
        #[serde(default)]
        image_sha256: Option<Arc<str>>,
        officer: OfficerId,
        verdict: Verdict,
    },
    /// Officer watching green parcels moves one to review by hand.
    ManualTransfer {
        #[serde(flatten)]
        parcel: ParcelId,
        officer: OfficerId,
    },
    /// An officer, with a supervisor's authority, clears one pre-screen flag on one image. It
    /// lowers nothing else: a rule hit, the red channel, a rejected list, a target stay.
    ClearFlag {
        #[serde(flatten)]
        parcel: ParcelId,
        image_sha256: Arc<str>,
        flag: Arc<str>,
        officer: OfficerId,
        supervisor: OfficerId,
        reason: String,
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
        /// With a discrepancy: the parcel was returned (退运) rather than handed over to the
        /// competent department.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        returned: bool,
        /// What the officer wrote (the console asks for it with a discrepancy).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Operator: new random-inspection rates and X-ray review ratios (each 0 to 1), for parcels
    /// identified from now on; a rate left out stays as it was.
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

/// Why the PLC driver announced a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncCause {
    /// The driver's first header: it continues where the PLC's current boot stands.
    FirstContact,
    /// The PLC restarted (its boot count or boot nonce changed): its windows are gone.
    Restart,
    /// The event ring jumped past events the host never read (a fault of the PLC or of the
    /// link): nothing the PLC did since is known. Every parcel is held until the PLC restarts.
    EventsLost,
}

impl Input {
    /// Audit kinds of the inputs that are recorded (all but ticks).
    pub const RECORDED_KINDS: [&'static str; 23] = [
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
        "plc_sync",
        "clear_flag",
    ];

    /// The audit kind of this input.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::PlcSync { .. } => "plc_sync",
            Input::Gate { .. } => "gate",
            Input::Scan { .. } => "scan",
            Input::Manifest(_) => "manifest",
            Input::XrayEntered { .. } => "xray_entered",
            Input::XrayScreened { .. } => "xray_screened",
            Input::Verdict { .. } => "verdict",
            Input::ManualTransfer { .. } => "manual_transfer",
            Input::ClearFlag { .. } => "clear_flag",
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
            | Input::DestinationWritten { tracking, .. }
            | Input::Divert { tracking, .. }
            | Input::Lost { tracking }
            | Input::PlcHold { tracking, .. } => Some(*tracking),
            Input::XrayScreened { parcel, .. }
            | Input::Verdict { parcel, .. }
            | Input::ManualTransfer { parcel, .. }
            | Input::ClearFlag { parcel, .. } => Some(parcel.tracking),
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
    /// The PLC's event ring jumped: what became of the parcel is not known.
    EventsLost,
}

/// One entry for the audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Record {
    /// An input as it arrived (not ticks).
    Input(Input),
    /// Who a parcel is, from its scan (or from the scan timeout: a no-read), and the rates its
    /// random sample and review selection are drawn with (frozen now).
    Identified {
        #[serde(flatten)]
        parcel: ParcelId,
        trigger: TriggerCount,
        identity: Identity,
        timed_out: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rates: Option<Rates>,
    },
    /// The parcel's image is to be screened against this version of its list.
    ScreeningRequested {
        #[serde(flatten)]
        parcel: ParcelId,
        image_seq: u32,
        sha256: Arc<str>,
        manifest_version: Option<u64>,
    },
    ReviewRequested {
        #[serde(default)]
        review: ReviewId,
        #[serde(flatten)]
        parcel: ParcelId,
        waybill: Waybill,
        deadline: Millis,
        #[serde(default)]
        image_sha256: Option<Arc<str>>,
        #[serde(default)]
        manifest_version: u64,
        #[serde(default)]
        flags: Vec<Arc<str>>,
    },
    /// A review no longer stands (the list was amended, the image taken back): a release
    /// verdict given on it does not count, another review follows.
    ReviewWithdrawn {
        review: ReviewId,
        #[serde(flatten)]
        parcel: ParcelId,
        why: String,
    },
    /// The final decision, as sent to the PLC; in shadow mode the PLC was told hold instead.
    Decision {
        #[serde(flatten)]
        parcel: ParcelId,
        waybill: Option<Waybill>,
        lane: Lane,
        reasons: Vec<Reason>,
        manifest_version: Option<u64>,
        /// The channel of the list used, if there was one.
        channel: Option<Channel>,
        /// The X-ray image the decision saw, if there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_sha256: Option<Arc<str>>,
        /// Made in shadow mode: `lane` is where the parcel would have gone, the PLC was told hold.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shadow: bool,
    },
    /// The PLC confirmed a lane other than the one it was told.
    Missort {
        #[serde(flatten)]
        parcel: ParcelId,
        /// The lane sent to the PLC (hold in shadow mode, whatever was decided).
        decided: Option<Lane>,
        actual: Option<Lane>,
        lane_id: u16,
    },
    Lost {
        #[serde(flatten)]
        parcel: ParcelId,
        waybill: Option<Waybill>,
        why: LostWhy,
    },
    /// An input that could not be applied, and why.
    Refused { input: String, tracking: Option<TrackingId>, why: String },
    /// The X-ray image that belongs to the parcel, by its hash.
    ImageAttached {
        #[serde(flatten)]
        parcel: ParcelId,
        image_seq: u32,
        sha256: Arc<str>,
    },
    /// An X-ray image that no parcel claimed in its time window.
    UnmatchedImage { image_seq: u32, sha256: Arc<str> },
    /// A scan that no gate event claimed.
    UnmatchedScan { trigger: Option<TriggerCount>, codes: Vec<String> },
    /// A parcel's story is complete.
    Completed {
        #[serde(flatten)]
        parcel: ParcelId,
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
            Record::ScreeningRequested { .. } => "screening_requested",
            Record::ReviewRequested { .. } => "review_requested",
            Record::ReviewWithdrawn { .. } => "review_withdrawn",
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

    /// The parcel a record tells about, with its whole identity (not inputs or refusals).
    pub fn parcel(&self) -> Option<ParcelId> {
        match self {
            Record::ReviewRequested { parcel, .. }
            | Record::ReviewWithdrawn { parcel, .. }
            | Record::Identified { parcel, .. }
            | Record::ScreeningRequested { parcel, .. }
            | Record::Decision { parcel, .. }
            | Record::Missort { parcel, .. }
            | Record::Lost { parcel, .. }
            | Record::Completed { parcel, .. }
            | Record::ImageAttached { parcel, .. } => Some(*parcel),
            _ => None,
        }
    }

    pub fn tracking(&self) -> Option<TrackingId> {
        match self {
            Record::Input(i) => i.tracking(),
            Record::Refused { tracking, .. } => *tracking,
            other => other.parcel().map(|p| p.tracking),
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

/// What the officer's screen needs to show a parcel, and what its verdict must name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewRequest {
    pub review: ReviewId,
    pub parcel: ParcelId,
    pub waybill: Waybill,
    pub manifest: Arc<Manifest>,
    /// The image to compare with the list (`None` on a line without an X-ray station).
    pub image_sha256: Option<Arc<str>>,
    /// What the pre-screen found on it (empty: clean; a flagged parcel is reviewed only once
    /// its flags were cleared).
    pub flags: Vec<Arc<str>>,
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
    #[serde(flatten)]
    pub parcel: ParcelId,
    pub waybill: Option<Waybill>,
    pub channel: Option<Channel>,
    pub reasons: Vec<Reason>,
    pub decided: Option<Lane>,
    pub confirmed: Option<Lane>,
    /// Decided in shadow mode: `decided` is where it would have gone, the PLC was told hold.
    pub shadow: bool,
    pub lost: bool,
    /// The PLC took the parcel to hold on its own, and why.
    pub held_by_plc: Option<PlcHoldCause>,
    /// The X-ray image's sequence number, when the parcel passed the tunnel.
    pub image_seq: Option<u32>,
    pub entered_at: Millis,
    pub decided_at: Option<Millis>,
    pub done_at: Millis,
}

/// Where a parcel not yet decided would go if it were decided now, and why; for the live line.
/// Nothing is sent to the PLC for it: the decision comes at the cut-off or earlier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Provisional {
    #[serde(flatten)]
    pub parcel: ParcelId,
    pub waybill: Option<Waybill>,
    pub channel: Option<Channel>,
    pub lane: Lane,
    pub reasons: Vec<Reason>,
    /// Measured at the gate, on a line with a scale.
    pub weight_g: Option<u32>,
    pub cutoff_at: Millis,
    /// An officer's verdict is asked for now.
    pub in_review: bool,
    /// An officer sent it to on-site review by hand.
    pub transferred: bool,
    /// Its X-ray image, once attached (a supervisor's flag clearance names it).
    pub image_sha256: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Record(Record),
    /// Tell the PLC where the parcel goes. Sent once per parcel, after the
    /// `Record::Decision` that produced it; the driver writes it for the parcel's boot only.
    SetDestination {
        parcel: ParcelId,
        lane: Lane,
        lane_id: u16,
    },
    ReviewRequested(ReviewRequest),
    /// The parcel is still undecided; re-sent whenever the line looks at it again.
    Provisional(Provisional),
    /// Screen this parcel's X-ray image against its declaration (none known: against nothing);
    /// the result comes back as `Input::XrayScreened`, naming the image and the list version.
    ScreenImage {
        parcel: ParcelId,
        image_seq: u32,
        sha256: Arc<str>,
        manifest: Option<Arc<Manifest>>,
    },
    /// The review no longer waits for a verdict (decided, late, withdrawn or gone).
    ReviewClosed {
        parcel: ParcelId,
        review: ReviewId,
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
    /// The PLC's event ring jumped: everything is held until the PLC restarts.
    pub plc_events_lost: bool,
    /// Shadow mode: decisions are recorded, every parcel is sent to hold.
    pub shadow: bool,
}

/// Counters for monitoring; all since start. Read back from `stop` entries, where a counter
/// added later is 0 in older ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Verdicts refused (another parcel, review or image; after the cut-off), counted in
    /// `refused` too.
    pub verdicts_refused: u64,
}

#[derive(Clone, Debug)]
struct Sent {
    decision: Decision,
    /// The lane the PLC was told: the decision's, or hold in shadow mode.
    lane: Lane,
    at: Millis,
    written: bool,
}

/// The X-ray image attached to a parcel.
#[derive(Clone, Debug)]
struct Image {
    seq: u32,
    sha256: Arc<str>,
    /// The waybill the station read on it, if it read a valid one.
    barcode: Option<Waybill>,
}

/// A review as requested: of one image, against one version of the list.
#[derive(Clone, Debug)]
struct Review {
    id: ReviewId,
    image: Option<Arc<str>>,
}

/// An officer's verdict on one review.
#[derive(Clone, Debug)]
struct Given {
    review: ReviewId,
    officer: OfficerId,
    verdict: Verdict,
}

#[derive(Clone, Debug)]
struct Parcel {
    id: ParcelId,
    trigger: TriggerCount,
    entered_at: Millis,
    cutoff_at: Millis,
    length_mm: Option<u32>,
    /// From the line scale, when the line has one.
    weight_g: Option<u32>,
    codes: Vec<String>,
    identity: Option<Identity>,
    /// Frozen at identification.
    rates: Option<Rates>,
    /// For matching the X-ray image to the parcel.
    image_seq: Option<u32>,
    image: Option<Image>,
    /// The list version the image was last asked to be screened against.
    screen_asked: Option<Option<u64>>,
    /// The last screening accepted for the image: against which list version, what it found.
    screening: Option<(Option<u64>, Vec<Arc<str>>)>,
    /// Flags of that screening cleared with a supervisor's authority.
    cleared: Vec<ClearedFlag>,
    review: Option<Review>,
    verdict: Option<Given>,
    transfer: Option<OfficerId>,
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

    /// The review waiting for a verdict, if one does.
    fn open_review(&self) -> Option<ReviewId> {
        let answered = |r: &Review| self.verdict.as_ref().is_some_and(|v| v.review == r.id);
        self.review.as_ref().filter(|r| !answered(r)).map(|r| r.id)
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
    ReviewDeadline(TrackingId, u64, ReviewId),
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
    /// What operators set, as the daemon stores it.
    operator: OperatorState,
    manifests: HashMap<Waybill, Held>,
    parcels: HashMap<TrackingId, Parcel>,
    by_trigger: HashMap<TriggerCount, TrackingId>,
    /// The parcel the PLC reported in the tunnel with each image sequence number.
    by_image: HashMap<u32, TrackingId>,
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
    /// The PLC boot the PLC's events belong to (0 until the driver says).
    plc_boot: u16,
    /// The PLC's event ring jumped: every parcel is held until the PLC restarts.
    events_lost: bool,
    serial_base: u64,
    next_serial: u64,
    next_review: u64,
    stats: LineStats,
}

impl Line {
    pub fn new(settings: LineSettings, policy: Policy) -> Line {
        Line {
            settings,
            policy,
            operator: OperatorState::default(),
            manifests: HashMap::new(),
            parcels: HashMap::new(),
            by_trigger: HashMap::new(),
            by_image: HashMap::new(),
            early_scans: BTreeMap::new(),
            early_images: BTreeMap::new(),
            early_untriggered: BTreeMap::new(),
            next_untriggered: 0,
            timers: BTreeSet::new(),
            belt_stopped: None,
            safe_mode: false,
            plc_boot: 0,
            events_lost: false,
            serial_base: 0,
            next_serial: 0,
            next_review: 0,
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

    /// The parcel the line knows under `tracking` now, if any: what a live view shows, and what
    /// inputs about it must name.
    pub fn parcel_id(&self, tracking: TrackingId) -> Option<ParcelId> {
        self.parcels.get(&tracking).map(|p| p.id)
    }

    /// What operators have set: the state to store, and what [`OperatorState::after`] of an
    /// operator's input says the line will do with it.
    pub fn operator_state(&self) -> &OperatorState {
        &self.operator
    }

    /// Safe mode, an operator's stop and lost PLC events, as monitoring shows them.
    pub fn mode(&self) -> LineMode {
        LineMode {
            safe_mode: self.safe_mode,
            stopped_by: self.operator.stopped_by.clone(),
            plc_events_lost: self.events_lost,
            shadow: self.settings.shadow,
        }
    }

    /// Nothing is released, so nothing waits to be decided.
    fn holding_all(&self) -> bool {
        self.safe_mode || self.events_lost || self.operator.stopped_by.is_some()
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
            operator: self.operator.clone(),
            serial_base: self.serial_base,
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

    /// Takes back what operators had set before a restart (the daemon's store): a stopped line
    /// starts stopped, set rates and windows stay. Call before the first input; the start
    /// entry's snapshot then records it.
    pub fn restore(&mut self, state: OperatorState) {
        self.operator = state;
        self.apply_operator();
    }

    /// Serials and review ids of this run start after `base`: the daemon gives the audit
    /// chain's length, which grows by at least one entry per parcel and per review, so no
    /// later run gives out a number this one did.
    pub fn set_serial_base(&mut self, base: u64) {
        self.serial_base = base;
        self.next_serial = self.next_serial.max(base);
        self.next_review = self.next_review.max(base);
    }

    fn apply_operator(&mut self) {
        let o = &self.operator;
        if let Some(rate) = o.sample_rate {
            self.policy.sample_rate = rate;
        }
        if let Some(ratio) = o.xray_review_ratio {
            self.policy.xray_review_ratio = ratio;
        }
        if let Some(window_ms) = o.review_window_ms {
            self.settings.review_window_ms = Some(window_ms);
        }
    }

    // --- input

    /// Applies one input at time `now` (deadlines due by `now` fire first)
    /// and appends what must happen to `out`, in order.
    pub fn handle(&mut self, input: Input, now: Millis, out: &mut Vec<Output>) {
        self.expire(now, out);
        if !matches!(input, Input::Tick) {
            out.push(Output::Record(Record::Input(input.clone())));
        }
        if let Some(next) = self.operator.after(&input) {
            return match next {
                Ok(next) => self.on_operator(next, now, out),
                Err(why) => self.refuse(input.kind(), None, why, out),
            };
        }
        match input {
            Input::Tick | Input::Parameters { .. } | Input::LineControl { .. } => {}
            Input::PlcSync { boot, cause } => self.on_plc_sync(boot, cause, now, out),
            Input::Gate { tracking, trigger, length_mm, at } => {
                // An event cannot have happened after the host took it in.
                let at = at.map_or(now, |at| at.min(now));
                self.on_gate(tracking, trigger, length_mm, at, now, out)
            }
            Input::Scan { trigger, codes } => self.on_scan(trigger, codes, now, out),
            Input::Manifest(m) => {
                let waybill = m.waybill;
                if self.preload_manifest(m.clone()) {
                    self.manifest_changed(waybill, now, out);
                } else {
                    self.refuse("manifest", None, format!("version {} is not newer than the one held", m.version), out);
                }
            }
            Input::XrayEntered { tracking, image_seq } => self.on_xray_entered(tracking, image_seq, now, out),
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
            Input::XrayScreened { parcel, sha256, manifest_version, flags } => {
                self.on_screened(parcel, sha256, manifest_version, flags, now, out)
            }
            Input::Verdict { parcel, review, image_sha256, officer, verdict } => {
                self.on_verdict(parcel, review, image_sha256, Given { review, officer, verdict }, now, out)
            }
            Input::ManualTransfer { parcel, officer } => {
                if let Some(p) = self.undecided(parcel, "manual_transfer", now, out) {
                    p.transfer = Some(officer);
                    self.evaluate(parcel.tracking, now, false, out);
                }
            }
            Input::ClearFlag { parcel, image_sha256, flag, officer, supervisor, .. } => {
                let cleared = ClearedFlag { flag, image_sha256, officer, supervisor };
                self.on_clear_flag(parcel, cleared, now, out)
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
            Input::Rules { rules, .. } => match RuleSet::new(rules) {
                Ok(set) => self.set_rules(Arc::new(set)),
                Err(e) => self.refuse("rules", None, format!("{e}; the rules in force stay"), out),
            },
            Input::TargetRemove { id, .. } => {
                let before = self.policy.targets.len();
                self.policy.targets.retain(|t| t.id != id);
                if self.policy.targets.len() == before {
                    self.refuse("target_remove", None, format!("no target {id}"), out);
                }
            }
        }
    }

    /// An operator's stop, start or parameters, as [`OperatorState::after`] worked them out.
    fn on_operator(&mut self, next: OperatorState, now: Millis, out: &mut Vec<Output>) {
        let stopping = self.operator.stopped_by.is_none() && next.stopped_by.is_some();
        self.operator = next;
        self.apply_operator();
        if let Some(officer) = self.operator.stopped_by.as_ref().filter(|_| stopping) {
            let message = format!("line stopped by {officer}: every parcel to hold");
            self.alarm("line_stopped", Severity::Warning, None, message, out);
            self.hold_undecided(now, out);
        }
    }

    /// The PLC's boot for the events that follow. After a restart or lost events the PLC no
    /// longer tracks what the line knows: every parcel is orphaned.
    fn on_plc_sync(&mut self, boot: u16, cause: SyncCause, now: Millis, out: &mut Vec<Output>) {
        let mut orphans: Vec<TrackingId> = self
            .parcels
            .iter()
            .filter(|(_, p)| cause != SyncCause::FirstContact || p.id.boot != boot)
            .map(|(t, _)| *t)
            .collect();
        orphans.sort_unstable(); // HashMap order is not deterministic
        self.plc_boot = boot;
        match cause {
            SyncCause::FirstContact => {}
            SyncCause::Restart => {
                if self.events_lost {
                    self.events_lost = false;
                    let message = format!("PLC restarted (boot {boot}): the lost events no longer hold the line");
                    self.alarm("plc_events_lost_cleared", Severity::Warning, None, message, out);
                }
            }
            SyncCause::EventsLost => {
                self.events_lost = true;
                let message = "PLC event ring jumped past unread events: every parcel held until the PLC restarts";
                self.alarm("plc_events_lost", Severity::Critical, None, message.into(), out);
            }
        }
        for tracking in orphans {
            if cause == SyncCause::EventsLost {
                self.retire_lost(tracking, LostWhy::EventsLost, now, out);
            } else {
                self.on_plc_hold(tracking, PlcHoldCause::Restart, now, out);
            }
        }
    }

    fn on_gate(
        &mut self,
        tracking: TrackingId,
        trigger: TriggerCount,
        length_mm: Option<u32>,
        at: Millis,
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
        let id = ParcelId { tracking, boot: self.plc_boot, serial: self.next_serial };
        let serial = id.serial;
        let cutoff_at = at.saturating_add(self.settings.gate_to_cutoff_ms);
        let s = &self.settings;
        self.timers.insert((at.saturating_add(s.scan_timeout_ms), Timer::ScanTimeout(tracking, serial)));
        self.timers.insert((cutoff_at, Timer::Cutoff(tracking, serial)));
        self.timers.insert((
            at.saturating_add(s.gate_to_end_ms + s.confirm_grace_ms),
            Timer::ConfirmTimeout(tracking, serial),
        ));
        // A parcel seen at the gate of a standing belt waits with the others.
        self.freeze_positional(now);
        self.parcels.insert(
            tracking,
            Parcel {
                id,
                trigger,
                entered_at: at,
                cutoff_at,
                length_mm,
                weight_g: None,
                codes: Vec::new(),
                identity: None,
                rates: None,
                image_seq: None,
                image: None,
                screen_asked: None,
                screening: None,
                cleared: Vec::new(),
                review: None,
                verdict: None,
                transfer: None,
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
        self.identified(tracking, identity, false, out);
        self.screen_if_stale(tracking, out);
        self.evaluate(tracking, now, false, out);
    }

    /// Sets who the parcel is and freezes the rates its draws are made with, on record.
    fn identified(&mut self, tracking: TrackingId, identity: Identity, timed_out: bool, out: &mut Vec<Output>) {
        let rates = self.policy.rates();
        let Some(p) = self.parcels.get_mut(&tracking) else { return };
        if matches!(identity, Identity::Waybill { .. }) {
            p.rates.get_or_insert(rates);
        }
        p.identity = Some(identity.clone());
        let (parcel, trigger, rates) = (p.id, p.trigger, p.rates);
        out.push(Output::Record(Record::Identified { parcel, trigger, identity, timed_out, rates }));
    }

    /// The parcel `id` names, if it is that very parcel (same boot and serial as well as
    /// tracking id) and still undecided; refused on record otherwise.
    fn undecided(
        &mut self,
        id: ParcelId,
        what: &'static str,
        now: Millis,
        out: &mut Vec<Output>,
    ) -> Option<&mut Parcel> {
        let why = match self.parcels.get(&id.tracking) {
            None => "unknown tracking id".to_string(),
            Some(p) if p.id != id => {
                format!("it names {id}, but tracking id {} is now {}: another parcel", id.tracking, p.id)
            }
            Some(p) if p.sent.is_some() => {
                let when = if now >= p.cutoff_at { "after the cut-off" } else { "after the decision was sent" };
                when.to_string()
            }
            Some(_) => return self.parcels.get_mut(&id.tracking),
        };
        self.refuse(what, Some(id.tracking), why, out);
        None
    }

    fn on_verdict(
        &mut self,
        id: ParcelId,
        review: ReviewId,
        image: Option<Arc<str>>,
        given: Given,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.undecided(id, "verdict", now, out) else {
            self.verdict_refused(id, "the parcel it names is not on the line undecided", out);
            return;
        };
        let why = match &p.review {
            None => format!("no review {review} of this parcel stands"),
            Some(r) if r.id != review => format!("review {review} does not stand; the parcel's review is {}", r.id),
            Some(_) if p.verdict.as_ref().is_some_and(|v| v.review == review) => {
                format!("review {review} was answered already")
            }
            Some(r) if r.image != image => format!(
                "it names image {}, the review is of image {}",
                image.as_deref().unwrap_or("(none)"),
                r.image.as_deref().unwrap_or("(none)")
            ),
            Some(_) => {
                p.verdict = Some(given);
                return self.evaluate(id.tracking, now, false, out);
            }
        };
        self.refuse("verdict", Some(id.tracking), why, out);
        self.verdict_refused(id, "it does not answer the review that stands", out);
    }

    /// A refused verdict is counted and raised, besides its record: an officer's decision did
    /// not take effect.
    fn verdict_refused(&mut self, id: ParcelId, why: &str, out: &mut Vec<Output>) {
        self.stats.verdicts_refused += 1;
        self.alarm(
            "verdict_refused",
            Severity::Warning,
            Some(id.tracking),
            format!("verdict for {id} refused: {why}"),
            out,
        );
    }

    fn on_clear_flag(&mut self, id: ParcelId, cleared: ClearedFlag, now: Millis, out: &mut Vec<Output>) {
        let waybill = self.parcels.get(&id.tracking).and_then(Parcel::waybill);
        let version = waybill.and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.version);
        let Some(p) = self.undecided(id, "clear_flag", now, out) else { return };
        let why = match (&p.image, &p.screening) {
            _ if cleared.officer == cleared.supervisor => {
                "the officer cannot authorise their own clearance".to_string()
            }
            (None, _) => "no image is attached".to_string(),
            (Some(image), _) if image.sha256 != cleared.image_sha256 => {
                format!("it names image {}, the parcel's is {}", cleared.image_sha256, image.sha256)
            }
            (_, Some((screened, flags))) if *screened == version && flags.contains(&cleared.flag) => {
                if !p.cleared.iter().any(|c| c.flag == cleared.flag) {
                    p.cleared.push(cleared);
                }
                return self.evaluate(id.tracking, now, false, out);
            }
            _ => format!("the current screening of this image has no flag {:?}", cleared.flag),
        };
        self.refuse("clear_flag", Some(id.tracking), why, out);
    }

    fn on_screened(
        &mut self,
        id: ParcelId,
        sha256: Arc<str>,
        manifest_version: Option<u64>,
        flags: Vec<Arc<str>>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.parcels.get_mut(&id.tracking).filter(|p| p.id == id) else {
            let why = format!("no parcel {id} on the line");
            return self.refuse("xray_screened", Some(id.tracking), why, out);
        };
        let version = p.waybill().and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.version);
        let why = match &p.image {
            None => "no image is attached to the parcel".to_string(),
            Some(image) if image.sha256 != sha256 => {
                format!("it screened image {sha256}, the parcel's is {}", image.sha256)
            }
            // A result for a list since amended: the one asked since will come.
            Some(_) if manifest_version != version => format!(
                "screened against list version {}, the parcel's is {}",
                manifest_version.map_or("(none)".into(), |v| v.to_string()),
                version.map_or("(none)".into(), |v| v.to_string())
            ),
            Some(_) => {
                p.screening = Some((manifest_version, flags));
                p.cleared.clear();
                // Every image is screened, held parcels' too: after the decision it is on record only.
                if p.sent.is_none() {
                    self.evaluate(id.tracking, now, false, out);
                }
                return;
            }
        };
        self.refuse("xray_screened", Some(id.tracking), why, out);
    }

    /// A new version of a list: undecided parcels under it are screened against it again, and
    /// a review of the old version no longer stands (a release given on it does not count).
    fn manifest_changed(&mut self, waybill: Waybill, now: Millis, out: &mut Vec<Output>) {
        let mut affected: Vec<TrackingId> = self
            .parcels
            .iter()
            .filter(|(_, p)| p.sent.is_none() && p.waybill() == Some(waybill))
            .map(|(t, _)| *t)
            .collect();
        affected.sort_unstable(); // HashMap order is not deterministic
        for tracking in affected {
            let version = self.manifests.get(&waybill).map_or(0, |h| h.manifest.version);
            self.withdraw_review(tracking, format!("the list was amended to version {version}"), out);
            self.screen_if_stale(tracking, out);
            self.evaluate(tracking, now, false, out);
        }
    }

    fn withdraw_review(&mut self, tracking: TrackingId, why: String, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get_mut(&tracking) else { return };
        let Some(review) = p.review.take() else { return };
        let answered = p.verdict.as_ref().is_some_and(|v| v.review == review.id);
        // A doubt an officer raised stays; only a release depends on what was reviewed.
        if p.verdict.as_ref().is_some_and(|v| v.verdict == Verdict::Release) {
            p.verdict = None;
        }
        let parcel = p.id;
        if !answered {
            out.push(Output::ReviewClosed { parcel, review: review.id });
        }
        out.push(Output::Record(Record::ReviewWithdrawn { review: review.id, parcel, why }));
    }

    /// Asks for the parcel's image to be screened against its list as it is now, unless that
    /// was asked already.
    fn screen_if_stale(&mut self, tracking: TrackingId, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get_mut(&tracking) else { return };
        let Some(image) = p.image.as_ref() else { return };
        let manifest = p.waybill().and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.clone());
        let version = manifest.as_ref().map(|m| m.version);
        if p.screen_asked == Some(version) {
            return;
        }
        p.screen_asked = Some(version);
        let (parcel, image_seq, sha256) = (p.id, image.seq, image.sha256.clone());
        out.push(Output::Record(Record::ScreeningRequested {
            parcel,
            image_seq,
            sha256: sha256.clone(),
            manifest_version: version,
        }));
        out.push(Output::ScreenImage { parcel, image_seq, sha256, manifest });
    }

    /// Every parcel passes the tunnel, decided or not; only the image link is kept. Two parcels
    /// claiming one sequence number cannot tell whose the image is: neither gets it.
    fn on_xray_entered(&mut self, tracking: TrackingId, image_seq: u32, now: Millis, out: &mut Vec<Output>) {
        match self.parcels.get(&tracking).map(|p| p.image_seq) {
            None => return self.refuse("xray_entered", Some(tracking), "unknown tracking id".into(), out),
            // A parcel enters the tunnel once: which image is its own is not clear now.
            Some(Some(seq)) if seq != image_seq => {
                let why = format!("the parcel entered the tunnel already, with image {seq}");
                return self.refuse("xray_entered", Some(tracking), why, out);
            }
            Some(_) => {}
        }
        match self.by_image.get(&image_seq).copied() {
            // The same report again: nothing new.
            Some(owner) if owner == tracking => {}
            Some(owner) => {
                self.by_image.remove(&image_seq);
                for t in [owner, tracking] {
                    self.detach_image(t, image_seq, out);
                }
                let message = format!("image {image_seq} claimed by {owner} and {tracking}: neither gets it");
                self.alarm("xray_image_seq_conflict", Severity::Warning, Some(tracking), message, out);
                for t in [owner, tracking] {
                    self.evaluate(t, now, false, out);
                }
            }
            None => {
                if let Some(p) = self.parcels.get_mut(&tracking) {
                    p.image_seq = Some(image_seq);
                }
                self.by_image.insert(image_seq, tracking);
                if let Some((sha256, barcode)) = self.early_images.remove(&image_seq) {
                    self.attach_image(tracking, image_seq, sha256, barcode, now, out);
                }
            }
        }
    }

    /// Takes an image link back from an undecided parcel (decided ones keep their record).
    fn detach_image(&mut self, tracking: TrackingId, image_seq: u32, out: &mut Vec<Output>) {
        let Some(p) = self.parcels.get_mut(&tracking).filter(|p| p.sent.is_none()) else { return };
        p.image_seq = None;
        if p.image.take().is_some() {
            p.screening = None;
            p.screen_asked = None;
            p.cleared.clear();
            self.withdraw_review(tracking, format!("image {image_seq} is claimed by another parcel too"), out);
        }
    }

    fn on_written(&mut self, tracking: TrackingId, lane_id: u16, out: &mut Vec<Output>) {
        let expected =
            self.parcels.get(&tracking).and_then(|p| p.sent.as_ref()).map(|s| self.settings.lanes.id(s.lane));
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
        let Some(p) = self.take(tracking) else {
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
        // Judged against what the PLC was told, which in shadow mode is hold.
        let sent = p.sent.as_ref().map(|s| s.lane);
        // Undecided parcels, and those the PLC said it holds, are meant to take the hold lane.
        let expected = if p.plc_hold.is_some() { Some(Lane::Hold) } else { sent.or(Some(Lane::Hold)) };
        if actual != expected {
            self.stats.missorts += 1;
            out.push(Output::Record(Record::Missort { parcel: p.id, decided: sent, actual, lane_id }));
            let unsafe_release = actual == Some(Lane::Release);
            let shadow = if self.settings.shadow { " (shadow mode)" } else { "" };
            self.alarm(
                if unsafe_release { "unsafe_release" } else { "missort" },
                if unsafe_release { Severity::Critical } else { Severity::Warning },
                Some(tracking),
                format!(
                    "sent {}{shadow}, PLC confirmed {}",
                    sent.map_or("nothing", Lane::as_str),
                    actual.map_or("an unknown lane", Lane::as_str)
                ),
                out,
            );
        } else {
            self.stats.confirmed += 1;
        }
        self.complete(p, actual, false, now, out);
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
                        if let Some(p) = self.parcels.get_mut(&tracking).filter(|p| p.id.serial == serial) {
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
                Timer::ReviewDeadline(tracking, serial, review) => {
                    let waiting = |p: &Parcel| p.sent.is_none() && p.open_review() == Some(review);
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
        if self.parcels.contains_key(&tracking) {
            self.stats.no_reads += 1;
            self.identified(tracking, Identity::NoRead, true, out);
        }
    }

    /// The parcel a timer was set for, if it is still on the line.
    fn live(&mut self, tracking: TrackingId, serial: u64) -> Option<&mut Parcel> {
        self.parcels.get_mut(&tracking).filter(|p| p.id.serial == serial)
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
        let version = manifest.map(|m| m.version);
        // A screening counts for the image attached and the list as it is now.
        let screened = p.image.is_some() && p.screening.as_ref().is_some_and(|(v, _)| *v == version);
        // Flags stand until a screening of the list as it is now says otherwise.
        let flags = p.screening.as_ref().map_or(&[][..], |(_, f)| f.as_slice());
        let image_mismatch =
            p.image.as_ref().and_then(|i| i.barcode).zip(p.waybill()).is_some_and(|(named, own)| named != own);
        let facts = Facts {
            identity: p.identity.as_ref(),
            length_mm: p.length_mm,
            weight_g: p.weight_g,
            manifest: manifest.map(|m| &**m),
            rule_hits: held.map_or(&[], |h| &h.rule_hits),
            xray_flags: flags,
            cleared_flags: &p.cleared,
            rates: p.rates,
            verdict: p.verdict.as_ref().map(|v| (&v.officer, v.verdict)),
            transfer: p.transfer.as_ref(),
            late: at_cutoff,
            safe_mode: self.safe_mode,
            plc_events_lost: self.events_lost,
            line_stopped: self.operator.stopped_by.is_some(),
            xray_missing_lane: self.settings.xray.map(|x| x.missing_image_lane),
            screened,
            image_mismatch,
        };
        let decision = self.policy.decide(&facts, now);
        let channel = manifest.map(|m| m.channel);
        let image = p.image.as_ref().map(|i| i.sha256.clone());
        let (id, waybill, cutoff_at) = (p.id, p.waybill(), p.cutoff_at);
        // An officer is asked only once the image is screened: the review is of that image.
        let ask = decision.awaiting_review()
            && p.review.is_none()
            && !decision.reasons.contains(&Reason::AwaitingScreening)
            && !at_cutoff;
        if let (true, Some(waybill), Some(manifest)) = (ask, waybill, manifest.cloned()) {
            let flags = flags.to_vec();
            self.request_review(id, waybill, manifest, image.clone(), flags, cutoff_at, now, out);
        }
        if !(at_cutoff || decision.is_final_hold()) {
            if let Some(p) = self.parcels.get(&tracking) {
                out.push(Output::Provisional(Provisional {
                    parcel: id,
                    waybill,
                    channel,
                    lane: decision.lane,
                    reasons: decision.reasons,
                    weight_g: p.weight_g,
                    cutoff_at,
                    in_review: p.open_review().is_some(),
                    transferred: p.transfer.is_some(),
                    image_sha256: image,
                }));
            }
            return;
        }
        if let Some(review) = self.parcels.get(&tracking).and_then(Parcel::open_review) {
            out.push(Output::ReviewClosed { parcel: id, review });
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
        let shadow = self.settings.shadow;
        out.push(Output::Record(Record::Decision {
            parcel: id,
            waybill,
            lane: decision.lane,
            reasons: decision.reasons.clone(),
            manifest_version: version,
            channel,
            image_sha256: image,
            shadow,
        }));
        // Shadow mode changes what the PLC is told, never what is decided or recorded.
        let lane = if shadow { Lane::Hold } else { decision.lane };
        out.push(Output::SetDestination { parcel: id, lane, lane_id: self.settings.lanes.id(lane) });
        if let Some(p) = self.parcels.get_mut(&tracking) {
            p.sent = Some(Sent { decision, lane, at: now, written: false });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_review(
        &mut self,
        parcel: ParcelId,
        waybill: Waybill,
        manifest: Arc<Manifest>,
        image_sha256: Option<Arc<str>>,
        flags: Vec<Arc<str>>,
        cutoff_at: Millis,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        self.next_review += 1;
        let review = ReviewId(self.next_review);
        let deadline = self.settings.review_window_ms.map_or(cutoff_at, |w| cutoff_at.min(now.saturating_add(w)));
        self.stats.reviews += 1;
        out.push(Output::Record(Record::ReviewRequested {
            review,
            parcel,
            waybill,
            deadline,
            image_sha256: image_sha256.clone(),
            manifest_version: manifest.version,
            flags: flags.clone(),
        }));
        out.push(Output::ReviewRequested(ReviewRequest {
            review,
            parcel,
            waybill,
            manifest,
            image_sha256: image_sha256.clone(),
            flags,
            deadline,
        }));
        if let Some(p) = self.parcels.get_mut(&parcel.tracking) {
            p.review = Some(Review { id: review, image: image_sha256 });
        }
        if deadline < cutoff_at {
            self.timers.insert((deadline, Timer::ReviewDeadline(parcel.tracking, parcel.serial, review)));
        }
    }

    // --- leaving the line

    /// Takes a parcel off the line, with its indices.
    fn take(&mut self, tracking: TrackingId) -> Option<Parcel> {
        let p = self.parcels.remove(&tracking)?;
        self.by_trigger.remove(&p.trigger);
        if let Some(seq) = p.image_seq.filter(|seq| self.by_image.get(seq) == Some(&tracking)) {
            self.by_image.remove(&seq);
        }
        Some(p)
    }

    fn retire_lost(&mut self, tracking: TrackingId, why: LostWhy, now: Millis, out: &mut Vec<Output>) -> bool {
        let Some(p) = self.take(tracking) else {
            return false;
        };
        self.stats.lost += 1;
        out.push(Output::Record(Record::Lost { parcel: p.id, waybill: p.waybill(), why }));
        self.alarm(
            "parcel_lost",
            Severity::Warning,
            Some(tracking),
            format!("parcel lost ({why:?}); it runs on to the end of the line (hold)"),
            out,
        );
        self.complete(p, None, true, now, out);
        true
    }

    fn complete(&mut self, p: Parcel, confirmed: Option<Lane>, lost: bool, now: Millis, out: &mut Vec<Output>) {
        let parcel = p.id;
        if let Some(review) = p.open_review().filter(|_| p.sent.is_none()) {
            out.push(Output::ReviewClosed { parcel, review });
        }
        let waybill = p.waybill();
        let decided = p.sent.as_ref().map(|s| s.decision.lane);
        if p.sent.as_ref().is_some_and(|s| !s.written) && confirmed != Some(Lane::Hold) {
            // We never learnt that the PLC had our destination: it could only have used its default.
            self.alarm(
                "destination_unconfirmed",
                Severity::Warning,
                Some(parcel.tracking),
                "parcel left before its destination was written".into(),
                out,
            );
        }
        out.push(Output::Record(Record::Completed { parcel, waybill, decided, confirmed }));
        out.push(Output::ParcelDone(ParcelReport {
            parcel,
            waybill,
            channel: waybill.and_then(|w| self.manifests.get(&w)).map(|h| h.manifest.channel),
            reasons: p.sent.as_ref().map(|s| s.decision.reasons.clone()).unwrap_or_default(),
            decided,
            confirmed,
            shadow: p.sent.is_some() && self.settings.shadow,
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
        let owner =
            self.by_image.get(&seq).and_then(|t| self.parcels.get(t)).map(|p| (p.id.tracking, p.image.is_some()));
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
        seq: u32,
        sha256: Arc<str>,
        barcode: Option<String>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.parcels.get_mut(&tracking) else { return };
        // A barcode on the image that is another parcel's waybill: the image may be theirs. It is
        // compared with the parcel's waybill at every decision, so a scan after the image counts.
        let barcode = barcode.as_deref().and_then(|b| Waybill::parse(b).ok());
        p.image = Some(Image { seq, sha256: sha256.clone(), barcode });
        let (parcel, own) = (p.id, p.waybill());
        out.push(Output::Record(Record::ImageAttached { parcel, image_seq: seq, sha256 }));
        self.screen_if_stale(tracking, out);
        if barcode.zip(own).is_some_and(|(named, own)| named != own) {
            self.alarm(
                "xray_image_mismatch",
                Severity::Warning,
                Some(tracking),
                format!("image {seq} carries a barcode of another waybill; parcel held"),
                out,
            );
        }
        self.evaluate(tracking, now, false, out);
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
