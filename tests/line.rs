//! The `Line` state machine in simulated time: no sockets, no clock.

mod common;
use common::*;
use sortline::core::*;

#[test]
fn clean_green_parcel_is_released_at_the_cutoff_and_confirmed() {
    let mut b = Bench::new(policy());
    let w = waybill(1).to_string();
    b.manifest(manifest(1)).gate(100, 1).scan(130, 1, &[&w]);
    assert!(b.destinations(1).is_empty(), "release stays provisional until the cut-off");
    assert_eq!(b.line.next_timeout(), Some(Millis(100 + SCAN_TIMEOUT_MS)));
    b.tick(100 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert_eq!(b.decision(1).unwrap().1, vec![Reason::GreenChannel]);
    b.at(100 + CUTOFF_MS + 5, Input::DestinationWritten { tracking: TrackingId(1), lane_id: LANES.release });
    b.at(100 + END_MS - 2000, Input::Divert { tracking: TrackingId(1), lane_id: LANES.release });
    assert!(b.records("missort").is_empty());
    assert_eq!(b.records("completed").len(), 1);
    assert_eq!(b.line.in_flight(), 0);
    assert_eq!(b.line.stats().confirmed, 1);
}

#[test]
fn failures_are_held_at_once() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(2));
    b.gate(0, 1).scan(10, 1, &[]);
    b.gate(100, 2).scan(110, 2, &["EA123456784CN"]);
    b.gate(200, 3).scan(210, 3, &[&waybill(2).to_string(), &waybill(3).to_string()]);
    b.gate(300, 4).scan(310, 4, &[&waybill(99).to_string()]); // no manifest
    b.gate(400, 5); // scanner silent
    b.tick(400 + SCAN_TIMEOUT_MS);
    let expect = [
        (1, Reason::NoRead),
        (2, Reason::BadCheckDigit),
        (3, Reason::SeveralWaybills { count: 2 }),
        (4, Reason::NoManifest),
        (5, Reason::NoRead),
    ];
    for (t, reason) in expect {
        assert_eq!(b.destinations(t), vec![Lane::Hold], "parcel {t}");
        assert!(b.decision(t).unwrap().1.contains(&reason), "parcel {t}: {:?}", b.decision(t));
    }
}

#[test]
fn scan_before_gate_is_matched_by_trigger_and_stray_scans_are_recorded() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1));
    b.scan(90, 1, &[&waybill(1).to_string()]).gate(100, 1);
    b.scan(105, 7, &[&waybill(7).to_string()]);
    b.tick(100 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert_eq!(b.records("unmatched_scan").len(), 1, "a scan no parcel claimed is recorded, not dropped");
}

#[test]
fn a_scan_without_trigger_count_goes_to_the_one_parcel_in_the_gate_window() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.gate(0, 1).untriggered(250, &[&waybill(1).to_string()]);
    b.gate(1_000, 2).untriggered(1_100, &[&waybill(2).to_string()]);
    b.tick(1_000 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert_eq!(b.destinations(2), vec![Lane::Release]);
    assert!(b.records("unmatched_scan").is_empty());
}

#[test]
fn time_alone_never_picks_between_two_parcels() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    // Two parcels in one window: the scan is nobody's, both end as no-reads.
    b.gate(0, 1).gate(100, 2).untriggered(200, &[&waybill(1).to_string()]);
    assert_eq!(b.records("unmatched_scan").len(), 1);
    // Outside every window (and nothing may wait for a gate): unmatched too.
    b.untriggered(900, &[&waybill(2).to_string()]);
    assert_eq!(b.records("unmatched_scan").len(), 2);
    b.tick(100 + CUTOFF_MS);
    for t in [1, 2] {
        assert_eq!(b.destinations(t), vec![Lane::Hold]);
        assert!(b.decision(t).unwrap().1.contains(&Reason::NoRead), "parcel {t}");
    }
}

