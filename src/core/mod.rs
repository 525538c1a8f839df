//! The sans-IO core: domain types, the decision engine and the `Line` state
//! machine. Nothing here reads a clock, a file or a socket.

pub mod engine;
pub mod line;
pub mod manifest;
pub mod policy;
pub mod reason;
pub mod sampling;
pub mod types;
pub mod waybill;

pub use engine::{Facts, Policy, WeightTolerance};
pub use line::{
    Alarm, Input, LaneMap, Line, LineMode, LineSettings, LineSnapshot, LineStats, LostWhy, Output, ParcelReport,
    PlcHoldCause, Record, ReviewRequest, Severity, XraySettings,
};
pub use manifest::{Item, Manifest, ManifestStatus};
pub use policy::{InterceptionRule, ManualTarget, RuleSet, TargetCriterion};
pub use reason::{Decision, Reason};
pub use sampling::{Purpose, SiteSecret};
pub use types::{Channel, Lane, Millis, OfficerId, PerChannel, TrackingId, TriggerCount, Verdict};
pub use waybill::{identify, CarrierFormat, Carriers, Identity, Waybill};
