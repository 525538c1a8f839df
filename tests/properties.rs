//! Invariants of the decision engine and the line, checked with proptest.

mod common;
use common::*;
use proptest::prelude::*;
use sortline::core::*;
use std::collections::HashMap;
use std::sync::Arc;

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        4 => (0u32..50).prop_map(|n| Identity::Waybill { waybill: waybill(n) }),
        1 => Just(Identity::NoRead),
        1 => Just(Identity::BadCheckDigit),
        1 => (2u32..4).prop_map(|count| Identity::Ambiguous { count }),
    ]
}

prop_compose! {
    fn any_manifest()(n in 0u32..50, red: bool, rejected: bool, licence: bool, targeted: bool, version in 1u64..4) -> Manifest {
        let mut m = manifest(n);
        m.channel = if red { Channel::Red } else { Channel::Green };
        m.status = if rejected { ManifestStatus::Rejected } else { ManifestStatus::Accepted };
        m.licence_required = licence;
        m.platform_targeted = targeted;
        m.version = version;
        m
    }
}

fn verdict() -> impl Strategy<Value = Option<Verdict>> {
    prop_oneof![Just(None), Just(Some(Verdict::Release)), Just(Some(Verdict::Inspect)), Just(Some(Verdict::Hold))]
}

#[derive(Debug, Clone)]
struct Case {
    identity: Option<Identity>,
    manifest: Option<Manifest>,
    length_mm: Option<u32>,
    weight_g: Option<u32>,
    flags: Vec<Arc<str>>,
    verdict: Option<Verdict>,
    transfer: bool,
    late: bool,
    safe_mode: bool,
    line_stopped: bool,
    /// The X-ray station's missing-image lane (release too: a misconfiguration must not release).
    xray_missing_lane: Option<Lane>,
    screened: bool,
    image_mismatch: bool,
    sample: f64,
    review: f64,
}

prop_compose! {
    fn case()(
        identity in proptest::option::weighted(0.9, identity()),
        manifest in proptest::option::weighted(0.8, any_manifest()),
        length_mm in proptest::option::of(100u32..2000),
        weight_g in proptest::option::of(0u32..5000),
        flag: bool,
        verdict in verdict(),
        transfer in proptest::bool::weighted(0.1),
        late: bool,
        safe_mode in proptest::bool::weighted(0.1),
        line_stopped in proptest::bool::weighted(0.1),
        xray_missing_lane in proptest::option::of(prop_oneof![Just(Lane::Release), Just(Lane::Inspection), Just(Lane::Hold)]),
        screened: bool,
        image_mismatch in proptest::bool::weighted(0.1),
        sample in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        review in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
    ) -> Case {
        let flags = if flag { vec![Arc::from("dense object")] } else { vec![] };
        Case { identity, manifest, length_mm, weight_g, flags, verdict, transfer, late, safe_mode, line_stopped, xray_missing_lane, screened, image_mismatch, sample, review }
    }
}

fn decide(case: &Case, p: &Policy) -> Decision {
    let officer = officer("officer-01");
    let facts = Facts {
        identity: case.identity.as_ref(),
        length_mm: case.length_mm,
        weight_g: case.weight_g,
        manifest: case.manifest.as_ref(),
        rule_hits: &[],
        xray_flags: &case.flags,
        verdict: case.verdict.map(|v| (&officer, v)),
        transfer: case.transfer.then_some(&officer),
        late: case.late,
        safe_mode: case.safe_mode,
        line_stopped: case.line_stopped,
        xray_missing_lane: case.xray_missing_lane,
        screened: case.screened,
        image_mismatch: case.image_mismatch,
    };
    p.decide(&facts, Millis(0))
}

