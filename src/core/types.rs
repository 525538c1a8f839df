//! Domain value types: small, `Copy` where possible, validated at construction.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Line-clock time in milliseconds. The core never reads a clock: drivers pass
/// this in, the simulator steps it, replay takes it from the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn saturating_add(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The number the PLC gives a parcel when it enters the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackingId(pub u32);

/// One parcel as the host knows it: the PLC boot it entered the line in, the tracking id the
/// PLC gave it then, and the core's serial for it, unique across the daemon's runs (a PLC
/// reuses tracking ids after a cold reset; a serial is never reused). Every input about a
/// parcel from the host's side (screening, verdicts, transfers) names all three, so that it
/// can only land on the parcel it was meant for. Records from before identities read back with
/// boot and serial 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ParcelId {
    pub tracking: TrackingId,
    #[serde(default)]
    pub boot: u16,
    #[serde(default)]
    pub serial: u64,
}

impl fmt::Display for ParcelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (boot {}, serial {})", self.tracking, self.boot, self.serial)
    }
}

/// An officer's review of one parcel's image against one version of its list: a verdict must
/// name it. Unique across the daemon's runs, like a parcel's serial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReviewId(pub u64);

impl fmt::Display for ReviewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}", self.0)
    }
}

/// The scanner trigger count the PLC reports with a gate event; it pairs a
/// scan with its parcel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TriggerCount(pub u32);

impl fmt::Display for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// Where a parcel physically leaves the line. The order is the precedence:
/// hold > inspection > release, so `max` of reasons' lanes is the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Release,
    Inspection,
    Hold,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Release, Lane::Inspection, Lane::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Release => "release",
            Lane::Inspection => "inspection",
            Lane::Hold => "hold",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The risk channel the platform set for a declaration list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Green,
    Red,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Green => "green",
            Channel::Red => "red",
        }
    }
}

/// A per-channel parameter (sampling rate, X-ray pass ratio).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerChannel<T> {
    pub green: T,
    pub red: T,
}

impl<T: Copy> PerChannel<T> {
    pub fn get(&self, channel: Channel) -> T {
        match channel {
            Channel::Green => self.green,
            Channel::Red => self.red,
        }
    }
}

/// Who did something: an officer at the screen, a risk officer, an operator.
/// Bounded and printable so that it can go into records and topics as is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OfficerId(std::sync::Arc<str>);

pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("identifier must be 1 to {MAX_ID_LEN} printable characters without spaces, got {0:?}")]
pub struct BadId(pub String);

impl OfficerId {
    pub fn new(s: &str) -> Result<Self, BadId> {
        if valid_id(s) {
            Ok(OfficerId(s.into()))
        } else {
            Err(BadId(s.chars().take(80).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_ID_LEN && s.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

impl TryFrom<String> for OfficerId {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, BadId> {
        OfficerId::new(&s)
    }
}

impl From<OfficerId> for String {
    fn from(o: OfficerId) -> String {
        o.0.to_string()
    }
}

impl fmt::Display for OfficerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An officer's decision at the X-ray screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Image matches the declared goods.
    Release,
    /// Open it.
    Inspect,
    /// Licence-required or irregular.
    Hold,
}

impl Verdict {
    pub fn lane(self) -> Lane {
        match self {
            Verdict::Release => Lane::Release,
            Verdict::Inspect => Lane::Inspection,
            Verdict::Hold => Lane::Hold,
        }
    }
}
