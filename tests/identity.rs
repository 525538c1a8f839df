//! The safety of the edges (issue 13), in the pure core: every input about a parcel names the
//! parcel whole; a review is of one image against one version of the list, and a verdict must
//! name both; checks and screening follow identification and amendments whatever the order of
//! arrival; draws are frozen at identification; the PLC's boots, lost events and clock.

mod common;
use common::*;
use sortline::core::*;
use std::sync::Arc;

fn reviewed() -> Policy {
    let mut p = policy();
    p.xray_review_ratio.green = 1.0;
    p
}

fn station(policy: Policy) -> Bench {
    let xray = Some(XraySettings { missing_image_lane: Lane::Hold, image_match_window_ms: 2_000 });
    let mut b = Bench { line: Line::new(LineSettings { xray, ..settings() }, policy), out: Vec::new(), now: 0 };
    b.manifest(manifest(1)).manifest(manifest(2));
    b
}

fn sha(seq: u32) -> Arc<str> {
    format!("{seq:064x}").into()
}

fn image(seq: u32, barcode: Option<&str>) -> Input {
    Input::XrayImage { image_seq: seq, sha256: sha(seq), barcode: barcode.map(str::to_string) }
}

fn entered(t: u32, seq: u32) -> Input {
    Input::XrayEntered { tracking: TrackingId(t), image_seq: seq }
}

fn refusals(b: &Bench) -> Vec<String> {
    b.records("refused")
        .iter()
        .filter_map(|r| match r {
            Record::Refused { input, why, .. } => Some(format!("{input}: {why}")),
            _ => None,
        })
        .collect()
}

fn screenings(b: &Bench, t: u32) -> Vec<Option<u64>> {
    b.out
        .iter()
        .filter_map(|o| match o {
            Output::ScreenImage { parcel, manifest, .. } if parcel.tracking.0 == t => {
                Some(manifest.as_ref().map(|m| m.version))
            }
            _ => None,
        })
        .collect()
}

fn amended(n: u32, version: u64) -> Manifest {
    Manifest { version, ..manifest(n) }
}

#[test]
fn a_verdict_for_a_tracking_id_reused_by_a_new_parcel_is_refused_and_recorded() {
    let mut b = Bench::new(reviewed());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    let first = b.review(1);
    // A cold reset gives tracking id 1 to a new parcel: the first is retired, the second reviewed.
    b.gate(1_000, 1).scan(1_010, 1, &[&waybill(2).to_string()]);
    assert!(matches!(b.records("parcel_lost")[..], [Record::Lost { why: LostWhy::TrackingReused, .. }]));
    let second = b.review(1);
    assert_ne!((first.parcel, first.review), (second.parcel, second.review));
    assert_eq!(first.parcel.tracking, second.parcel.tracking);
    assert!(second.parcel.serial > first.parcel.serial);

    // The officer answers what they saw: the first parcel. It lands on nobody.
    let stale = Input::Verdict {
        parcel: first.parcel,
        review: first.review,
        image_sha256: None,
        officer: officer("officer-01"),
        verdict: Verdict::Release,
    };
    b.at(2_000, stale);
    // Nor does the first review's id on the second parcel.
    let crossed = Input::Verdict {
        parcel: second.parcel,
        review: first.review,
        image_sha256: None,
        officer: officer("officer-01"),
        verdict: Verdict::Release,
    };
    b.at(2_100, crossed);
    let why = refusals(&b);
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(why[0].contains("another parcel"), "{why:?}");
    assert!(why[1].contains("does not stand"), "{why:?}");
    assert_eq!((b.line.stats().verdicts_refused, b.alarms("verdict_refused")), (2, 2));
    b.tick(1_000 + CUTOFF_MS);
    let (lane, reasons) = b.decision(1).unwrap();
    assert_eq!(lane, Lane::Hold, "no verdict about this very parcel: held");
    assert!(reasons.contains(&Reason::Late), "{reasons:?}");
}

