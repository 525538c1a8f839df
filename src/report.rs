//! `sortline report`: the line's figures computed from the audit record
//! alone, for a time window. The same figures are meant for the MQTT metrics.

use crate::audit::{self, AuditError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LaneCounts {
    pub release: u64,
    pub inspection: u64,
    pub hold: u64,
}

impl LaneCounts {
    fn add(&mut self, lane: Option<&str>) {
        match lane {
            Some("release") => self.release += 1,
            Some("inspection") => self.inspection += 1,
            Some("hold") => self.hold += 1,
            _ => {}
        }
    }
}

/// Shadow mode's dry run: where the parcels decided in shadow mode would have gone, and where
/// they physically went (hold, unless the PLC disobeyed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Shadow {
    /// Decisions made in shadow mode, by the lane decided.
    pub would: LaneCounts,
    /// The lanes the PLC confirmed for those parcels.
    pub confirmed: LaneCounts,
    /// Of those parcels, the ones with no confirmed lane in the window (lost, or still on the
    /// line at its end).
    pub unconfirmed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OfficerTimes {
    pub officer: String,
    pub verdicts: u64,
    pub median_ms: u64,
    pub p95_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub from_wall_ms: i64,
    pub to_wall_ms: i64,
    /// Parcels that entered the reading gate.
    pub parcels: u64,
    pub decided: LaneCounts,
    pub confirmed: LaneCounts,
    pub green: u64,
    pub red: u64,
    /// Decided parcels without a usable list (unidentified, no or unknown list).
    pub no_list: u64,
    pub no_reads: u64,
    pub no_read_rate: f64,
    pub reviews: u64,
    pub late: u64,
    /// Late decisions per review requested.
    pub late_rate: f64,
    /// Inspection-bench results entered.
    pub inspected: u64,
    pub discrepancies: u64,
    /// Discrepancies per parcel inspected; `None` with no result entered.
    pub hit_rate: Option<f64>,
    pub missorts: u64,
    pub lost: u64,
    pub alarms: u64,
    pub officers: Vec<OfficerTimes>,
    /// Present when the window holds decisions made in shadow mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Computes the figures from the entries with `from_wall_ms <= wall_ms < to_wall_ms`.
pub fn report(db: &Path, from_wall_ms: i64, to_wall_ms: i64) -> Result<Report, AuditError> {
    let mut r = Report { from_wall_ms, to_wall_ms, ..Report::default() };
    // Tracking ids restart with each run, so reviews are keyed by run as well.
    let mut run = 0u64;
    let mut asked: HashMap<(u64, u64), u64> = HashMap::new();
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    // Shadow decisions waiting for their parcel's story to complete, by serial (unique across
    // runs); a parcel's story always completes, so this holds only the parcels on the line.
    let mut shadowed: HashSet<u64> = HashSet::new();
    let lane = |p: &Value, key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
    let serial = |p: &Value| p.get("serial").and_then(Value::as_u64);
    audit::entries_between(db, from_wall_ms, to_wall_ms, |e| {
        let p = &e.payload;
        let tracking = u64::from(e.tracking.unwrap_or(0));
        match e.kind.as_str() {
            "start" => run += 1,
            "gate" => r.parcels += 1,
            "identified" if p.pointer("/identity/result").and_then(Value::as_str) == Some("no_read") => {
                r.no_reads += 1;
            }
            "decision" => {
                r.decided.add(lane(p, "lane").as_deref());
                if p.get("shadow").and_then(Value::as_bool) == Some(true) {
                    r.shadow.get_or_insert_with(Shadow::default).would.add(lane(p, "lane").as_deref());
                    shadowed.extend(serial(p));
                }
                match p.get("channel").and_then(Value::as_str) {
                    Some("green") => r.green += 1,
                    Some("red") => r.red += 1,
                    _ => r.no_list += 1,
                }
                let reasons = p.get("reasons").and_then(Value::as_array);
                if reasons.is_some_and(|rs| rs.iter().any(|x| x.get("reason").and_then(Value::as_str) == Some("late")))
                {
                    r.late += 1;
                }
            }
            "completed" => {
                let confirmed = lane(p, "confirmed");
                r.confirmed.add(confirmed.as_deref());
                let was_shadow = serial(p).is_some_and(|s| shadowed.remove(&s));
                if let (true, Some(shadow)) = (was_shadow, r.shadow.as_mut()) {
                    match confirmed {
                        Some(_) => shadow.confirmed.add(confirmed.as_deref()),
                        None => shadow.unconfirmed += 1,
                    }
                }
            }
            "review_requested" => {
                r.reviews += 1;
                asked.insert((run, tracking), e.mono_ms);
            }
            "verdict" => {
                if let (Some(at), Some(officer)) = (asked.remove(&(run, tracking)), lane(p, "officer")) {
                    times.entry(officer).or_default().push(e.mono_ms.saturating_sub(at));
                }
            }
            "inspection_result" => {
                r.inspected += 1;
                r.discrepancies += u64::from(p.get("discrepancy").and_then(Value::as_bool) == Some(true));
            }
            "missort" => r.missorts += 1,
            "parcel_lost" => r.lost += 1,
            "alarm" => r.alarms += 1,
            _ => {}
        }
        Ok(())
    })?;
    if let Some(shadow) = r.shadow.as_mut() {
        shadow.unconfirmed += shadowed.len() as u64;
    }
    r.no_read_rate = ratio(r.no_reads, r.parcels);
    r.late_rate = ratio(r.late, r.reviews);
    r.hit_rate = (r.inspected > 0).then(|| ratio(r.discrepancies, r.inspected));
    r.officers = times
        .into_iter()
        .map(|(officer, mut ms)| {
            ms.sort_unstable();
            OfficerTimes {
                verdicts: ms.len() as u64,
                median_ms: percentile(&ms, 0.5),
                p95_ms: percentile(&ms, 0.95),
                officer,
            }
        })
        .collect();
    Ok(r)
}

/// Lanes as rows, `first` and the confirmed counts as columns.
fn lane_table(t: &mut String, first: &str, a: &LaneCounts, confirmed: &LaneCounts) {
    t.push_str(&format!("lane        {first}  confirmed\n"));
    for (name, a, c) in [
        ("release", a.release, confirmed.release),
        ("inspection", a.inspection, confirmed.inspection),
        ("hold", a.hold, confirmed.hold),
    ] {
        t.push_str(&format!("{name:<12} {a:>8} {c:>10}\n"));
    }
}

impl Report {
    /// Two-column CSV (metric, value), then one row per officer.
    pub fn to_csv(&self) -> String {
        let hit = self.hit_rate.map_or(String::new(), |h| format!("{h:.4}"));
        let mut out = String::from("metric,value\n");
        for (k, v) in [
            ("from_wall_ms", self.from_wall_ms.to_string()),
            ("to_wall_ms", self.to_wall_ms.to_string()),
            ("parcels", self.parcels.to_string()),
            ("decided_release", self.decided.release.to_string()),
            ("decided_inspection", self.decided.inspection.to_string()),
            ("decided_hold", self.decided.hold.to_string()),
            ("confirmed_release", self.confirmed.release.to_string()),
            ("confirmed_inspection", self.confirmed.inspection.to_string()),
            ("confirmed_hold", self.confirmed.hold.to_string()),
            ("green", self.green.to_string()),
            ("red", self.red.to_string()),
            ("no_list", self.no_list.to_string()),
            ("no_reads", self.no_reads.to_string()),
            ("no_read_rate", format!("{:.4}", self.no_read_rate)),
            ("reviews", self.reviews.to_string()),
            ("late", self.late.to_string()),
            ("late_rate", format!("{:.4}", self.late_rate)),
            ("inspected", self.inspected.to_string()),
            ("discrepancies", self.discrepancies.to_string()),
            ("hit_rate", hit),
            ("missorts", self.missorts.to_string()),
            ("lost", self.lost.to_string()),
            ("alarms", self.alarms.to_string()),
        ] {
            out.push_str(&format!("{k},{v}\n"));
        }
        if let Some(s) = &self.shadow {
            for (k, v) in [
                ("shadow_would_release", s.would.release),
                ("shadow_would_inspection", s.would.inspection),
                ("shadow_would_hold", s.would.hold),
                ("shadow_confirmed_release", s.confirmed.release),
                ("shadow_confirmed_inspection", s.confirmed.inspection),
                ("shadow_confirmed_hold", s.confirmed.hold),
                ("shadow_unconfirmed", s.unconfirmed),
            ] {
                out.push_str(&format!("{k},{v}\n"));
            }
        }
        out.push_str("\nofficer,verdicts,median_ms,p95_ms\n");
        for o in &self.officers {
            // Officer ids carry no commas or quotes (see OfficerId), so no quoting is needed.
            out.push_str(&format!("{},{},{},{}\n", o.officer, o.verdicts, o.median_ms, o.p95_ms));
        }
        out
    }

    /// The readable table.
    pub fn to_text(&self) -> String {
        let pct = |x: f64| format!("{:.1} %", x * 100.0);
        let mut t = String::new();
        t.push_str(&format!(
            "parcels {}   green {}  red {}  no list {}\n",
            self.parcels, self.green, self.red, self.no_list
        ));
        lane_table(&mut t, "  decided", &self.decided, &self.confirmed);
        t.push_str(&format!("no-read rate {} ({} of {})\n", pct(self.no_read_rate), self.no_reads, self.parcels));
        t.push_str(&format!("late rate {} ({} of {} reviews)\n", pct(self.late_rate), self.late, self.reviews));
        match self.hit_rate {
            Some(h) => t.push_str(&format!(
                "inspection hit rate {} ({} discrepancies in {} opened)\n",
                pct(h),
                self.discrepancies,
                self.inspected
            )),
            None => t.push_str("inspection hit rate: no inspection results entered in this window\n"),
        }
        t.push_str(&format!("missorts {}  lost {}  alarms {}\n", self.missorts, self.lost, self.alarms));
        if let Some(s) = &self.shadow {
            let n = s.would.release + s.would.inspection + s.would.hold;
            t.push_str(&format!("shadow mode: {n} decisions recorded, the PLC told hold for each\n"));
            lane_table(&mut t, "would go", &s.would, &s.confirmed);
            t.push_str(&format!("not confirmed {}\n", s.unconfirmed));
        }
        t.push_str("officer        verdicts   median    p95\n");
        for o in &self.officers {
            t.push_str(&format!(
                "{:<14} {:>8} {:>7.1}s {:>6.1}s\n",
                o.officer,
                o.verdicts,
                o.median_ms as f64 / 1000.0,
                o.p95_ms as f64 / 1000.0
            ));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.95), 95);
        assert_eq!(percentile(&[7], 0.95), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