#[test]
fn a_late_duplicate_frame_of_a_decided_parcel_is_never_its_neighbours_identity() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1));
    b.gate(0, 1).scan(20, 1, &["NOREAD"]); // held at once: a final hold
    assert_eq!(b.destinations(1), vec![Lane::Hold]);
    // Parcel 2 is gated; a duplicate frame carrying parcel 1's neighbour's label comes in the
    // window of both: it is nobody's.
    b.gate(200, 2).untriggered(250, &[&waybill(1).to_string()]);
    assert_eq!(b.records("unmatched_scan").len(), 1);
    b.tick(200 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Hold]);
}

#[test]
fn a_scan_before_its_gate_event_waits_only_when_allowed_and_alone() {
    let settings = LineSettings { untriggered_before_ms: 100, ..settings() };
    let mut b = Bench { line: Line::new(settings, policy()), out: Vec::new(), now: 0 };
    b.manifest(manifest(1)).manifest(manifest(2));
    b.untriggered(0, &[&waybill(1).to_string()]).gate(80, 1);
    // Two scans waiting for one gate event: neither is its.
    b.untriggered(1_000, &[&waybill(2).to_string()]).untriggered(1_010, &["EA000000000CN"]).gate(1_050, 2);
    // One that waited too long is recorded, never claimed.
    b.untriggered(2_000, &[&waybill(2).to_string()]).tick(2_101).gate(2_150, 3);
    assert_eq!(b.records("unmatched_scan").len(), 3);
    b.tick(2_150 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    assert_eq!((b.destinations(2), b.destinations(3)), (vec![Lane::Hold], vec![Lane::Hold]));
}

#[test]
fn pending_scans_are_bounded_and_evictions_recorded() {
    let mut b = Bench::new(policy());
    for trigger in 1..=10 {
        b.scan(trigger as u64, trigger, &["X"]);
    }
    assert_eq!(b.records("unmatched_scan").len(), 6, "limit of 4 pending scans");
}

fn reviewed() -> Policy {
    let mut p = policy();
    p.xray_review_ratio.green = 1.0;
    p
}

#[test]
fn verdict_before_cutoff_is_honoured() {
    for (verdict, lane) in
        [(Verdict::Release, Lane::Release), (Verdict::Inspect, Lane::Inspection), (Verdict::Hold, Lane::Hold)]
    {
        let mut b = Bench::new(reviewed());
        b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
        assert!(b.out.iter().any(|o| matches!(o, Output::ReviewRequested(r) if r.deadline == Millis(CUTOFF_MS))));
        b.verdict(5_000, 1, "officer-01", verdict);
        b.tick(CUTOFF_MS);
        assert_eq!(b.destinations(1), vec![lane], "{verdict:?}");
        // Answered: nothing waits on the screen (a review closes only while it is open).
        assert!(!b.out.iter().any(|o| matches!(o, Output::ReviewClosed { parcel, .. } if parcel.tracking.0 == 1)));
    }
}

#[test]
fn verdict_after_cutoff_is_ignored_and_the_parcel_held_late() {
    let mut b = Bench::new(reviewed());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    // The verdict arrives after the cut-off without a tick in between: the
    // deadline still fires first.
    b.verdict(CUTOFF_MS + 1, 1, "officer-02", Verdict::Release);
    assert_eq!(b.destinations(1), vec![Lane::Hold]);
    assert!(b.decision(1).unwrap().1.contains(&Reason::Late));
    assert!(b.out.iter().any(|o| matches!(o, Output::ReviewClosed { parcel, .. } if parcel.tracking.0 == 1)));
    assert_eq!(b.records("refused").len(), 1);
    assert_eq!((b.line.stats().late, b.line.stats().verdicts_refused), (1, 1));
    assert_eq!((b.alarms("review_late"), b.alarms("verdict_refused")), (1, 1));
}

#[test]
fn manual_transfer_moves_a_green_parcel_to_inspection() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.transfer(3_000, 1, "watch-01");
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection]);
    b.transfer(CUTOFF_MS + 1, 1, "watch-01");
    assert_eq!(b.destinations(1).len(), 1, "a destination is sent once");
}