#[test]
fn with_a_station_a_review_is_asked_once_the_image_is_screened_and_names_it() {
    let mut b = station(reviewed());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    assert!(b.records("review_requested").is_empty(), "no image yet: nothing to review");
    b.at(3_000, entered(1, 7)).at(3_100, image(7, None));
    assert!(b.records("review_requested").is_empty(), "not screened yet");
    b.screened(3_200, 1, &[]);
    let r = b.review(1);
    assert_eq!((r.image_sha256.clone(), r.manifest.version, r.flags.len()), (Some(sha(7)), 1, 0));
    assert!(matches!(
        &b.records("review_requested")[..],
        [Record::ReviewRequested { image_sha256: Some(h), manifest_version: 1, .. }] if *h == sha(7)
    ));

    // A verdict on another image (a screen showing the wrong picture) is refused.
    let wrong = Input::Verdict {
        parcel: r.parcel,
        review: r.review,
        image_sha256: Some(sha(8)),
        officer: officer("officer-01"),
        verdict: Verdict::Release,
    };
    b.at(4_000, wrong);
    assert!(refusals(&b)[0].contains("image"), "{:?}", refusals(&b));
    b.verdict(4_100, 1, "officer-01", Verdict::Release);
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert!(matches!(
        &b.records("decision")[..],
        [Record::Decision { image_sha256: Some(h), manifest_version: Some(1), .. }] if *h == sha(7)
    ));
}

#[test]
fn an_amended_list_is_screened_again_and_a_release_given_on_the_old_one_no_longer_counts() {
    let mut b = station(reviewed());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, entered(1, 7)).at(3_100, image(7, None));
    b.screened(3_200, 1, &[]);
    let first = b.review(1);
    b.verdict(4_000, 1, "officer-01", Verdict::Release);
    // The platform amends the list: what the officer compared the image with is gone.
    b.manifest(amended(1, 2));
    assert!(
        matches!(&b.records("review_withdrawn")[..], [Record::ReviewWithdrawn { review, .. }] if *review == first.review)
    );
    assert_eq!(screenings(&b, 1), vec![Some(1), Some(2)], "screened again against version 2");
    // The first screening's answer, late, is stale: refused.
    b.at(4_500, Input::XrayScreened { parcel: first.parcel, sha256: sha(7), manifest_version: Some(1), flags: vec![] });
    assert!(refusals(&b).last().unwrap().contains("list version 1"), "{:?}", refusals(&b));
    b.screened(5_000, 1, &[]);
    let second = b.review(1);
    assert_ne!(second.review, first.review);
    assert_eq!(second.manifest.version, 2);
    // The first review's verdict again: refused. The second's: honoured.
    let again = Input::Verdict {
        parcel: first.parcel,
        review: first.review,
        image_sha256: first.image_sha256.clone(),
        officer: officer("officer-01"),
        verdict: Verdict::Release,
    };
    b.at(5_100, again);
    assert!(refusals(&b).last().unwrap().contains("does not stand"));
    b.verdict(5_200, 1, "officer-02", Verdict::Release);
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert!(matches!(&b.records("decision")[..], [Record::Decision { manifest_version: Some(2), .. }]));
}

#[test]
fn a_doubt_an_officer_raised_stays_when_the_list_is_amended() {
    let mut b = station(reviewed());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, entered(1, 7)).at(3_100, image(7, None));
    b.screened(3_200, 1, &[]);
    b.verdict(4_000, 1, "officer-01", Verdict::Inspect);
    b.manifest(amended(1, 2));
    b.screened(5_000, 1, &[]);
    assert_eq!(b.records("review_requested").len(), 1, "an inspect verdict needs no second look");
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection]);
}

#[test]
fn an_amendment_without_a_new_screening_never_releases() {
    let mut b = station(policy());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, entered(1, 7)).at(3_100, image(7, None));
    b.screened(3_200, 1, &[]);
    b.manifest(amended(1, 2));
    b.tick(CUTOFF_MS);
    let (lane, reasons) = b.decision(1).unwrap();
    assert_eq!(lane, Lane::Hold, "screened against version 1 only: {reasons:?}");
    assert!(reasons.contains(&Reason::XrayImageMissing { action: Lane::Hold }));
}

#[test]
fn a_scan_after_the_image_is_checked_against_it_and_screened_with_its_list() {
    let mut b = station(policy());
    // The image (with a barcode of waybill 2) comes before the scan.
    b.gate(0, 1).at(100, entered(1, 7)).at(150, image(7, Some(&waybill(2).to_string())));
    assert_eq!(screenings(&b, 1), vec![None], "nobody known yet: screened against nothing");
    b.scan(400, 1, &[&waybill(1).to_string()]);
    assert_eq!(screenings(&b, 1), vec![None, Some(1)], "identified: screened against its list");
    let (lane, reasons) = b.decision(1).expect("a barcode naming another waybill holds at once");
    assert_eq!(lane, Lane::Hold);
    assert!(reasons.contains(&Reason::ImageBarcodeMismatch), "{reasons:?}");
}

