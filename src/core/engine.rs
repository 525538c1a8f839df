//! The decision engine: a pure function from what is known about a parcel
//! and the line's policy to a `Decision`.

use super::manifest::{Manifest, ManifestStatus};
use super::policy::{ManualTarget, RuleSet};
use super::reason::{Decision, Reason};
use super::sampling::{Purpose, SiteSecret};
use super::types::{Channel, Lane, Millis, OfficerId, PerChannel, Verdict};
use super::waybill::Identity;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything the line's parameters say about decisions.
#[derive(Clone, Debug)]
pub struct Policy {
    pub secret: SiteSecret,
    /// Random inspection rate (抽检比例) per channel.
    pub sample_rate: PerChannel<f64>,
    /// Share of parcels that an officer reviews at the X-ray screen (过机比例), per channel.
    pub xray_review_ratio: PerChannel<f64>,
    pub rules: Arc<RuleSet>,
    pub targets: Vec<ManualTarget>,
    /// Longer than this, the tracking window holds more than one parcel.
    pub max_parcel_length_mm: u32,
    /// How far the line scale may differ from the declared gross weight; `None`: no check.
    pub weight_tolerance: Option<WeightTolerance>,
}

/// The sampling rates a parcel is drawn with: those in force when it was identified, frozen
/// for it, so that a rate changed later neither selects it nor lets it go (an audit recomputes
/// the draw from the recorded rates and the waybill).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub sample_rate: PerChannel<f64>,
    pub xray_review_ratio: PerChannel<f64>,
}

/// One pre-screen flag on one image, cleared by an officer with a supervisor's authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearedFlag {
    pub flag: Arc<str>,
    pub image_sha256: Arc<str>,
    pub officer: OfficerId,
    pub supervisor: OfficerId,
}

/// A measured weight differs from the declared one when it is further off than the larger of
/// `pct` percent of the declaration and `min_g`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightTolerance {
    pub pct: f64,
    pub min_g: u32,
}

impl WeightTolerance {
    pub fn mismatch(&self, declared_g: u32, measured_g: u32) -> bool {
        let allowed = (f64::from(declared_g) * self.pct / 100.0).max(f64::from(self.min_g));
        f64::from(declared_g.abs_diff(measured_g)) > allowed
    }
}

/// What is known about one parcel when it is decided.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    /// `None` until the scan arrived (or timed out, which is a no-read).
    pub identity: Option<&'a Identity>,
    pub length_mm: Option<u32>,
    /// From the line scale.
    pub weight_g: Option<u32>,
    pub manifest: Option<&'a Manifest>,
    /// The interception rules the manifest matches, from [`Policy::rule_hits`]:
    /// worked out once when the manifest arrives, not at every decision.
    pub rule_hits: &'a [Reason],
    /// The pre-screen's flags on the parcel's image (those cleared included).
    pub xray_flags: &'a [Arc<str>],
    /// Flags of that image an officer cleared with a supervisor's authority.
    pub cleared_flags: &'a [ClearedFlag],
    /// The rates frozen for the parcel when it was identified; `None`: the policy's.
    pub rates: Option<Rates>,
    pub verdict: Option<(&'a OfficerId, Verdict)>,
    pub transfer: Option<&'a OfficerId>,
    /// The cut-off has passed: waiting for a verdict is over.
    pub late: bool,
    pub safe_mode: bool,
    /// The PLC's event ring jumped: events were lost.
    pub plc_events_lost: bool,
    /// An operator stopped the line.
    pub line_stopped: bool,
    /// The X-ray station is part of the line: where a parcel goes whose image was not
    /// screened by the cut-off. `None`: no screening is waited for.
    pub xray_missing_lane: Option<Lane>,
    /// The pre-screen's result for this parcel's very image, screened against the version of the
    /// list decided on, has come (clean or flagged).
    pub screened: bool,
    /// The image's barcode names another waybill than the parcel's.
    pub image_mismatch: bool,
}

impl Policy {
    /// The rates in force now.
    pub fn rates(&self) -> Rates {
        Rates { sample_rate: self.sample_rate, xray_review_ratio: self.xray_review_ratio }
    }