#[test]
fn divert_on_another_lane_is_a_missort() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]).tick(CUTOFF_MS);
    b.at(CUTOFF_MS + 1, Input::DestinationWritten { tracking: TrackingId(1), lane_id: LANES.release });
    b.at(END_MS, Input::Divert { tracking: TrackingId(1), lane_id: LANES.hold });
    assert_eq!(b.records("missort").len(), 1);
    assert_eq!(b.alarms("missort"), 1);
    assert_eq!(b.line.stats().missorts, 1);
}

#[test]
fn release_of_an_undecided_or_held_parcel_is_critical() {
    let mut b = Bench::new(policy());
    b.gate(0, 1).scan(10, 1, &[]); // held
    b.at(END_MS, Input::Divert { tracking: TrackingId(1), lane_id: LANES.release });
    assert_eq!(b.alarms("unsafe_release"), 1);
    b.at(END_MS + 1, Input::Divert { tracking: TrackingId(42), lane_id: LANES.release });
    assert_eq!(b.alarms("unknown_parcel_diverted"), 1);
}

#[test]
fn unknown_tracking_ids_never_produce_a_destination() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1));
    let t = TrackingId(77);
    let parcel = ParcelId { tracking: t, boot: 0, serial: 1 };
    let (review, image_sha256) = (ReviewId(1), None);
    b.at(1, Input::Verdict { parcel, review, image_sha256, officer: officer("officer-01"), verdict: Verdict::Release });
    b.at(2, Input::ManualTransfer { parcel, officer: officer("officer-01") });
    b.at(3, Input::XrayScreened { parcel, sha256: "00".into(), manifest_version: Some(1), flags: vec![] });
    b.at(4, Input::DestinationWritten { tracking: t, lane_id: LANES.release });
    b.at(5, Input::Lost { tracking: t });
    b.at(6, Input::PlcHold { tracking: t, cause: PlcHoldCause::Late });
    b.tick(100_000);
    assert!(b.out.iter().all(|o| !matches!(o, Output::SetDestination { .. })));
    assert_eq!(b.records("refused").len(), 6);
}

#[test]
fn a_screening_result_for_a_parcel_without_an_image_is_refused() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    let parcel = b.id(1);
    let flags = vec!["undeclared metal".into()];
    b.at(4_000, Input::XrayScreened { parcel, sha256: "ab".into(), manifest_version: Some(1), flags });
    assert!(matches!(&b.records("refused")[..], [Record::Refused { why, .. }] if why.contains("no image")));
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release], "no station, no image: nothing to screen");
}

#[test]
fn safe_mode_holds_undecided_and_new_parcels() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(50, Input::PlcStatus { safe_mode: true });
    assert_eq!(b.destinations(1), vec![Lane::Hold]);
    assert_eq!(b.alarms("plc_safe_mode"), 1);
    b.gate(60, 2);
    assert_eq!(b.destinations(2), vec![Lane::Hold], "a new parcel is held before its scan");
    b.scan(70, 2, &[&waybill(2).to_string()]);
    assert_eq!(b.destinations(2).len(), 1);
    b.at(80, Input::PlcStatus { safe_mode: false });
    b.gate(100, 3).scan(110, 3, &[&waybill(1).to_string()]).tick(100 + CUTOFF_MS);
    assert_eq!(b.destinations(3), vec![Lane::Release]);
}

#[test]
fn an_operator_stop_holds_undecided_and_new_parcels_until_started() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(50, Input::LineControl { running: false, officer: officer("op-1") });
    assert_eq!(b.decision(1).map(|d| d.0), Some(Lane::Hold));
    assert!(b.decision(1).unwrap().1.contains(&Reason::LineStopped));
    assert_eq!(b.alarms("line_stopped"), 1);
    b.gate(60, 2);
    assert_eq!(b.destinations(2), vec![Lane::Hold], "a new parcel is held before its scan");
    b.at(70, Input::LineControl { running: false, officer: officer("op-1") });
    assert_eq!(b.records("refused").len(), 1, "stopping a stopped line is refused");
    b.at(80, Input::LineControl { running: true, officer: officer("op-2") });
    b.gate(100, 3).scan(110, 3, &[&waybill(1).to_string()]).tick(100 + CUTOFF_MS);
    assert_eq!(b.destinations(3), vec![Lane::Release]);
}

