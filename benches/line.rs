//! Core benchmark: decisions per second and the whole per-parcel `Line`
//! cost, with 1,000,000 manifests in memory. Prints figures; asserts nothing
//! about time. Run: `cargo bench --bench line` (docs/performance.md).

use sortline::clock::Stopwatch;
use sortline::config::LineConfig;
use sortline::core::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const MANIFESTS: u32 = 1_000_000;
const PARCELS: u32 = 1_000_000;

fn waybill(n: u32) -> Waybill {
    let serial = format!("{n:08}");
    let cd = sortline::core::waybill::s10_check_digit(serial.as_bytes().try_into().expect("8 digits"));
    Waybill::parse(&format!("EA{serial}{cd}CN")).expect("valid S10")
}

/// A realistic mix: mostly green, some red, rejected, licence and targeted
/// lists, a few goods that interception rules catch.
fn manifest(n: u32) -> Manifest {
    let pick = n % 100;
    let (name, hs) = match n % 7 {
        0 => ("连衣裙 dress", "620442"),
        1 => ("T恤 T-shirt", "610910"),
        2 => ("蓝牙耳机 bluetooth earphones", "851830"),
        3 => ("充电宝 power bank", "850760"),
        4 => ("图书 book", "490199"),
        5 => ("口红 lipstick", "330410"),
        _ => ("玩具 toy", "950300"),
    };
    Manifest {
        waybill: waybill(n),
        list_no: format!("2235{n:014}"),
        version: 1,
        channel: if pick < 10 { Channel::Red } else { Channel::Green },
        status: if pick == 10 || pick == 11 { ManifestStatus::Rejected } else { ManifestStatus::Accepted },
        licence_required: (12..15).contains(&pick),
        platform_targeted: (15..18).contains(&pick),
        consignor: "江苏港城供应链管理有限公司".into(),
        consignee: format!("Buyer {}", n % 5000),
        country: ["US", "FR", "DE", "JP", "GB"][(n % 5) as usize].into(),
        gross_weight_g: 300 + n % 1500,
        items: vec![Item {
            name: name.into(),
            hs_code: hs.into(),
            quantity: 1 + n % 3,
            value_minor: 5_000 + u64::from(n % 40_000),
            currency: "CNY".into(),
        }],
    }
}

fn main() {
    let path = std::env::var("BENCH_CONFIG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/line.toml").into());
    let cfg = LineConfig::load(Path::new(&path)).expect("shipped configuration loads");
    let policy = cfg.line.policy(SiteSecret::from_bytes([7; 16]), cfg.rules.clone());
    println!("sortline core benchmark: {MANIFESTS} manifests in memory, {} interception rules", cfg.rules.len());

    // The index as the Line holds it: each manifest with the rules it matches.
    let t = Stopwatch::start();
    let index: HashMap<Waybill, (Arc<Manifest>, Box<[Reason]>)> = (0..MANIFESTS)
        .map(|n| {
            let m = manifest(n);
            let hits = policy.rule_hits(&m);
            (m.waybill, (Arc::new(m), hits))
        })
        .collect();
    println!("built the manifest index (with rule hits) in {:.2} s", t.elapsed_secs_f64());

    // 1. The decision engine alone: lookup + decide, as at a scan.
    // Waybills are drawn across the whole index (a multiplicative walk) so
    // that lookups miss the cache as they would on a line.
    let ids: Vec<Identity> = (0..PARCELS)
        .map(|i| match i % 100 {
            0..=2 => Identity::NoRead,
            3 => Identity::BadCheckDigit,
            _ => Identity::Waybill { waybill: waybill(i.wrapping_mul(2_654_435_761) % MANIFESTS) },
        })
        .collect();
    let mut lanes = [0u64; 3];
    let t = Stopwatch::start();
    for id in &ids {
        let held = match id {
            Identity::Waybill { waybill } => index.get(waybill),
            _ => None,
        };
        let facts = Facts {
            identity: Some(id),
            length_mm: Some(400),
            manifest: held.map(|(m, _)| &**m),
            rule_hits: held.map_or(&[], |(_, hits)| hits),
            ..Facts::default()
        };
        let d = black_box(policy.decide(&facts, Millis(0)));
        lanes[d.lane as usize] += 1;
    }
    let secs = t.elapsed_secs_f64();
    println!(
        "decision engine: {:.0} decisions/s ({:.0} ns each); release {} inspection {} hold {}",
        f64::from(PARCELS) / secs,
        secs * 1e9 / f64::from(PARCELS),
        lanes[0],
        lanes[1],
        lanes[2]
    );
    // A row of docs/performance.md's table (benches/table collects them).
    println!(
        "| core: decisions per second (1,000,000 manifests, one core) | {:.0} | `cargo bench --bench line` |",
        f64::from(PARCELS) / secs
    );

    // 2. The whole Line, per parcel: gate, scan, cut-off, destination written, divert.
    let mut line = Line::new(cfg.line.settings(), policy);
    for (m, _) in index.into_values() {
        line.preload_manifest(m);
    }
    let s = cfg.line.settings();
    let codes: Vec<Vec<String>> = ids
        .iter()
        .map(|id| match id {
            Identity::Waybill { waybill } => vec![waybill.to_string()],
            Identity::BadCheckDigit => vec!["EA123456784CN".into()],
            _ => vec![],
        })
        .collect();
    let mut out = Vec::with_capacity(64);
    let mut records = 0u64;
    let period_ms = 1_500; // one parcel every 1.5 s of line time
    let t = Stopwatch::start();
    for (i, codes) in codes.into_iter().enumerate() {
        let n = i as u32 + 1;
        let at = u64::from(n) * period_ms;
        let tracking = TrackingId(n);
        line.handle(
            Input::Gate { tracking, trigger: TriggerCount(n), length_mm: Some(400), at: None },
            Millis(at),
            &mut out,
        );
        line.handle(Input::Scan { trigger: Some(TriggerCount(n)), codes }, Millis(at + 40), &mut out);
        line.handle(Input::Tick, Millis(at + s.gate_to_cutoff_ms), &mut out);
        let mut lane_id = s.lanes.hold;
        for o in &out {
            if let Output::SetDestination { lane_id: id, .. } = o {
                lane_id = *id;
            }
        }
        records += out.len() as u64;
        out.clear();
        line.handle(Input::DestinationWritten { tracking, lane_id }, Millis(at + s.gate_to_cutoff_ms + 5), &mut out);
        line.handle(Input::Divert { tracking, lane_id }, Millis(at + s.gate_to_end_ms), &mut out);
        records += out.len() as u64;
        out.clear();
    }
    let secs = t.elapsed_secs_f64();
    let st = line.stats();
    println!(
        "line: {:.0} parcels/s, {:.0} ns per parcel (5 inputs, {:.1} outputs each); confirmed {} missorts {} in flight {}",
        f64::from(PARCELS) / secs,
        secs * 1e9 / f64::from(PARCELS),
        records as f64 / f64::from(PARCELS),
        st.confirmed,
        st.missorts,
        line.in_flight()
    );
}