    /// Decides a parcel. Every failure adds a hold reason; release needs the
    /// green-channel grounds and no other reason at all.
    pub fn decide(&self, f: &Facts<'_>, now: Millis) -> Decision {
        let mut r = Vec::with_capacity(4);
        if f.safe_mode {
            r.push(Reason::PlcSafeMode);
        }
        if f.plc_events_lost {
            r.push(Reason::PlcEventsLost);
        }
        if f.line_stopped {
            r.push(Reason::LineStopped);
        }
        if let Some(length_mm) = f.length_mm.filter(|l| *l > self.max_parcel_length_mm) {
            r.push(Reason::Overlength { length_mm });
        }
        match f.identity {
            None => {}
            Some(Identity::NoRead) => r.push(Reason::NoRead),
            Some(Identity::Ambiguous { count }) => r.push(Reason::SeveralWaybills { count: *count }),
            Some(Identity::BadCheckDigit) => r.push(Reason::BadCheckDigit),
            Some(Identity::Waybill { waybill }) => match f.manifest.filter(|m| m.waybill == *waybill) {
                None => r.push(Reason::NoManifest),
                Some(m) => {
                    let sample_rate = f.rates.map_or(self.sample_rate, |r| r.sample_rate);
                    self.assess(m, f.rule_hits, sample_rate, now, &mut r);
                    if let (Some(measured_g), Some(t)) = (f.weight_g, self.weight_tolerance) {
                        if t.mismatch(m.gross_weight_g, measured_g) {
                            r.push(Reason::WeightMismatch { declared_g: m.gross_weight_g, measured_g });
                        }
                    }
                }
            },
        }
        for flag in f.xray_flags {
            // A cleared flag cites who cleared it; it never touches any other reason.
            r.push(match f.cleared_flags.iter().find(|c| c.flag == *flag) {
                Some(c) => Reason::XrayFlagCleared {
                    flag: flag.clone(),
                    image_sha256: c.image_sha256.clone(),
                    officer: c.officer.clone(),
                    supervisor: c.supervisor.clone(),
                },
                None => Reason::XrayFlag { flag: flag.clone() },
            });
        }
        if f.image_mismatch {
            r.push(Reason::ImageBarcodeMismatch);
        }
        if let Some(officer) = f.transfer {
            r.push(Reason::ManualTransfer { officer: officer.clone() });
        }
        if let Some((officer, verdict)) = f.verdict {
            r.push(Reason::OfficerVerdict { officer: officer.clone(), verdict });
        }
        // Only a parcel otherwise bound for release waits for the officer:
        // anything stronger is opened or held anyway.
        let bound_for_release = r.iter().all(|x| x.lane() == Lane::Release) && r.contains(&Reason::GreenChannel);
        if bound_for_release && f.verdict.is_none() && self.selected_for_review(f) {
            r.push(if f.late { Reason::Late } else { Reason::AwaitingReview });
        }
        // Intelligent review first: release waits for the pre-screen as it waits for an officer.
        if let Some(action) = f.xray_missing_lane.filter(|_| bound_for_release && !f.screened) {
            r.push(if f.late { Reason::XrayImageMissing { action } } else { Reason::AwaitingScreening });
        }
        Decision::from_reasons(r)
    }

    /// The interception rules `m` matches, as reasons.
    pub fn rule_hits(&self, m: &Manifest) -> Box<[Reason]> {
        self.rules.matching(m).map(|rule| Reason::Interception { rule: rule.id.clone(), action: rule.action }).collect()
    }

    fn assess(
        &self,
        m: &Manifest,
        rule_hits: &[Reason],
        sample_rate: PerChannel<f64>,
        now: Millis,
        r: &mut Vec<Reason>,
    ) {
        match m.status {
            ManifestStatus::Rejected => r.push(Reason::ManifestRejected),
            ManifestStatus::Accepted => {}
        }
        if m.licence_required {
            r.push(Reason::LicenceRequired);
        }
        if m.channel == Channel::Red {
            r.push(Reason::RedChannel);
        }
        if m.platform_targeted {
            r.push(Reason::PlatformTargeted);
        }
        r.extend(
            self.targets
                .iter()
                .filter(|t| t.active(now) && t.matches(m))
                .map(|t| Reason::ManualTarget { target: t.id.clone() }),
        );
        r.extend(rule_hits.iter().cloned());
        if self.secret.selects(Purpose::RandomInspection, &m.waybill, sample_rate.get(m.channel)) {
            r.push(Reason::RandomSample { channel: m.channel });
        }
        if m.status == ManifestStatus::Accepted && m.channel == Channel::Green {
            r.push(Reason::GreenChannel);
        }
    }