#[test]
fn parameters_change_sampling_from_then_on_and_bad_ones_are_refused() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    let all = PerChannel { green: 1.0, red: 1.0 };
    b.at(
        0,
        Input::Parameters {
            sample_rate: Some(all),
            xray_review_ratio: None,
            review_window_ms: None,
            officer: officer("op-1"),
        },
    );
    b.gate(10, 1).scan(20, 1, &[&waybill(1).to_string()]).tick(10 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection], "every parcel sampled at rate 1");
    let bad = PerChannel { green: f64::NAN, red: 0.0 };
    b.at(
        CUTOFF_MS + 20,
        Input::Parameters {
            sample_rate: Some(bad),
            xray_review_ratio: None,
            review_window_ms: None,
            officer: officer("op-1"),
        },
    );
    assert_eq!(b.records("refused").len(), 1);
    let none = PerChannel { green: 0.0, red: 0.0 };
    b.at(
        CUTOFF_MS + 30,
        Input::Parameters {
            sample_rate: Some(none),
            xray_review_ratio: None,
            review_window_ms: None,
            officer: officer("op-1"),
        },
    );
    let t0 = CUTOFF_MS + 40;
    b.gate(t0, 2).scan(t0 + 10, 2, &[&waybill(2).to_string()]).tick(t0 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Release]);
}

#[test]
fn a_review_window_shorter_than_the_cut_off_holds_a_parcel_late_when_it_ends() {
    let mut p = policy();
    p.xray_review_ratio.green = 1.0;
    let mut b = Bench::new(p);
    b.manifest(manifest(1)).manifest(manifest(2));
    let window = |w: u64| Input::Parameters {
        sample_rate: None,
        xray_review_ratio: None,
        review_window_ms: Some(w),
        officer: officer("op-1"),
    };
    b.at(0, window(0));
    assert_eq!(b.records("refused").len(), 1, "a window of 0 is refused");
    b.at(0, window(2_000));
    b.gate(10, 1).scan(20, 1, &[&waybill(1).to_string()]);
    let deadline = b.records("review_requested").iter().find_map(|r| match r {
        Record::ReviewRequested { deadline, .. } => Some(*deadline),
        _ => None,
    });
    assert_eq!(deadline, Some(Millis(2_020)), "the window, not the cut-off");
    b.tick(2_019);
    assert!(b.destinations(1).is_empty(), "still waiting for the officer");
    b.tick(2_020);
    assert_eq!(b.destinations(1), vec![Lane::Hold]);
    assert!(b.decision(1).unwrap().1.contains(&Reason::Late));
    // A verdict inside the window is honoured at the cut-off as before.
    b.gate(3_000, 2).scan(3_010, 2, &[&waybill(2).to_string()]);
    b.verdict(4_000, 2, "o-1", Verdict::Release);
    b.tick(3_000 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Release]);
}

#[test]
fn replaced_rules_apply_to_held_manifests_and_an_invalid_set_keeps_the_old() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    let shirts = hs_rule("SHIRTS", Lane::Hold, "6109");
    b.at(0, Input::Rules { rules: vec![shirts.clone()], officer: None });
    b.gate(10, 1).scan(20, 1, &[&waybill(1).to_string()]);
    let (lane, reasons) = b.decision(1).unwrap();
    assert_eq!(lane, Lane::Hold);
    assert!(reasons.iter().any(|r| matches!(r, Reason::Interception { rule, .. } if &**rule == "SHIRTS")));
    // Defined twice: invalid, refused whole.
    b.at(30, Input::Rules { rules: vec![shirts.clone(), shirts], officer: Some(officer("op-1")) });
    assert_eq!(b.records("refused").len(), 1);
    b.gate(40, 2).scan(50, 2, &[&waybill(2).to_string()]);
    assert_eq!(b.destinations(2), vec![Lane::Hold], "the old set stays in force");
    b.at(60, Input::Rules { rules: vec![], officer: None });
    b.gate(70, 3).scan(80, 3, &[&waybill(1).to_string()]).tick(70 + CUTOFF_MS);
    assert_eq!(b.destinations(3), vec![Lane::Release]);
}

