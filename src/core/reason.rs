//! Reasons and decisions: a decision is a lane plus the reasons that
//! produced it, and the strongest reason wins.

use super::types::{Channel, Lane, OfficerId, Verdict};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One cause for a lane. Each variant names one thing that happened or was
/// found; `lane()` is what it asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    // --- release grounds: the only reason that asks for release
    /// Single valid waybill, accepted manifest, green channel.
    GreenChannel,
    // --- inspection (open it)
    /// Red channel: on-site review (现场审核).
    RedChannel,
    /// The platform targeted the list (random or by hand, 布控).
    PlatformTargeted,
    /// A local manual target (人工布控) matched.
    ManualTarget {
        target: Arc<str>,
    },
    /// A local interception rule (拦截规则) matched; its action decides the lane.
    Interception {
        rule: Arc<str>,
        action: Lane,
    },
    /// Keyed-hash random sample at the channel's rate (抽检).
    RandomSample {
        channel: Channel,
    },
    /// The X-ray pre-screen raised a flag.
    XrayFlag {
        flag: Arc<str>,
    },
    /// A pre-screen flag on this image, cleared by an officer with a supervisor's authority: it
    /// no longer asks for inspection, and it lowers nothing else.
    XrayFlagCleared {
        flag: Arc<str>,
        image_sha256: Arc<str>,
        officer: OfficerId,
        supervisor: OfficerId,
    },
    /// The line scale disagrees with the declared gross weight beyond the tolerance.
    WeightMismatch {
        declared_g: u32,
        measured_g: u32,
    },
    /// A green parcel moved to review by hand (人工转至现场审核).
    ManualTransfer {
        officer: OfficerId,
    },
    /// The officer's verdict at the X-ray screen.
    OfficerVerdict {
        officer: OfficerId,
        verdict: Verdict,
    },
    // --- hold
    NoRead,
    SeveralWaybills {
        count: u32,
    },
    BadCheckDigit,
    /// Longer than any single parcel: two parcels under one tracking window.
    Overlength {
        length_mm: u32,
    },
    NoManifest,
    ManifestRejected,
    LicenceRequired,
    /// Selected for the officer's look and no verdict yet; turns into `Late` at the cut-off.
    AwaitingReview,
    /// Bound for release, its X-ray image not yet screened; turns into `XrayImageMissing` at
    /// the cut-off.
    AwaitingScreening,
    /// The cut-off came and the parcel's X-ray image was never screened (no image, or no
    /// screening result): the lane configured for it, never release.
    XrayImageMissing {
        action: Lane,
    },
    /// The barcode the X-ray station put on the image names another waybill: the image may be
    /// another parcel's, so its screening cannot clear this one.
    ImageBarcodeMismatch,
    /// The cut-off came before the decision was final.
    Late,
    PlcSafeMode,
    /// The PLC's event ring jumped past events the host never read: what the PLC did is no
    /// longer known, so every parcel is held until the PLC restarts.
    PlcEventsLost,
    /// An operator stopped the line.
    LineStopped,
    /// No reason for any lane was found: release must be earned.
    NoGrounds,
}

impl Reason {
    pub fn lane(&self) -> Lane {
        use Reason::*;
        match self {
            GreenChannel | XrayFlagCleared { .. } => Lane::Release,
            RedChannel
            | PlatformTargeted
            | ManualTarget { .. }
            | RandomSample { .. }
            | XrayFlag { .. }
            | WeightMismatch { .. }
            | ManualTransfer { .. } => Lane::Inspection,
            Interception { action, .. } => *action,
            // Configured as inspection or hold; release is refused when it is configured.
            XrayImageMissing { action } => (*action).max(Lane::Inspection),
            OfficerVerdict { verdict, .. } => verdict.lane(),
            NoRead
            | SeveralWaybills { .. }
            | BadCheckDigit
            | Overlength { .. }
            | NoManifest
            | ManifestRejected
            | LicenceRequired
            | AwaitingReview
            | AwaitingScreening
            | ImageBarcodeMismatch
            | Late
            | PlcSafeMode
            | PlcEventsLost
            | LineStopped
            | NoGrounds => Lane::Hold,
        }
    }