fn policy_for(case: &Case) -> Policy {
    let mut p = policy();
    p.sample_rate = PerChannel { green: case.sample, red: case.sample };
    p.xray_review_ratio = PerChannel { green: case.review, red: case.review };
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Release is earned: any failure or doubt in the inputs means not release.
    #[test]
    fn no_failure_or_doubt_ends_in_release(case in case()) {
        let p = policy_for(&case);
        let d = decide(&case, &p);
        let identified = match (&case.identity, &case.manifest) {
            (Some(Identity::Waybill { waybill }), Some(m)) => *waybill == m.waybill,
            _ => false,
        };
        let clean_manifest = case.manifest.as_ref().is_some_and(|m| {
            m.status == ManifestStatus::Accepted && m.channel == Channel::Green && !m.licence_required && !m.platform_targeted
        });
        let doubt = !identified
            || !clean_manifest
            || case.length_mm.is_some_and(|l| l > p.max_parcel_length_mm)
            // The line scale off the declaration by more than 10 % or 100 g (the test policy's).
            || case.manifest.as_ref().zip(case.weight_g).is_some_and(|(m, w)| {
                (f64::from(m.gross_weight_g) - f64::from(w)).abs() > (f64::from(m.gross_weight_g) * 0.1).max(100.0)
            })
            || !case.flags.is_empty()
            || matches!(case.verdict, Some(Verdict::Inspect | Verdict::Hold))
            || case.transfer
            || case.safe_mode
            || case.line_stopped
            // An X-ray station whose pre-screen for this parcel never came, or whose image names
            // another waybill.
            || (case.xray_missing_lane.is_some() && !case.screened)
            || case.image_mismatch
            || d.reasons.iter().any(|r| matches!(r, Reason::RandomSample { .. } | Reason::AwaitingReview | Reason::Late));
        if doubt {
            prop_assert_ne!(d.lane, Lane::Release, "{:?} -> {:?}", case, d);
        }
        if d.lane == Lane::Release {
            prop_assert!(d.reasons.contains(&Reason::GreenChannel));
            prop_assert!(d.reasons.iter().all(|r| r.lane() == Lane::Release));
        }
        // The lane is always the strongest reason's.
        prop_assert_eq!(Some(d.lane), d.reasons.iter().map(Reason::lane).max());
    }

    /// The decision is a pure function of its inputs.
    #[test]
    fn decisions_are_pure(case in case()) {
        let p = policy_for(&case);
        prop_assert_eq!(decide(&case, &p), decide(&case, &p.clone()));
    }
}

/// Sampling at rate r over 100,000 random waybills selects r ± 1 %.
#[test]
fn sampling_rate_is_honoured() {
    let secret = SiteSecret::from_bytes(*b"sortline-test-k1");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(6));
    runner
        .run(&(0.0f64..=1.0, any::<u32>()), |(rate, offset)| {
            let selected = (0..100_000u32)
                .filter(|i| secret.selects(Purpose::RandomInspection, &waybill(offset.wrapping_add(*i)), rate))
                .count();
            let share = selected as f64 / 100_000.0;
            prop_assert!((share - rate).abs() <= 0.01, "rate {} selected {}", rate, share);
            Ok(())
        })
        .unwrap();
}