#[test]
fn a_destination_too_late_is_held_by_the_plc_and_recorded_so() {
    let mut b = Bench::new(policy());
    let t = TrackingId(1);
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]).tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    b.at(CUTOFF_MS + 900, Input::PlcHold { tracking: t, cause: PlcHoldCause::Late });
    assert_eq!(b.alarms("destination_late"), 1);
    b.at(END_MS, Input::Divert { tracking: t, lane_id: LANES.hold });
    assert!(b.records("missort").is_empty(), "the PLC said it would hold it: hold is the expected lane");
    assert!(b.records("plc_hold").len() == 1, "the PLC's word is in the record");
    let done = b.reports();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].decided, done[0].confirmed), (Some(Lane::Release), Some(Lane::Hold)));
    assert_eq!(done[0].held_by_plc, Some(PlcHoldCause::Late));
    assert_eq!((b.line.stats().held_by_plc, b.line.stats().missorts), (1, 0));
}

#[test]
fn a_parcel_the_plc_holds_that_leaves_by_release_is_still_an_unsafe_release() {
    let mut b = Bench::new(policy());
    let t = TrackingId(1);
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]).tick(CUTOFF_MS);
    b.at(CUTOFF_MS + 1, Input::PlcHold { tracking: t, cause: PlcHoldCause::Forced { code: 1 } });
    assert_eq!(b.alarms("destination_late"), 0);
    b.at(END_MS, Input::Divert { tracking: t, lane_id: LANES.release });
    assert_eq!(b.records("missort").len(), 1);
    assert_eq!(b.alarms("unsafe_release"), 1);
}

#[test]
fn after_a_plc_restart_orphans_are_held_by_the_plc_default_unconfirmed() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(20, Input::PlcHold { tracking: TrackingId(1), cause: PlcHoldCause::Restart });
    assert!(matches!(b.records("parcel_lost")[..], [Record::Lost { why: LostWhy::PlcRestart, .. }]));
    assert_eq!(b.line.in_flight(), 0);
    let done = b.reports();
    assert_eq!((done[0].confirmed, done[0].held_by_plc), (None, Some(PlcHoldCause::Restart)));
    b.tick(END_MS + 10_000);
    assert!(b.destinations(1).is_empty(), "an orphan gets no destination: the PLC no longer knows it");
}

#[test]
fn a_stopped_belt_holds_back_cutoffs_and_confirmations_not_scan_timeouts() {
    let mut b = Bench::new(policy());
    let t = TrackingId(1);
    b.manifest(manifest(1)).gate(0, 1).scan(50, 1, &[&waybill(1).to_string()]).gate(60, 2);
    b.at(100, Input::Belt { running: false });
    assert_eq!(b.alarms("belt_stopped"), 1);
    // A minute standing: far past every deadline, yet nothing tied to position fires.
    b.tick(60_000);
    assert!(b.destinations(1).is_empty() && b.records("parcel_lost").is_empty());
    // The scanner's silence is not the belt's: parcel 2's scan timed out, a final hold, sent.
    assert_eq!(b.destinations(2), vec![Lane::Hold]);
    b.at(70_000, Input::Belt { running: true });
    // The cut-off comes as much later as the belt stood.
    b.tick(70_000 + CUTOFF_MS - 101);
    assert!(b.destinations(1).is_empty());
    b.tick(70_000 + CUTOFF_MS - 100);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    b.at(70_000 + END_MS - 1_000, Input::Divert { tracking: t, lane_id: LANES.release });
    b.at(70_000 + END_MS - 1_000, Input::Divert { tracking: TrackingId(2), lane_id: LANES.hold });
    assert!(b.records("missort").is_empty() && b.records("parcel_lost").is_empty());
    assert_eq!(b.line.stats().confirmed, 2);
}

#[test]
fn tracking_id_reuse_retires_the_old_parcel_as_lost() {
    let mut b = Bench::new(policy());
    b.gate(0, 1);
    b.at(10, Input::Gate { tracking: TrackingId(1), trigger: TriggerCount(2), length_mm: None, at: None });
    assert!(matches!(b.records("parcel_lost")[..], [Record::Lost { why: LostWhy::TrackingReused, .. }]));
    assert_eq!(b.line.in_flight(), 1);
}