#[test]
fn a_screening_of_another_image_or_parcel_is_refused() {
    let mut b = station(policy());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, entered(1, 7)).at(3_100, image(7, None));
    let parcel = b.id(1);
    let other = ParcelId { serial: parcel.serial + 100, ..parcel };
    b.at(3_200, Input::XrayScreened { parcel: other, sha256: sha(7), manifest_version: Some(1), flags: vec![] });
    b.at(3_300, Input::XrayScreened { parcel, sha256: sha(9), manifest_version: Some(1), flags: vec![] });
    assert_eq!(refusals(&b).len(), 2, "{:?}", refusals(&b));
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Hold], "never screened for real: held");
}

#[test]
fn draws_are_frozen_with_the_rates_of_the_moment_the_parcel_is_identified() {
    let set = |review: f64| Input::Parameters {
        sample_rate: None,
        xray_review_ratio: Some(PerChannel { green: review, red: review }),
        review_window_ms: None,
        officer: officer("op-1"),
    };
    // Selected for review, then the ratio is lowered: it still waits for its verdict.
    let mut b = Bench::new(reviewed());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    assert_eq!(b.records("review_requested").len(), 1);
    b.at(100, set(0.0)).tick(CUTOFF_MS);
    let (lane, reasons) = b.decision(1).unwrap();
    assert_eq!(lane, Lane::Hold, "a request and a release without a verdict: never");
    assert!(reasons.contains(&Reason::Late));
    let frozen = Rates {
        sample_rate: PerChannel { green: 0.0, red: 0.0 },
        xray_review_ratio: PerChannel { green: 1.0, red: 0.0 },
    };
    assert!(matches!(&b.records("identified")[..], [Record::Identified { rates: Some(r), .. }] if *r == frozen));

    // Not selected, then the ratio is raised: the draw stands, released without a review.
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(100, set(1.0)).tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert!(b.records("review_requested").is_empty());
}

#[test]
fn the_gate_time_is_the_plcs_and_the_receive_time_only_a_bound() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    // Polled 700 ms after the parcel passed the gate: its cut-off is the PLC's time plus the travel.
    let gate = |t: u32, at: u64| Input::Gate {
        tracking: TrackingId(t),
        trigger: TriggerCount(t),
        length_mm: Some(400),
        at: Some(Millis(at)),
    };
    b.at(1_700, gate(1, 1_000)).scan(1_710, 1, &[&waybill(1).to_string()]);
    b.tick(1_000 + CUTOFF_MS - 1);
    assert!(b.destinations(1).is_empty());
    b.tick(1_000 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    // A stamp after the host took the event in cannot be: the receive time stands.
    b.at(30_000, gate(2, 99_000)).scan(30_010, 2, &[&waybill(2).to_string()]);
    b.tick(30_000 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Release]);
}

#[test]
fn a_plc_restart_orphans_its_parcels_and_lost_events_hold_everything_until_the_next_boot() {
    let sync = |boot: u16, cause: SyncCause| Input::PlcSync { boot, cause };
    let mut b = Bench::new(policy());
    for n in 1..=5 {
        b.manifest(manifest(n));
    }
    b.at(0, sync(4, SyncCause::FirstContact));
    b.gate(10, 1).scan(20, 1, &[&waybill(1).to_string()]);
    assert_eq!(b.id(1).boot, 4);
    b.at(100, sync(5, SyncCause::Restart));
    assert!(matches!(b.records("parcel_lost")[..], [Record::Lost { why: LostWhy::PlcRestart, .. }]));
    assert_eq!(b.line.in_flight(), 0);
    b.gate(200, 1).scan(210, 1, &[&waybill(2).to_string()]);
    assert_eq!(b.id(1).boot, 5, "the new boot's parcel, same tracking id");

    // The event ring jumped: nothing the PLC did is known; everything is held from now on.
    b.at(300, sync(5, SyncCause::EventsLost));
    assert_eq!(b.alarms("plc_events_lost"), 1);
    assert!(b.line.mode().plc_events_lost);
    assert!(b.records("parcel_lost").iter().any(|r| matches!(r, Record::Lost { why: LostWhy::EventsLost, .. })));
    b.gate(400, 2).scan(410, 2, &[&waybill(3).to_string()]);
    let (lane, reasons) = b.decision(2).expect("held at once");
    assert!(lane == Lane::Hold && reasons.contains(&Reason::PlcEventsLost), "{reasons:?}");
    // Until the PLC restarts.
    b.at(500, sync(6, SyncCause::Restart));
    assert!(!b.line.mode().plc_events_lost);
    b.gate(600, 3).scan(610, 3, &[&waybill(4).to_string()]).tick(600 + CUTOFF_MS);
    assert_eq!(b.destinations(3), vec![Lane::Release]);
}