#[derive(Debug, Clone)]
enum Step {
    Gate(u32),
    Scan(u32, Option<u32>),
    Untriggered(Option<u32>),
    Verdict(u32, Verdict),
    Transfer(u32),
    Divert(u32, u16),
    Lost(u32),
    PlcHold(u32, PlcHoldCause),
    Safe(bool),
    /// An operator stops (false) or starts (true) the line.
    Control(bool),
    /// An operator sets the rates: random inspection, X-ray review (both channels), and maybe
    /// the review window (0 is refused).
    Rates(f64, f64, Option<u64>),
    Belt(bool),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..12).prop_map(Step::Gate),
        3 => (1u32..12, proptest::option::weighted(0.8, 0u32..8)).prop_map(|(t, w)| Step::Scan(t, w)),
        1 => proptest::option::weighted(0.8, 0u32..8).prop_map(Step::Untriggered),
        1 => (1u32..12, prop_oneof![Just(Verdict::Release), Just(Verdict::Inspect), Just(Verdict::Hold)]).prop_map(|(t, v)| Step::Verdict(t, v)),
        1 => (1u32..12).prop_map(Step::Transfer),
        1 => (1u32..14, 1u16..5).prop_map(|(t, l)| Step::Divert(t, l)),
        1 => (1u32..14).prop_map(Step::Lost),
        1 => (1u32..14, prop_oneof![
            Just(PlcHoldCause::Late),
            Just(PlcHoldCause::Restart),
            (0u32..6).prop_map(|code| PlcHoldCause::Rejected { code }),
            (0u32..6).prop_map(|code| PlcHoldCause::Forced { code }),
        ]).prop_map(|(t, c)| Step::PlcHold(t, c)),
        1 => any::<bool>().prop_map(Step::Safe),
        1 => any::<bool>().prop_map(Step::Belt),
        1 => any::<bool>().prop_map(Step::Control),
        1 => (
            prop_oneof![Just(0.0), Just(1.0), -0.5f64..1.5],
            prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
            proptest::option::of(0u64..5_000),
        )
            .prop_map(|(s, r, w)| Step::Rates(s, r, w)),
        3 => (0u64..15_000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever order and timing inputs come in: one destination per parcel,
    /// and release only for a parcel that was identified, has a clean green
    /// manifest, and was not in safe mode.
    #[test]
    fn line_sends_release_only_when_earned(steps in proptest::collection::vec(step(), 1..120)) {
        let mut p = policy();
        p.xray_review_ratio.green = 0.5;
        let mut b = Bench::new(p);
        for n in 0..6 {
            let mut m = manifest(n);
            if n == 5 { m.status = ManifestStatus::Rejected; }
            if n == 4 { m.channel = Channel::Red; }
            b.manifest(m);
        }
        let mut now = 0;
        // Every waybill ever read at each trigger: a release must be one of them.
        let mut scanned: HashMap<u32, Vec<u32>> = HashMap::new();
        // Waybills read without a trigger count (matched by time).
        let mut untriggered: Vec<u32> = Vec::new();
        let mut safe = false;
        let mut stopped = false;
        let mut sent: HashMap<TrackingId, usize> = HashMap::new();
        let mut seen = 0;
        for s in steps {
            match s {
                Step::Gate(t) => { b.gate(now, t); }
                Step::Scan(t, w) => {
                    let code = w.map(|n| waybill(n).to_string());
                    let codes: Vec<&str> = code.iter().map(String::as_str).collect();
                    b.scan(now, t, &codes);
                    scanned.entry(t).or_default().extend(w);
                }
                Step::Untriggered(w) => {
                    let code = w.map(|n| waybill(n).to_string());
                    let codes: Vec<&str> = code.iter().map(String::as_str).collect();
                    b.untriggered(now, &codes);
                    untriggered.extend(w);
                }
                Step::Verdict(t, v) => { b.at(now, Input::Verdict { tracking: TrackingId(t), officer: officer("o-1"), verdict: v }); }
                Step::Transfer(t) => { b.at(now, Input::ManualTransfer { tracking: TrackingId(t), officer: officer("o-2") }); }
                Step::Divert(t, l) => { b.at(now, Input::Divert { tracking: TrackingId(t), lane_id: l }); }
                Step::Lost(t) => { b.at(now, Input::Lost { tracking: TrackingId(t) }); }
                Step::PlcHold(t, cause) => { b.at(now, Input::PlcHold { tracking: TrackingId(t), cause }); }
                Step::Safe(on) => { b.at(now, Input::PlcStatus { safe_mode: on }); safe = on; }
                Step::Control(running) => {
                    b.at(now, Input::LineControl { running, officer: officer("op-1") });
                    stopped = !running;
                }
                Step::Rates(sample, review, review_window_ms) => {
                    b.at(now, Input::Parameters {
                        sample_rate: Some(PerChannel { green: sample, red: sample }),
                        xray_review_ratio: Some(PerChannel { green: review, red: review }),
                        review_window_ms,
                        officer: officer("op-1"),
                    });
                }
                Step::Belt(running) => { b.at(now, Input::Belt { running }); }
                Step::Wait(ms) => { now += ms; b.tick(now); }
            }
            for o in &b.out[seen..] {
                if let Output::SetDestination { tracking, lane, lane_id } = o {
                    prop_assert_eq!(*lane_id, LANES.id(*lane));
                    *sent.entry(*tracking).or_default() += 1;
                    if *lane == Lane::Release {
                        prop_assert!(!safe, "release sent in safe mode");
                        prop_assert!(!stopped, "release sent while an operator had stopped the line");
                        let decided = b.out.iter().rev().find_map(|o| match o {
                            Output::Record(Record::Decision { tracking: t, waybill, .. }) if t == tracking => Some(*waybill),
                            _ => None,
                        });
                        let n = (0..4).find(|n| decided == Some(Some(waybill(*n))));
                        prop_assert!(n.is_some(), "release for {:?} of {:?}", tracking, decided);
                        let read = scanned.get(&tracking.0).cloned().unwrap_or_default();
                        let n = n.unwrap();
                        prop_assert!(read.contains(&n) || untriggered.contains(&n), "released {:?} but read {:?}", n, read);
                    }
                }
            }
            seen = b.out.len();
            // A tracking id can be reused after a parcel leaves; count per life.
            for o in &b.out {
                if let Output::Record(Record::Completed { tracking, .. } | Record::Lost { tracking, .. }) = o {
                    sent.remove(tracking);
                }
            }
            prop_assert!(sent.values().all(|n| *n <= 1), "a destination is sent once per parcel: {:?}", sent);
        }
    }
}