#[test]
fn parcels_never_confirmed_are_lost_after_the_end_of_the_line() {
    let mut b = Bench::new(policy());
    b.gate(0, 1).scan(10, 1, &[]);
    b.tick(END_MS + 5_000);
    assert!(matches!(b.records("parcel_lost")[..], [Record::Lost { why: LostWhy::Unconfirmed, .. }]));
    assert_eq!(b.line.in_flight(), 0);
}

#[test]
fn in_flight_limit_refuses_and_leaves_the_parcel_to_the_plc_default() {
    let mut b = Bench::new(policy());
    for t in 1..=9 {
        b.gate(t as u64, t);
    }
    assert_eq!(b.line.in_flight(), 8);
    assert_eq!(b.alarms("in_flight_limit"), 1);
    assert!(b.destinations(9).is_empty());
}

#[test]
fn older_manifest_versions_do_not_replace_newer_ones() {
    let mut b = Bench::new(policy());
    let mut m2 = manifest(1);
    m2.version = 2;
    m2.channel = Channel::Red;
    b.manifest(m2).manifest(manifest(1));
    assert_eq!(b.records("refused").len(), 1);
    assert_eq!(b.line.manifest(&waybill(1)).unwrap().channel, Channel::Red);
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]).tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection]);
}

#[test]
fn amended_manifest_before_the_cutoff_is_used() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    let mut m = manifest(1);
    m.version = 2;
    m.status = ManifestStatus::Rejected;
    b.now = 5_000;
    b.manifest(m);
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Hold]);
    assert!(matches!(b.records("decision")[..], [Record::Decision { manifest_version: Some(2), .. }]));
}

#[test]
fn manual_targets_apply_until_removed() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.at(
        0,
        Input::TargetAdd(ManualTarget {
            id: "MT-1".into(),
            criterion: TargetCriterion::Consignee("buyer 1".into()),
            author: officer("risk-01"),
            reason: "tip-off".into(),
            created_at: Millis(0),
            expires_at: None,
        }),
    );
    b.gate(10, 1).scan(20, 1, &[&waybill(1).to_string()]).tick(10 + CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection]);
    b.at(10 + CUTOFF_MS, Input::TargetRemove { id: "MT-1".into(), officer: officer("risk-01") });
    b.gate(30_000, 2).scan(30_010, 2, &[&waybill(2).to_string()]).tick(30_000 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Release]);
    b.at(30_000 + CUTOFF_MS, Input::TargetRemove { id: "MT-1".into(), officer: officer("risk-01") });
    assert_eq!(b.records("refused").len(), 1);
}

#[test]
fn every_input_but_ticks_is_recorded_before_its_effects() {
    let mut b = Bench::new(policy());
    b.gate(0, 1).scan(10, 1, &[]);
    let kinds: Vec<&str> = b
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Record(r) => Some(r.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["gate", "scan", "identified", "decision"]);
    let decision_at = b.out.iter().position(|o| matches!(o, Output::Record(Record::Decision { .. }))).unwrap();
    let dest_at = b.out.iter().position(|o| matches!(o, Output::SetDestination { .. })).unwrap();
    assert!(decision_at < dest_at, "the decision is recorded before the destination goes out");
}

#[test]
fn a_rules_reload_applies_to_manifests_already_held() {
    let mut b = Bench::new(policy());
    b.manifest(manifest(1)).manifest(manifest(2));
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]).tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release]);
    let tshirts = hs_rule("CUS-TSHIRT", Lane::Hold, "6109");
    b.line.set_rules(std::sync::Arc::new(RuleSet::new(vec![tshirts]).unwrap()));
    b.gate(30_000, 2).scan(30_010, 2, &[&waybill(2).to_string()]);
    assert_eq!(b.destinations(2), vec![Lane::Hold], "the held manifest matches the new rule");
    assert!(b.decision(2).unwrap().1.contains(&Reason::Interception { rule: "CUS-TSHIRT".into(), action: Lane::Hold }));
}

