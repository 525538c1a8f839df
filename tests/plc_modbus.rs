//! End to end over Modbus TCP: the real host driver (`sortline::plc::driver`) against the
//! simulated PLC (`sortline_sim::modbus`) on 127.0.0.1, port chosen at run time, with a core
//! `Line` deciding; the harness is `plc_harness` (shared with the RTU test).

mod plc_harness;

use plc_harness::{assert_every_parcel_in_its_decided_lane, assert_safe, repo, Run, RUN_LIMIT};
use sortline::clock::Stopwatch;
use sortline::config::LineConfig;
use sortline::config::Transport;
use sortline::core::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_flow_over_modbus_tcp_each_in_its_decided_lane() {
    let mut run = Run::start(Transport::Tcp, 320, 11).await;
    let report = run.finish().await;
    assert_every_parcel_in_its_decided_lane(run, &report, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_faults_mid_run_lose_and_duplicate_no_destination() {
    let mut run = Run::start(Transport::Tcp, 160, 12).await;
    run.drive(|r| r.done.len() >= 30).await;
    run.plc.drop_connections();
    run.drive(|r| r.done.len() >= 60).await;
    // One reply later than the driver's timeout: the context is dropped, the late reply never read.
    run.plc.stall_next(1, Duration::from_millis(400));
    run.drive(|r| r.done.len() >= 90).await;
    run.plc.exception_next(3, 0x04);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert_safe(&run, &report, &summary);
    assert!(stats.connects >= 3, "a reconnect after the drop and after the stall: {summary}");
    assert!(stats.exceptions >= 1, "{summary}");
    let codes = run.alarm_codes();
    assert!(codes.contains(&"plc_link_down") && codes.contains(&"plc_exception"), "{summary}");
    // Every destination taken by the PLC exactly once, and reported taken exactly once.
    assert_eq!(run.plc.destinations_taken(), run.destinations, "{summary}");
    assert_eq!(stats.destinations_taken, run.destinations, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_restart_mid_run_resyncs_and_its_orphans_end_in_hold() {
    restart_mid_run(false, 13, 2).await;
}

/// A memory reset starts the boot count from 1 again: the host sees the restart by the boot
/// nonce alone, and treats it as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_memory_reset_is_seen_by_its_boot_nonce_and_its_orphans_end_in_hold() {
    restart_mid_run(true, 17, 1).await;
}

async fn restart_mid_run(memory_reset: bool, seed: u64, boot_after: u16) {
    let mut run = Run::start(Transport::Tcp, 120, seed).await;
    run.drive(|r| r.done.len() >= 30).await;
    let nonce = run.plc.boot_nonce();
    if memory_reset {
        run.plc.memory_reset();
    } else {
        run.plc.restart();
    }
    assert_ne!(run.plc.boot_nonce(), nonce);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert_eq!(run.plc.boot_count(), boot_after);
    assert_eq!(report.plc_restarts, 1);
    assert!(run.alarm_codes().contains(&"plc_restarted"), "{summary}");
    assert_safe(&run, &report, &summary);
    // The parcels the host knew in flight were recorded as held by the PLC default, and
    // physically ran on into hold, but for one already pushed into its lane when the PLC went
    // down (its confirmation is what was lost); parcels after the restart flowed again.
    let orphans: Vec<&ParcelReport> = run.done.iter().filter(|p| p.lost).collect();
    assert!(!orphans.is_empty(), "{summary}");
    for p in &orphans {
        assert_eq!(p.held_by_plc, Some(PlcHoldCause::Restart), "{p:?}");
        let outcome = report.outcomes.iter().find(|o| o.tracking == Some(p.parcel.tracking.0)).unwrap();
        let diverted_before = p.decided == Some(outcome.physical);
        assert!(outcome.physical == Lane::Hold || diverted_before, "{p:?} {outcome:?}");
    }
    let after = run.done.iter().filter(|p| !p.lost && p.confirmed == p.decided).count();
    assert!(after >= 60, "{after} parcels confirmed in their lane; {summary}");
    // Nothing taken twice; destinations lost with the old boot were dropped, not re-sent.
    assert!(run.plc.destinations_taken() <= run.destinations, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_the_plc_takes_too_late_end_in_hold_recorded_as_such() {
    let mut run = Run::start(Transport::Tcp, 120, 15).await;
    run.drive(|r| r.done.len() >= 20).await;
    // A PLC task overrun: the destination ring is not read for 6 s of line time, so what the
    // host sends meanwhile reaches the PLC after those parcels' latch point.
    run.plc.pause_destinations(6_000);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert!(report.late_destinations > 0, "{summary}");
    assert_eq!(report.unsafe_releases, 0, "{summary}");
    let late: Vec<&ParcelReport> = run.done.iter().filter(|p| p.held_by_plc == Some(PlcHoldCause::Late)).collect();
    assert_eq!(late.len(), report.late_destinations as usize, "each late destination is recorded as such");
    assert!(late.iter().all(|p| p.confirmed == Some(Lane::Hold)), "{late:?}");
    assert!(late.iter().any(|p| p.decided != Some(Lane::Hold)), "some were meant for another lane: {late:?}");
    // Hold was the lane they were expected in: no missort, and every other parcel in its lane.
    assert_eq!(run.line.stats().missorts, 0, "{summary}");
    assert!(run.done.iter().filter(|p| p.held_by_plc.is_none()).all(|p| p.confirmed == p.decided), "{summary}");
    assert!(run.alarm_codes().contains(&"destination_late"), "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_sends_its_parcels_to_hold_recorded_as_forced_by_the_plc() {
    let cfg = LineConfig::load(&repo("firmware-config/line.toml")).unwrap();
    let inspection = cfg.line.settings().lanes.inspection;
    let lane_full = u32::from(cfg.register_map().unwrap().codes.forced_hold["LANE_FULL"]);
    let mut run = Run::start(Transport::Tcp, 160, 16).await;
    run.drive(|r| r.done.len() >= 20).await;
    run.plc.set_lane_full(inspection, true);
    run.drive(|r| r.done.len() >= 90).await;
    run.plc.set_lane_full(inspection, false);
    let report = run.finish().await;
    let summary = format!("stats {:?}, alarms {:?}", run.stats(), run.alarm_codes());

    assert_eq!((report.unsafe_releases, report.wrong_lane), (0, 0), "{summary}");
    let forced = PlcHoldCause::Forced { code: lane_full };
    let held: Vec<&ParcelReport> = run.done.iter().filter(|p| p.held_by_plc == Some(forced)).collect();
    assert!(!held.is_empty(), "{summary}");
    for p in &held {
        assert_eq!((p.decided, p.confirmed), (Some(Lane::Inspection), Some(Lane::Hold)), "{p:?}");
    }
    assert!(run.done.iter().filter(|p| p.held_by_plc.is_none()).all(|p| p.confirmed == p.decided), "{summary}");
    // Inspection flows again once the lane is cleared.
    let last_held = held.iter().map(|p| p.done_at).max().unwrap();
    assert!(run.done.iter().any(|p| p.confirmed == Some(Lane::Inspection) && p.done_at > last_held), "{summary}");
    assert_eq!(run.line.stats().missorts, 0, "{summary}");
    assert!(run.alarm_codes().contains(&"plc_lane_full"), "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jam_or_an_emergency_stop_stands_the_belt_and_its_parcels_wait_not_lost() {
    let mut run = Run::start(Transport::Tcp, 120, 17).await;
    // Longer than any confirmation grace: without the belt's word the core would call them lost.
    const STANDING_MS: u64 = 60_000;
    for (after, stop) in [(20, "jam"), (60, "estop")] {
        run.drive(|r| r.done.len() >= after).await;
        let on_belt = run.line.in_flight();
        let t0 = run.plc.line_ms().unwrap();
        match stop {
            "jam" => run.plc.jam(3, true),
            _ => run.plc.estop(true),
        }
        run.drive(|r| r.plc.line_ms().unwrap() >= t0 + STANDING_MS).await;
        assert!(on_belt > 0 && run.line.in_flight() > 0, "parcels stood on the belt during the {stop}");
        assert!(run.done.iter().all(|p| !p.lost), "{stop}: a standing parcel was taken for lost");
        match stop {
            "jam" => run.plc.jam(3, false),
            _ => run.plc.estop(false),
        }
    }
    let report = run.finish().await;
    let summary = format!("stats {:?}, alarms {:?}", run.stats(), run.alarm_codes());

    assert_eq!((report.unsafe_releases, report.wrong_lane, report.in_flight), (0, 0, 0), "{summary}");
    for p in &run.done {
        assert!(!p.lost && p.confirmed == p.decided, "{p:?}");
    }
    assert_eq!(run.line.stats().lost, 0, "{summary}");
    for code in ["plc_jam", "plc_estop", "belt_stopped"] {
        assert!(run.alarm_codes().contains(&code), "{code}: {summary}");
    }
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_trips_the_watchdog_and_every_later_parcel_goes_to_hold() {
    let mut run = Run::start_with(Transport::Tcp, 80, 14, false).await;
    run.drive(|r| r.done.len() >= 20).await;
    // The host stops: no more heartbeats, no more reads.
    run.stop_driver();
    assert!(run.plc.wait_safe_mode(true, Duration::from_secs(5)).await, "the watchdog did not trip");
    let at_trip = run.plc.report();
    assert!(run.plc.wait_finished(RUN_LIMIT).await, "the line did not run out");
    let report = run.plc.report();

    assert_eq!(report.unsafe_releases, 0);
    assert!(report.plc_forced_holds > 0);
    // From the trip on no diverter fired: every later parcel left by the end of the line.
    assert_eq!(report.lanes.release, at_trip.lanes.release);
    assert_eq!(report.lanes.inspection, at_trip.lanes.inspection);
    assert_eq!(report.in_flight, 0);
    assert!(report.lanes.hold > at_trip.lanes.hold);
    // The induct stopped with the trip: what had not reached the belt waits at the infeed.
    assert!(report.not_inducted > 0, "{report:?}");
    assert_eq!(
        report.lanes.release + report.lanes.inspection + report.lanes.hold + report.not_inducted,
        report.parcels
    );
    assert!(run.driver.await.unwrap().is_ok());
}

/// `WATCHDOG_MS` plus two of the harness's polls (10 ms, not in lockstep) and a second: how long
/// a stopped driver waits for the PLC's safe mode at most.
const CONFIRM_BOUND_MS: u64 = 1_000 + 2 * 10 + 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_driver_reports_the_plc_confirming_its_watchdogs_safe_mode() {
    let mut run = Run::start_with(Transport::Tcp, 40, 21, false).await;
    run.drive(|r| r.done.len() >= 5).await;
    let stopped = Stopwatch::start();
    run.stop_driver();
    let check = run.driver.await.unwrap().unwrap();
    let took_ms = stopped.elapsed_ms();

    assert!(check.confirmed && !check.link_down, "{check:?}");
    assert!(run.plc.safe_mode());
    // The heartbeat last moved at most a heartbeat period (200 ms) and a poll before the stop,
    // and the PLC trips once it is older than the watchdog: never at once.
    assert!((700..=CONFIRM_BOUND_MS).contains(&check.waited_ms), "{check:?}");
    assert!(took_ms >= check.waited_ms && took_ms <= CONFIRM_BOUND_MS + 200, "{took_ms} ms, {check:?}");
    eprintln!("safe mode confirmed {} ms after the stop", check.waited_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_whose_watchdog_never_trips_is_reported_unconfirmed_at_the_bound() {
    let mut run = Run::start_with(Transport::Tcp, 40, 22, false).await;
    run.drive(|r| r.done.len() >= 5).await;
    run.plc.break_watchdog(true);
    let stopped = Stopwatch::start();
    run.stop_driver();
    let check = run.driver.await.unwrap().unwrap();
    let took_ms = stopped.elapsed_ms();

    assert!(!check.confirmed && !check.link_down, "{check:?}");
    assert!(!run.plc.safe_mode());
    assert!((CONFIRM_BOUND_MS..=CONFIRM_BOUND_MS + 200).contains(&took_ms), "{took_ms} ms, {check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_down_at_the_stop_is_reported_unconfirmed_at_once() {
    let mut run = Run::start_with(Transport::Tcp, 40, 23, false).await;
    run.drive(|r| r.done.len() >= 5).await;
    run.plc.drop_connections();
    let stopped = Stopwatch::start();
    run.stop_driver();
    let check = run.driver.await.unwrap().unwrap();
    let took_ms = stopped.elapsed_ms();

    assert!(!check.confirmed && check.link_down, "{check:?}");
    // No reconnect, no wait for a watchdog it cannot see: one failed request at most.
    assert!(took_ms < 300, "{took_ms} ms, {check:?}");
}