    fn selected_for_review(&self, f: &Facts<'_>) -> bool {
        let ratio = f.rates.map_or(self.xray_review_ratio, |r| r.xray_review_ratio);
        f.manifest.is_some_and(|m| self.secret.selects(Purpose::XrayReview, &m.waybill, ratio.get(m.channel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::tests::{manifest, rule};
    use crate::core::policy::TargetCriterion;
    use crate::core::waybill::Waybill;

    pub(crate) fn policy() -> Policy {
        Policy {
            secret: SiteSecret::from_bytes([3; 16]),
            sample_rate: PerChannel { green: 0.0, red: 0.0 },
            xray_review_ratio: PerChannel { green: 0.0, red: 0.0 },
            rules: Arc::new(RuleSet::default()),
            targets: vec![],
            max_parcel_length_mm: 1200,
            weight_tolerance: Some(WeightTolerance { pct: 10.0, min_g: 100 }),
        }
    }

    fn decide<'a>(p: &Policy, m: &'a Manifest, tweak: impl FnOnce(&mut Facts<'a>)) -> Decision {
        // Leaked so that the facts can borrow it for the closure's lifetime; tests only.
        let id: &'a Identity = Box::leak(Box::new(Identity::Waybill { waybill: m.waybill }));
        let rule_hits: &'a [Reason] = Box::leak(p.rule_hits(m));
        let mut f = Facts { identity: Some(id), manifest: Some(m), rule_hits, ..Facts::default() };
        tweak(&mut f);
        p.decide(&f, Millis(0))
    }

    fn lane(p: &Policy, m: &Manifest) -> Lane {
        decide(p, m, |_| {}).lane
    }

    #[test]
    fn clean_green_parcel_is_released_with_grounds() {
        let d = decide(&policy(), &manifest(), |_| {});
        assert_eq!(d, Decision { lane: Lane::Release, reasons: vec![Reason::GreenChannel] });
    }

    #[test]
    fn manifest_reasons() {
        let p = policy();
        let mut m = manifest();
        m.channel = Channel::Red;
        assert_eq!(lane(&p, &m), Lane::Inspection);
        let mut m = manifest();
        m.platform_targeted = true;
        assert_eq!(lane(&p, &m), Lane::Inspection);
        let mut m = manifest();
        m.licence_required = true;
        assert_eq!(lane(&p, &m), Lane::Hold);
        let mut m = manifest();
        m.status = ManifestStatus::Rejected;
        let d = decide(&p, &m, |_| {});
        assert_eq!(d.lane, Lane::Hold);
        assert!(!d.reasons.contains(&Reason::GreenChannel), "a rejected list has no release grounds");
    }

    #[test]
    fn identity_failures_hold() {
        let p = policy();
        let m = manifest();
        for id in [Identity::NoRead, Identity::BadCheckDigit, Identity::Ambiguous { count: 2 }] {
            let d = p.decide(&Facts { identity: Some(&id), manifest: Some(&m), ..Facts::default() }, Millis(0));
            assert_eq!(d.lane, Lane::Hold, "{id:?}");
            assert!(d.is_final_hold());
        }
        let id = Identity::Waybill { waybill: m.waybill };
        let d = p.decide(&Facts { identity: Some(&id), ..Facts::default() }, Millis(0));
        assert_eq!(d.reasons, vec![Reason::NoManifest]);
        let other = Identity::Waybill { waybill: Waybill::parse("AA473124829GB").unwrap() };
        let d = p.decide(&Facts { identity: Some(&other), manifest: Some(&m), ..Facts::default() }, Millis(0));
        assert_eq!(d.reasons, vec![Reason::NoManifest], "a manifest for another waybill is no manifest");
        assert_eq!(p.decide(&Facts::default(), Millis(0)).lane, Lane::Hold);
    }

    #[test]
    fn a_weight_off_the_declaration_beyond_the_tolerance_is_inspected() {
        let p = policy();
        let m = manifest();
        let declared_g = m.gross_weight_g;
        // Within the larger of 10 % and 100 g: released.
        let d = decide(&p, &m, |f| f.weight_g = Some(declared_g + 100));
        assert_eq!(d.lane, Lane::Release, "{d:?}");
        let d = decide(&p, &m, |f| f.weight_g = Some(declared_g + declared_g / 10 + 101));
        assert_eq!(d.lane, Lane::Inspection);
        let measured_g = declared_g + declared_g / 10 + 101;
        assert!(d.reasons.contains(&Reason::WeightMismatch { declared_g, measured_g }));
        // No scale reading, or no tolerance configured: no check.
        assert_eq!(decide(&p, &m, |_| {}).lane, Lane::Release);
        let unchecked = Policy { weight_tolerance: None, ..p };
        assert_eq!(decide(&unchecked, &m, |f| f.weight_g = Some(measured_g)).lane, Lane::Release);
    }

    #[test]
    fn overlength_and_safe_mode_hold() {
        let p = policy();
        let m = manifest();
        assert!(decide(&p, &m, |f| f.length_mm = Some(1500)).reasons.contains(&Reason::Overlength { length_mm: 1500 }));
        assert_eq!(lane(&p, &m), Lane::Release);
        assert_eq!(decide(&p, &m, |f| f.length_mm = Some(1200)).lane, Lane::Release);
        let d = decide(&p, &m, |f| f.safe_mode = true);
        assert_eq!(d.lane, Lane::Hold);
        assert!(d.reasons.contains(&Reason::PlcSafeMode));
    }

    #[test]
    fn targets_rules_and_sampling() {
        let m = manifest();
        let mut p = policy();
        p.targets.push(ManualTarget {
            id: "MT7".into(),
            criterion: TargetCriterion::Consignee("Jane Doe".into()),
            author: OfficerId::new("risk-01").unwrap(),
            reason: "tip".into(),
            created_at: Millis(0),
            expires_at: None,
        });
        assert!(decide(&p, &m, |_| {}).reasons.contains(&Reason::ManualTarget { target: "MT7".into() }));
        assert_eq!(lane(&p, &m), Lane::Inspection);

        let mut p = policy();
        let rule = rule(|r| {
            r.action = Lane::Hold;
            r.hs_prefixes = vec!["6204".into()];
        });
        p.rules = Arc::new(RuleSet::new(vec![rule]).unwrap());
        assert_eq!(lane(&p, &m), Lane::Hold);

        let mut p = policy();
        p.sample_rate.green = 1.0;
        assert!(decide(&p, &m, |_| {}).reasons.contains(&Reason::RandomSample { channel: Channel::Green }));
        p.sample_rate = PerChannel { green: 0.0, red: 1.0 };
        assert_eq!(lane(&p, &m), Lane::Release, "rates are per channel");
    }

    #[test]
    fn review_waits_for_verdict_then_late() {
        let mut p = policy();
        p.xray_review_ratio.green = 1.0;
        let m = manifest();
        let officer = OfficerId::new("officer-01").unwrap();
        let d = decide(&p, &m, |_| {});
        assert!(d.awaiting_review() && d.lane == Lane::Hold && !d.is_final_hold());
        let d = decide(&p, &m, |f| f.late = true);
        assert_eq!(d.reasons.last(), Some(&Reason::Late));
        assert!(d.is_final_hold());
        for (verdict, lane) in
            [(Verdict::Release, Lane::Release), (Verdict::Inspect, Lane::Inspection), (Verdict::Hold, Lane::Hold)]
        {
            assert_eq!(decide(&p, &m, |f| f.verdict = Some((&officer, verdict))).lane, lane);
        }
        // A parcel bound for inspection anyway does not wait for a review.
        let mut red = manifest();
        red.channel = Channel::Red;
        p.xray_review_ratio.red = 1.0;
        assert_eq!(decide(&p, &red, |f| f.late = true).lane, Lane::Inspection);
    }

    #[test]
    fn officer_release_cannot_lower_other_reasons() {
        let p = policy();
        let mut m = manifest();
        m.licence_required = true;
        let officer = OfficerId::new("officer-01").unwrap();
        assert_eq!(decide(&p, &m, |f| f.verdict = Some((&officer, Verdict::Release))).lane, Lane::Hold);
        let m = manifest();
        assert_eq!(decide(&p, &m, |f| f.xray_flags = &[]).lane, Lane::Release);
        let flags: [Arc<str>; 1] = ["dense object".into()];
        assert_eq!(
            decide(&p, &m, |f| {
                f.xray_flags = &flags;
                f.verdict = Some((&officer, Verdict::Release));
            })
            .lane,
            Lane::Inspection
        );
        assert_eq!(decide(&p, &m, |f| f.transfer = Some(&officer)).lane, Lane::Inspection);
    }
}
