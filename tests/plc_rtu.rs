//! End to end over Modbus RTU: the real host driver opens the simulated PLC's pseudo-terminal
//! (`SimPlc::start_rtu`) as a serial port with tokio-serial, in lockstep line time, with a core
//! `Line` deciding; the harness is `plc_harness` (shared with the TCP test). The simulator is
//! the referee.

mod plc_harness;

use plc_harness::{assert_every_parcel_in_its_decided_lane, assert_safe, Run};
use sortline::config::Transport;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_flow_over_modbus_rtu_each_in_its_decided_lane() {
    let mut run = Run::start(Transport::Rtu, 240, 21).await;
    let report = run.finish().await;
    assert_every_parcel_in_its_decided_lane(run, &report, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_past_the_timeout_reopens_the_port_and_loses_nothing() {
    let mut run = Run::start(Transport::Rtu, 220, 22).await;
    run.drive(|r| r.done.len() >= 40).await;
    // One reply 50 ms past the driver's 200 ms timeout: the port is closed when it comes, and
    // flushed when reopened, so it is never taken for a later request's reply.
    run.plc.stall_next(1, Duration::from_millis(250));
    run.drive(|r| r.done.len() >= 90).await;
    // A swallowed request (the RTU meaning of a dropped connection): timeout, reopen.
    run.plc.drop_connections();
    run.drive(|r| r.done.len() >= 140).await;
    run.plc.exception_next(3, 0x04);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert!(run.done.len() >= 200, "{} parcels done; {summary}", run.done.len());
    assert_safe(&run, &report, &summary);
    assert_eq!(stats.connects, 3, "a reopen after the stall and after the drop: {summary}");
    assert!(stats.exceptions >= 1, "{summary}");
    let codes = run.alarm_codes();
    assert!(codes.contains(&"plc_link_down") && codes.contains(&"plc_exception"), "{summary}");
    // Every destination taken by the PLC exactly once, and reported taken exactly once.
    assert_eq!(run.plc.destinations_taken(), run.destinations, "{summary}");
    assert_eq!(stats.destinations_taken, run.destinations, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}
