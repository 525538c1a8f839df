//! The sans-IO core: domain types, the decision engine and the `Line` state
//! machine. Nothing here reads a clock, a file or a socket.

pub mod engine;
pub mod line;
pub mod manifest;
pub mod operator;
pub mod policy;
pub mod reason;
pub mod sampling;
pub mod types;
pub mod waybill;

pub use engine::{ClearedFlag, Facts, Policy, Rates, WeightTolerance};
pub use line::{
    Alarm, Input, LaneMap, Line, LineMode, LineSettings, LineSnapshot, LineStats, LostWhy, Output, ParcelReport,
    PlcHoldCause, Provisional, Record, ReviewRequest, Severity, SyncCause, XraySettings,
};
pub use manifest::{Item, Manifest, ManifestStatus};
pub use operator::OperatorState;
pub use policy::{InterceptionRule, ManualTarget, RuleSet, TargetCriterion};
pub use reason::{Decision, Reason};
pub use sampling::{Purpose, SiteSecret};
pub use types::{Channel, Lane, Millis, OfficerId, ParcelId, PerChannel, ReviewId, TrackingId, TriggerCount, Verdict};
pub use waybill::{identify, CarrierFormat, Carriers, Identity, Waybill};