fn xray_line(missing_image_lane: Lane) -> Bench {
    let xray = Some(XraySettings { missing_image_lane, image_match_window_ms: 2_000 });
    let mut b = Bench { line: Line::new(LineSettings { xray, ..settings() }, policy()), out: Vec::new(), now: 0 };
    b.manifest(manifest(1)).manifest(manifest(2));
    b
}

fn image(seq: u32, barcode: Option<&str>) -> Input {
    Input::XrayImage { image_seq: seq, sha256: format!("{seq:064x}").into(), barcode: barcode.map(str::to_string) }
}

fn screen_requests(b: &Bench) -> Vec<(TrackingId, u32, bool)> {
    b.out
        .iter()
        .filter_map(|o| match o {
            Output::ScreenImage { parcel, image_seq, manifest, .. } => {
                Some((parcel.tracking, *image_seq, manifest.is_some()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn with_an_xray_station_release_waits_for_the_pre_screen() {
    let mut b = xray_line(Lane::Inspection);
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, Input::XrayEntered { tracking: TrackingId(1), image_seq: 7 }).at(3_100, image(7, None));
    assert_eq!(screen_requests(&b), vec![(TrackingId(1), 7, true)], "screened against its declaration");
    assert_eq!(b.records("image_attached").len(), 1);
    b.screened(3_200, 1, &[]);
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Release], "clean pre-screen: released");

    // The image came, its screening never did: the configured lane, never release.
    let t0 = CUTOFF_MS + 100;
    b.gate(t0, 2).scan(t0 + 10, 2, &[&waybill(2).to_string()]);
    b.at(t0 + 3_000, Input::XrayEntered { tracking: TrackingId(2), image_seq: 8 }).at(t0 + 3_050, image(8, None));
    b.tick(t0 + CUTOFF_MS);
    let (lane, reasons) = b.decision(2).unwrap();
    assert_eq!(lane, Lane::Inspection);
    assert!(reasons.contains(&Reason::XrayImageMissing { action: Lane::Inspection }), "{reasons:?}");
}

#[test]
fn an_image_before_its_tunnel_event_waits_and_one_nobody_claims_is_recorded() {
    let mut b = xray_line(Lane::Hold);
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(2_900, image(7, Some(&waybill(1).to_string())));
    assert!(screen_requests(&b).is_empty());
    b.at(3_000, Input::XrayEntered { tracking: TrackingId(1), image_seq: 7 });
    assert_eq!(screen_requests(&b), vec![(TrackingId(1), 7, true)]);
    b.screened(3_100, 1, &["undeclared metal"]);
    b.tick(CUTOFF_MS);
    assert_eq!(b.destinations(1), vec![Lane::Inspection], "the pre-screen's flag is a reason");
    // No parcel ever entered the tunnel with image 99: recorded, alarmed, nothing decided on it.
    b.at(CUTOFF_MS + 10, image(99, None)).tick(CUTOFF_MS + 3_000);
    assert_eq!(b.records("unmatched_image").len(), 1);
    assert_eq!(b.alarms("xray_image_unmatched"), 1);
    // No image at all by the cut-off: held, as configured.
    let t0 = CUTOFF_MS + 3_100;
    b.gate(t0, 2).scan(t0 + 10, 2, &[&waybill(2).to_string()]).tick(t0 + CUTOFF_MS);
    assert_eq!(b.destinations(2), vec![Lane::Hold]);
}

#[test]
fn an_image_naming_another_waybill_holds_the_parcel() {
    let mut b = xray_line(Lane::Inspection);
    b.gate(0, 1).scan(10, 1, &[&waybill(1).to_string()]);
    b.at(3_000, Input::XrayEntered { tracking: TrackingId(1), image_seq: 7 });
    b.at(3_100, image(7, Some(&waybill(2).to_string())));
    assert_eq!(b.alarms("xray_image_mismatch"), 1);
    let (lane, reasons) = b.decision(1).expect("a hold nothing lifts goes out at once");
    assert_eq!(lane, Lane::Hold);
    assert!(reasons.contains(&Reason::ImageBarcodeMismatch));
    // A second image under the same number is refused, not swapped in.
    b.at(3_200, image(7, None));
    assert_eq!(b.records("refused").len(), 1);
}

/// A bench in shadow mode: decisions as usual, the PLC told hold.
fn shadow_bench() -> Bench {
    Bench { line: Line::new(LineSettings { shadow: true, ..settings() }, policy()), out: Vec::new(), now: 0 }
}

#[test]
fn shadow_mode_records_the_real_decision_and_sends_hold() {
    let mut b = shadow_bench();
    let (release, unknown) = (waybill(1).to_string(), waybill(9).to_string());
    b.manifest(manifest(1)).gate(100, 1).scan(130, 1, &[&release]).gate(200, 2).scan(230, 2, &[&unknown]);
    b.tick(200 + CUTOFF_MS);
    for (t, lane, reason) in [(1, Lane::Release, Reason::GreenChannel), (2, Lane::Hold, Reason::NoManifest)] {
        let (decided, reasons) = b.decision(t).unwrap();
        assert_eq!(decided, lane, "parcel {t}: the record keeps the lane decided");
        assert!(reasons.contains(&reason), "parcel {t}: {reasons:?}");
        assert_eq!(b.destinations(t), vec![Lane::Hold], "parcel {t}: the PLC is told hold");
    }
    assert!(b.out.iter().all(|o| !matches!(o, Output::SetDestination { lane_id, .. } if *lane_id != LANES.hold)));
    assert!(b.records("decision").iter().all(|r| matches!(r, Record::Decision { shadow: true, .. })));
    assert_eq!((b.line.stats().decided_release, b.line.stats().decided_hold), (1, 1));
    assert!(b.line.mode().shadow);
}

#[test]
fn in_shadow_mode_hold_is_the_lane_sent_and_release_an_unsafe_one() {
    let mut b = shadow_bench();
    for t in [1, 2] {
        let w = waybill(t).to_string();
        b.manifest(manifest(t)).gate(100 * u64::from(t), t).scan(100 * u64::from(t) + 30, t, &[&w]);
    }
    b.tick(200 + CUTOFF_MS);
    for t in [1, 2] {
        b.at(200 + CUTOFF_MS + 5, Input::DestinationWritten { tracking: TrackingId(t), lane_id: LANES.hold });
    }
    assert!(b.records("refused").is_empty(), "hold is the destination that was sent");
    b.at(100 + END_MS, Input::Divert { tracking: TrackingId(1), lane_id: LANES.hold });
    assert!(b.records("missort").is_empty(), "a would-be release confirmed in hold is no missort");
    assert_eq!(b.alarms("destination_unconfirmed"), 0);
    b.at(200 + END_MS, Input::Divert { tracking: TrackingId(2), lane_id: LANES.release });
    assert!(matches!(
        b.records("missort")[..],
        [Record::Missort { decided: Some(Lane::Hold), actual: Some(Lane::Release), .. }]
    ));
    assert_eq!(b.alarms("unsafe_release"), 1);
    assert_eq!((b.line.stats().confirmed, b.line.stats().missorts), (1, 1));
    let reports = b.reports();
    assert!(reports.iter().all(|r| r.shadow && r.decided == Some(Lane::Release)), "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.confirmed).collect::<Vec<_>>(), [Some(Lane::Hold), Some(Lane::Release)]);
}

#[test]
fn a_decision_record_without_the_shadow_field_reads_as_live() {
    let live = Record::Decision {
        parcel: ParcelId { tracking: TrackingId(1), boot: 0, serial: 1 },
        waybill: None,
        lane: Lane::Hold,
        reasons: vec![Reason::NoRead],
        manifest_version: None,
        channel: None,
        image_sha256: None,
        shadow: false,
    };
    let json = serde_json::to_value(&live).unwrap();
    assert!(json["data"].get("shadow").is_none(), "live records look as they did: {json}");
    assert_eq!(serde_json::from_value::<Record>(json).unwrap(), live);
    let old_settings = serde_json::to_value(settings()).unwrap();
    let mut old = old_settings.as_object().unwrap().clone();
    old.remove("shadow");
    assert!(!serde_json::from_value::<LineSettings>(old.into()).unwrap().shadow);
}