    /// A hold that nothing later can lift, so the destination can go out at once.
    pub fn is_final_hold(&self) -> bool {
        self.lane() == Lane::Hold && !matches!(self, Reason::AwaitingReview | Reason::AwaitingScreening)
    }

    /// Short text for the live line and the officer's screen.
    pub fn label(&self) -> String {
        use Reason::*;
        match self {
            GreenChannel => "green channel".into(),
            RedChannel => "red channel".into(),
            PlatformTargeted => "platform targeted".into(),
            ManualTarget { target } => format!("manual target {target}"),
            Interception { rule, .. } => format!("rule {rule}"),
            RandomSample { channel } => format!("random sample ({})", channel.as_str()),
            XrayFlag { flag } => format!("x-ray: {flag}"),
            XrayFlagCleared { flag, officer, supervisor, .. } => {
                format!("x-ray flag {flag} cleared by {officer}, authorised by {supervisor}")
            }
            WeightMismatch { declared_g, measured_g } => {
                format!("weight mismatch (declared {declared_g} g, weighed {measured_g} g)")
            }
            ManualTransfer { officer } => format!("transferred by {officer}"),
            OfficerVerdict { officer, verdict } => format!("verdict {verdict:?} by {officer}").to_lowercase(),
            NoRead => "no read".into(),
            SeveralWaybills { count } => format!("{count} waybills"),
            BadCheckDigit => "bad check digit".into(),
            Overlength { length_mm } => format!("overlength {length_mm} mm"),
            NoManifest => "no manifest".into(),
            ManifestRejected => "manifest rejected".into(),
            LicenceRequired => "licence required".into(),
            AwaitingReview => "awaiting review".into(),
            AwaitingScreening => "awaiting X-ray screening".into(),
            XrayImageMissing { .. } => "X-ray image missing".into(),
            ImageBarcodeMismatch => "X-ray image barcode names another waybill".into(),
            Late => "late".into(),
            PlcSafeMode => "PLC safe mode".into(),
            PlcEventsLost => "PLC events lost".into(),
            LineStopped => "line stopped by an operator".into(),
            NoGrounds => "no grounds for release".into(),
        }
    }
}