#[test]
fn a_cleared_flag_is_a_reason_of_its_own_and_lowers_nothing_else() {
    let mut b = station(policy());
    let mut red = manifest(2);
    red.channel = Channel::Red;
    b.manifest(Manifest { version: 2, ..red });
    let clear = |parcel: ParcelId, image: Arc<str>, flag: &str, officer_id: &str| Input::ClearFlag {
        parcel,
        image_sha256: image,
        flag: flag.into(),
        officer: officer(officer_id),
        supervisor: officer("supervisor-01"),
        reason: "a belt buckle, seen on the image".into(),
    };
    b.gate(1, 1).gate(2, 2).scan(11, 1, &[&waybill(1).to_string()]).scan(12, 2, &[&waybill(2).to_string()]);
    for (t, seq) in [(1, 7), (2, 8)] {
        let ms = 3_000 + 100 * u64::from(t);
        b.at(ms, entered(t, seq)).at(ms + 10, image(seq, None));
        b.screened(ms + 20, t, &["undeclared metal"]);
    }
    let p1 = b.id(1);
    b.at(4_000, clear(p1, sha(7), "undeclared metal", "supervisor-01"));
    b.at(4_010, clear(p1, sha(8), "undeclared metal", "officer-01"));
    b.at(4_020, clear(p1, sha(7), "possible battery", "officer-01"));
    let why = refusals(&b);
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("own") && why[1].contains("image") && why[2].contains("no flag"), "{why:?}");
    b.at(4_030, clear(p1, sha(7), "undeclared metal", "officer-01"));
    b.at(4_040, clear(b.id(2), sha(8), "undeclared metal", "officer-01"));
    b.tick(2 + CUTOFF_MS);
    let (lane, reasons) = b.decision(1).unwrap();
    assert_eq!(lane, Lane::Release, "{reasons:?}");
    assert!(reasons
        .iter()
        .any(|r| matches!(r, Reason::XrayFlagCleared { image_sha256, .. } if *image_sha256 == sha(7))));
    let (lane, reasons) = b.decision(2).unwrap();
    assert_eq!(lane, Lane::Inspection, "the red channel stays: {reasons:?}");
}

#[test]
fn two_parcels_claiming_one_image_number_get_neither() {
    let mut b = station(policy());
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.gate(100, 2).scan(110, 2, &[&waybill(2).to_string()]);
    b.at(3_000, entered(1, 7)).at(3_050, image(7, None));
    b.at(3_100, entered(2, 7));
    assert_eq!(b.alarms("xray_image_seq_conflict"), 1);
    b.tick(100 + CUTOFF_MS);
    for t in [1, 2] {
        let (lane, reasons) = b.decision(t).unwrap();
        assert_eq!(lane, Lane::Hold, "T{t}: {reasons:?}");
        assert!(reasons.contains(&Reason::XrayImageMissing { action: Lane::Hold }), "T{t}: {reasons:?}");
    }
}

#[test]
fn what_operators_set_is_restored_into_a_new_line_and_its_snapshot() {
    let stopped = OperatorState {
        stopped_by: Some(officer("op-1")),
        sample_rate: Some(PerChannel { green: 0.5, red: 1.0 }),
        ..OperatorState::default()
    };
    let mut b = Bench::new(policy());
    b.line.restore(stopped.clone());
    b.line.set_serial_base(5_000);
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    let (lane, reasons) = b.decision(1).expect("held at once: the line is stopped");
    assert!(lane == Lane::Hold && reasons.contains(&Reason::LineStopped), "{reasons:?}");
    assert!(b.id(1).serial > 5_000);
    let snapshot = b.line.snapshot();
    assert_eq!((snapshot.operator, snapshot.serial_base), (stopped, 5_000));
    assert_eq!(snapshot.sample_rate, PerChannel { green: 0.5, red: 1.0 });
}