/// A lane and every reason that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub lane: Lane,
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The strongest reason wins. Release is earned: it needs the
    /// green-channel grounds, whatever else asks for release (an officer's
    /// release verdict clears a doubt, it does not identify a parcel).
    pub fn from_reasons(mut reasons: Vec<Reason>) -> Decision {
        let lane = reasons.iter().map(Reason::lane).max();
        if lane.is_none() || (lane == Some(Lane::Release) && !reasons.contains(&Reason::GreenChannel)) {
            reasons.push(Reason::NoGrounds);
        }
        let lane = reasons.iter().map(Reason::lane).max().unwrap_or(Lane::Hold);
        Decision { lane, reasons }
    }

    pub fn is_final_hold(&self) -> bool {
        self.reasons.iter().any(Reason::is_final_hold)
    }

    pub fn awaiting_review(&self) -> bool {
        self.reasons.contains(&Reason::AwaitingReview)
    }

    /// The reasons that decided the lane (those asking for it), strongest kind first.
    pub fn deciding(&self) -> impl Iterator<Item = &Reason> {
        self.reasons.iter().filter(move |r| r.lane() == self.lane)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn officer() -> OfficerId {
        OfficerId::new("officer-01").unwrap()
    }

    #[test]
    fn each_reason_has_its_lane() {
        let cases = [
            (Reason::GreenChannel, Lane::Release),
            (Reason::RedChannel, Lane::Inspection),
            (Reason::PlatformTargeted, Lane::Inspection),
            (Reason::ManualTarget { target: "T1".into() }, Lane::Inspection),
            (Reason::Interception { rule: "R".into(), action: Lane::Inspection }, Lane::Inspection),
            (Reason::Interception { rule: "R".into(), action: Lane::Hold }, Lane::Hold),
            (Reason::RandomSample { channel: Channel::Green }, Lane::Inspection),
            (Reason::XrayFlag { flag: "dense".into() }, Lane::Inspection),
            (Reason::ManualTransfer { officer: officer() }, Lane::Inspection),
            (Reason::OfficerVerdict { officer: officer(), verdict: Verdict::Release }, Lane::Release),
            (Reason::OfficerVerdict { officer: officer(), verdict: Verdict::Inspect }, Lane::Inspection),
            (Reason::OfficerVerdict { officer: officer(), verdict: Verdict::Hold }, Lane::Hold),
            (Reason::NoRead, Lane::Hold),
            (Reason::SeveralWaybills { count: 2 }, Lane::Hold),
            (Reason::BadCheckDigit, Lane::Hold),
            (Reason::Overlength { length_mm: 2000 }, Lane::Hold),
            (Reason::NoManifest, Lane::Hold),
            (Reason::ManifestRejected, Lane::Hold),
            (Reason::LicenceRequired, Lane::Hold),
            (Reason::AwaitingReview, Lane::Hold),
            (Reason::AwaitingScreening, Lane::Hold),
            (Reason::XrayImageMissing { action: Lane::Inspection }, Lane::Inspection),
            (Reason::XrayImageMissing { action: Lane::Release }, Lane::Inspection),
            (Reason::ImageBarcodeMismatch, Lane::Hold),
            (Reason::Late, Lane::Hold),
            (Reason::PlcSafeMode, Lane::Hold),
            (Reason::PlcEventsLost, Lane::Hold),
            (
                Reason::XrayFlagCleared {
                    flag: "dense object".into(),
                    image_sha256: "ab".into(),
                    officer: officer(),
                    supervisor: OfficerId::new("supervisor-01").unwrap(),
                },
                Lane::Release,
            ),
            (Reason::LineStopped, Lane::Hold),
            (Reason::NoGrounds, Lane::Hold),
        ];
        for (reason, lane) in cases {
            assert_eq!(reason.lane(), lane, "{reason:?}");
            let alone = Decision::from_reasons(vec![reason.clone()]).lane;
            let with_grounds = Decision::from_reasons(vec![Reason::GreenChannel, reason.clone()]).lane;
            assert_eq!(with_grounds, lane, "{reason:?}");
            if reason != Reason::GreenChannel {
                let without_grounds = if lane == Lane::Release { Lane::Hold } else { lane };
                assert_eq!(alone, without_grounds, "{reason:?}");
            }
            assert!(!reason.label().is_empty());
        }
    }

    #[test]
    fn strongest_reason_wins() {
        let d = Decision::from_reasons(vec![Reason::GreenChannel, Reason::RandomSample { channel: Channel::Green }]);
        assert_eq!(d.lane, Lane::Inspection);
        let d = Decision::from_reasons(vec![Reason::RedChannel, Reason::LicenceRequired, Reason::GreenChannel]);
        assert_eq!(d.lane, Lane::Hold);
        assert_eq!(d.deciding().collect::<Vec<_>>(), vec![&Reason::LicenceRequired]);
        let d = Decision::from_reasons(vec![
            Reason::GreenChannel,
            Reason::OfficerVerdict { officer: officer(), verdict: Verdict::Release },
        ]);
        assert_eq!(d.lane, Lane::Release);
    }

    #[test]
    fn release_without_grounds_is_held() {
        let d = Decision::from_reasons(vec![Reason::OfficerVerdict { officer: officer(), verdict: Verdict::Release }]);
        assert_eq!(d.lane, Lane::Hold);
        assert!(d.reasons.contains(&Reason::NoGrounds));
    }

    #[test]
    fn no_reason_means_hold() {
        let d = Decision::from_reasons(vec![]);
        assert_eq!(d.lane, Lane::Hold);
        assert_eq!(d.reasons, vec![Reason::NoGrounds]);
    }

    #[test]
    fn awaiting_review_is_not_final() {
        let d = Decision::from_reasons(vec![Reason::GreenChannel, Reason::AwaitingReview]);
        assert_eq!(d.lane, Lane::Hold);
        assert!(!d.is_final_hold());
        assert!(d.awaiting_review());
        assert!(Decision::from_reasons(vec![Reason::AwaitingReview, Reason::NoRead]).is_final_hold());
    }
}
