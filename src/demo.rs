//! `sortline demo`: the line's core against the built-in simulator, in
//! virtual time, with every record written to the real audit chain.
//!
//! The simulator is the referee: the summary's lane counts and failure
//! counts come from where parcels physically went, not from the core's own
//! claims; `unaccounted` comes from reading the audit chain back.

use crate::audit::{self, AuditLog, NewEntry, Signer};
use crate::clock;
use crate::config::Loaded;
use crate::core::*;
use crate::recorder;
use serde::Serialize;
use siphasher::sip::SipHasher13;
use sortline_sim as sim;
use std::collections::HashMap;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("audit record: {0}")]
    Audit(#[from] audit::AuditError),
    #[error("writing the live view: {0}")]
    Output(#[from] std::io::Error),
    #[error("the simulator produced {what}: {detail}")]
    Sim { what: &'static str, detail: String },
    #[error("configuration does not fit the simulator: {0}")]
    Geometry(String),
}

pub struct DemoOptions {
    pub parcels: u32,
    pub seed: u64,
    pub data_dir: PathBuf,
    /// Turn on the physical faults that end in a wrong (but never unsafe) lane.
    pub faults: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lanes {
    pub release: u64,
    pub inspection: u64,
    pub hold: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScannerSummary {
    pub no_reads: u32,
    pub misreads: u32,
    pub ambiguous: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditSummary {
    pub entries: u64,
    pub checkpoints: u64,
    pub verified: bool,
    pub head: String,
}

/// The demo's JSON summary. Field names are a contract: add, don't rename.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Physical parcels inducted.
    pub parcels: u32,
    /// Where parcels physically left the line (the simulator's count).
    pub lanes: Lanes,
    /// Physically released without a release destination, or against ground truth.
    pub unsafe_releases: u32,
    /// Physical lane differs from the lane decided.
    pub wrong_lane: u32,
    /// Parcels without a complete record in the audit chain.
    pub unaccounted: u32,
    /// Label truth from the simulator.
    pub scanner: ScannerSummary,
    /// Released parcels carrying undeclared goods: screening misses, reported
    /// apart from `unsafe_releases` (which covers what the line could know).
    pub undeclared_released: u32,
    pub seed: u64,
    pub faults: bool,
    pub data_dir: PathBuf,
    /// What the core decided (its own claim, beside the referee's `lanes`).
    pub decided: Lanes,
    pub stats: LineStats,
    pub late_destinations: u32,
    pub no_destination: u32,
    pub injected: Injected,
    pub audit: AuditSummary,
    pub virtual_ms: u64,
    pub wall_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    pub missed_diverts: u32,
    pub slips: u32,
    pub bounces: u32,
    pub merged: u32,
}

/// The demo's site secret: derived from the seed so that a run is
/// reproducible. A real line reads its secret from configuration.
pub fn demo_secret(seed: u64) -> SiteSecret {
    let half = |tag: u64| {
        let mut h = SipHasher13::new_with_keys(0x736f_7274_6c69_6e65, tag);
        h.write_u64(seed);
        h.finish().to_le_bytes()
    };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&half(1));
    key[8..].copy_from_slice(&half(2));
    SiteSecret::from_bytes(key)
}

fn geometry(cfg: &Loaded) -> Result<sim::Geometry, DemoError> {
    let g = &cfg.line.geometry;
    let lanes = cfg.line.lanes;
    let mm = |v: i64| u32::try_from(v).map_err(|_| DemoError::Geometry(format!("{v} mm")));
    let role = |lane: Lane| match lane {
        Lane::Release => sim::LaneRole::Release,
        Lane::Inspection => sim::LaneRole::Inspection,
        Lane::Hold => sim::LaneRole::Hold,
    };
    Ok(sim::Geometry {
        belt_speed_mm_s: mm(g.belt_speed_mm_s)?,
        gate_mm: mm(g.gate_mm)?,
        xray_mm: mm(g.xray_mm)?,
        diverters: g
            .diverters
            .iter()
            .map(|d| {
                Ok(sim::Diverter { lane_id: lanes.id(d.lane), role: role(d.lane), position_mm: mm(d.position_mm)? })
            })
            .collect::<Result<_, DemoError>>()?,
        end_mm: mm(g.end_mm)?,
        end_lane_id: lanes.hold,
        latch_margin_mm: mm(g.latch_margin_mm)?,
    })
}

fn manifest(m: &sim::SimManifest) -> Result<Manifest, DemoError> {
    Ok(Manifest {
        waybill: Waybill::parse(&m.waybill).map_err(|e| DemoError::Sim {
            what: "a manifest with a bad waybill",
            detail: format!("{}: {e}", m.waybill),
        })?,
        list_no: m.list_no.clone(),
        version: m.version,
        channel: match m.channel {
            sim::SimChannel::Green => Channel::Green,
            sim::SimChannel::Red => Channel::Red,
        },
        status: match m.status {
            sim::SimStatus::Accepted => ManifestStatus::Accepted,
            sim::SimStatus::Rejected => ManifestStatus::Rejected,
        },
        licence_required: m.licence_required,
        platform_targeted: m.platform_targeted,
        consignor: m.consignor.clone(),
        consignee: m.consignee.clone(),
        country: m.country.clone(),
        gross_weight_g: m.gross_weight_g,
        items: m
            .items
            .iter()
            .map(|i| Item {
                name: i.name.clone(),
                hs_code: i.hs_code.clone(),
                quantity: i.quantity,
                value_minor: i.value_minor,
                currency: i.currency.clone(),
            })
            .collect(),
    })
}

fn officer(name: &str) -> Result<OfficerId, DemoError> {
    OfficerId::new(name).map_err(|e| DemoError::Sim { what: "a bad officer id", detail: e.to_string() })
}

fn input(event: sim::SimEvent) -> Result<Input, DemoError> {
    use sim::SimEvent as E;
    Ok(match event {
        E::Gate { tracking, trigger, length_mm } => {
            Input::Gate { tracking: TrackingId(tracking), trigger: TriggerCount(trigger), length_mm: Some(length_mm) }
        }
        E::Scan { trigger, codes } => Input::Scan { trigger: TriggerCount(trigger), codes },
        E::XrayEntered { tracking, image_seq } => Input::XrayEntered { tracking: TrackingId(tracking), image_seq },
        E::Verdict { tracking, officer: o, verdict } => Input::Verdict {
            tracking: TrackingId(tracking),
            officer: officer(&o)?,
            verdict: match verdict {
                sim::SimVerdict::Release => Verdict::Release,
                sim::SimVerdict::Inspect => Verdict::Inspect,
                sim::SimVerdict::Hold => Verdict::Hold,
            },
        },
        E::ManualTransfer { tracking, officer: o } => {
            Input::ManualTransfer { tracking: TrackingId(tracking), officer: officer(&o)? }
        }
        E::Divert { tracking, lane_id } => Input::Divert { tracking: TrackingId(tracking), lane_id },
        E::Lost { tracking } => Input::Lost { tracking: TrackingId(tracking) },
        E::InspectionResult { waybill, officer: o, discrepancy } => Input::InspectionResult {
            waybill: Waybill::parse(&waybill).map_err(|e| DemoError::Sim {
                what: "an inspection result with a bad waybill",
                detail: format!("{waybill}: {e}"),
            })?,
            officer: officer(&o)?,
            discrepancy,
        },
    })
}

/// The core, the world and the record, stepped together in virtual time.
struct Harness<'w> {
    line: Line,
    world: sim::World,
    audit: AuditLog,
    /// Wall-clock time of virtual time zero, for the records' wall column.
    epoch_wall_ms: i64,
    pending: Vec<NewEntry>,
    /// Parcels that left the line, shown after the commit that makes their story durable.
    done: Vec<ParcelReport>,
    live: &'w mut dyn Write,
}

impl Harness<'_> {
    fn handle(&mut self, input: Input, now: Millis) -> Result<(), DemoError> {
        let mut out = Vec::new();
        self.line.handle(input, now, &mut out);
        self.route(out, now)
    }

    /// Applies the core's outputs. Records reach the disk before any
    /// destination they justify goes to the PLC.
    fn route(&mut self, out: Vec<Output>, now: Millis) -> Result<(), DemoError> {
        let wall = self.epoch_wall_ms + now.0 as i64;
        let mut destinations = Vec::new();
        for o in out {
            match o {
                Output::Record(r) => self.pending.push(recorder::entry(&r, now, wall)),
                Output::Alarm(a) => {
                    tracing::debug!(code = a.code, tracking = ?a.tracking, "{}", a.message);
                    self.pending.push(recorder::alarm_entry(&a, now, wall));
                }
                Output::SetDestination { tracking, lane_id, .. } => destinations.push((tracking, lane_id)),
                Output::ReviewRequested(r) => self.world.request_review(now.0, r.tracking.0),
                Output::ReviewClosed { .. } => {}
                // Shown once its story (destination written, divert, completed) is durable.
                Output::ParcelDone(report) => self.done.push(report),
            }
        }
        if destinations.is_empty() {
            return Ok(());
        }
        self.commit()?;
        for (tracking, lane_id) in destinations {
            self.world.set_destination(now.0, tracking.0, lane_id);
            self.handle(Input::DestinationWritten { tracking, lane_id }, now)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DemoError> {
        if !self.pending.is_empty() {
            self.audit.append(&self.pending)?;
            self.pending.clear();
        }
        for report in std::mem::take(&mut self.done) {
            self.show(&report)?;
        }
        Ok(())
    }

    fn show(&mut self, p: &ParcelReport) -> Result<(), DemoError> {
        let lane = |l: Option<Lane>| l.map_or("-", Lane::as_str);
        let waybill = p.waybill.map_or_else(|| "(unidentified)".to_string(), |w| w.to_string());
        let channel = p.channel.map_or("-", Channel::as_str);
        let fate = if p.lost {
            "LOST".to_string()
        } else if p.confirmed != p.decided {
            format!("MISSORT->{}", lane(p.confirmed))
        } else {
            String::new()
        };
        writeln!(
            self.live,
            "{:>8}  {:<18} {:<5}  {:<10} {:<9} {}",
            p.tracking.to_string(),
            waybill,
            channel,
            lane(p.decided),
            fate,
            p.decided.map(|lane| recorder::reasons_text(lane, &p.reasons)).unwrap_or_default()
        )?;
        Ok(())
    }
}

fn open_audit(db: &Path, signer: Signer, cfg: &crate::config::Audit) -> Result<AuditLog, DemoError> {
    let mut log = AuditLog::open(db, Some(signer), cfg.checkpoint_every)?;
    log.set_checkpoint_interval_ms(Some(cfg.checkpoint_interval_s.saturating_mul(1000)));
    Ok(log)
}

/// Runs the demo; the live view goes to `live`.
pub fn run(cfg: &Loaded, opts: &DemoOptions, live: &mut dyn Write) -> Result<Summary, DemoError> {
    let stopwatch = clock::Stopwatch::start();
    std::fs::create_dir_all(&opts.data_dir)?;
    let db = opts.data_dir.join(audit::DB_FILE);
    let signer = Signer::load_or_init(&opts.data_dir.join(audit::KEY_FILE))?;
    let mut scenario = sim::Scenario::demo(opts.parcels, opts.seed);
    if opts.faults {
        scenario = scenario.with_faults();
    }
    let world = sim::World::new(scenario, geometry(cfg)?);
    let policy = cfg.line.policy(demo_secret(opts.seed), cfg.rules.clone());
    let mut h = Harness {
        line: Line::new(cfg.line.settings(), policy),
        world,
        audit: open_audit(&db, signer, &cfg.line.audit)?,
        epoch_wall_ms: clock::wall_ms(),
        pending: Vec::new(),
        done: Vec::new(),
        live,
    };
    let start = serde_json::json!({
        "mode": "demo", "seed": opts.seed, "parcels": opts.parcels, "faults": opts.faults,
        "site": cfg.line.site.site_id, "line_id": cfg.line.site.line_id, "version": env!("CARGO_PKG_VERSION"),
        "line": h.line.snapshot(),
    });
    h.pending.push(NewEntry {
        kind: "start".into(),
        wall_ms: h.epoch_wall_ms,
        mono_ms: 0,
        tracking: None,
        waybill: None,
        payload: start,
    });

    // The platform's lists arrive before the parcels do.
    let manifests: Vec<Manifest> = h.world.manifests().iter().map(manifest).collect::<Result<_, _>>()?;
    for m in manifests {
        h.handle(Input::Manifest(Arc::new(m)), Millis(0))?;
    }
    // A risk officer's standing target, so the demo shows one at work.
    h.handle(
        Input::TargetAdd(ManualTarget {
            id: "MT-DEMO-PERFUME".into(),
            criterion: TargetCriterion::HsPrefix("3303".into()),
            author: OfficerId::new("risk-01").map_err(|e| DemoError::Sim { what: "id", detail: e.to_string() })?,
            reason: "intelligence: undeclared alcohol in perfume bottles".into(),
            created_at: Millis(0),
            expires_at: None,
        }),
        Millis(0),
    )?;
    writeln!(h.live, "{:>8}  {:<18} {:<5}  {:<10} {:<9} reasons", "tracking", "waybill", "chan", "lane", "")?;

    let mut events = Vec::new();
    let mut now = 0;
    loop {
        let next = match (h.world.next_event_time(), h.line.next_timeout().map(|t| t.0)) {
            (None, None) => break,
            (a, b) => a.into_iter().chain(b).min().unwrap_or(now),
        };
        now = next.max(now);
        events.clear();
        h.world.advance(now, &mut events);
        for (at, event) in events.drain(..) {
            h.handle(input(event)?, Millis(at))?;
        }
        if h.line.next_timeout().is_some_and(|t| t.0 <= now) {
            h.handle(Input::Tick, Millis(now))?;
        }
    }
    h.pending.push(NewEntry {
        kind: "stop".into(),
        wall_ms: h.epoch_wall_ms + now as i64,
        mono_ms: now,
        tracking: None,
        waybill: None,
        payload: serde_json::to_value(h.line.stats()).unwrap_or_default(),
    });
    h.commit()?;

    let report = h.world.report();
    let stats = h.line.stats().clone();
    drop(h);
    let verified = audit::verify(&db, None)?;
    let unaccounted = unaccounted(&db, &report)?;
    Ok(Summary {
        parcels: report.parcels,
        lanes: Lanes {
            release: report.lanes.release.into(),
            inspection: report.lanes.inspection.into(),
            hold: report.lanes.hold.into(),
        },
        unsafe_releases: report.unsafe_releases,
        wrong_lane: report.wrong_lane,
        unaccounted,
        scanner: ScannerSummary {
            no_reads: report.scanner.no_reads,
            misreads: report.scanner.misreads,
            ambiguous: report.scanner.ambiguous,
        },
        undeclared_released: report.undeclared_released,
        seed: opts.seed,
        faults: opts.faults,
        data_dir: opts.data_dir.clone(),
        decided: Lanes {
            release: stats.decided_release,
            inspection: stats.decided_inspection,
            hold: stats.decided_hold,
        },
        stats,
        late_destinations: report.late_destinations,
        no_destination: report.no_destination,
        injected: Injected {
            missed_diverts: report.missed_diverts,
            slips: report.slips,
            bounces: report.bounces,
            merged: report.merged,
        },
        audit: AuditSummary {
            entries: verified.entries,
            checkpoints: verified.checkpoints,
            verified: verified.first_break.is_none(),
            head: hex::encode(verified.head),
        },
        virtual_ms: now,
        wall_ms: stopwatch.elapsed_ms(),
    })
}

/// Parcels the referee saw whose story the chain does not tell in full:
/// gate, decision, destination written, and how it left the line.
fn unaccounted(db: &Path, report: &sim::Report) -> Result<u32, DemoError> {
    #[derive(Default)]
    struct Story {
        gate: bool,
        decision: bool,
        written: bool,
        completed: bool,
    }
    let mut stories: HashMap<u32, Story> = HashMap::new();
    audit::entries(db, |e| {
        if let Some(t) = e.tracking {
            let s = stories.entry(t).or_default();
            match e.kind.as_str() {
                "gate" => s.gate = true,
                "decision" => s.decision = true,
                "destination_written" => s.written = true,
                "completed" => s.completed = true,
                _ => {}
            }
        }
        Ok(())
    })?;
    let complete = |t: &u32| stories.get(t).is_some_and(|s| s.gate && s.decision && s.written && s.completed);
    Ok(report.outcomes.iter().filter(|o| !o.tracking.as_ref().is_some_and(complete)).count() as u32)
}

/// The closing table.
pub fn print_table(s: &Summary, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w)?;
    writeln!(w, "lane         physical   decided")?;
    for (name, physical, decided) in [
        ("release", s.lanes.release, s.decided.release),
        ("inspection", s.lanes.inspection, s.decided.inspection),
        ("hold", s.lanes.hold, s.decided.hold),
    ] {
        writeln!(w, "{name:<12} {physical:>8}  {decided:>8}")?;
    }
    writeln!(
        w,
        "parcels {}  unsafe releases {}  wrong lane {}  unaccounted {}",
        s.parcels, s.unsafe_releases, s.wrong_lane, s.unaccounted
    )?;
    writeln!(
        w,
        "no-reads {}  misreads {}  ambiguous {}  reviews {}  late {}  missorts {}  lost {}",
        s.scanner.no_reads,
        s.scanner.misreads,
        s.scanner.ambiguous,
        s.stats.reviews,
        s.stats.late,
        s.stats.missorts,
        s.stats.lost
    )?;
    writeln!(
        w,
        "audit chain: {} entries, {} signed checkpoints, {}",
        s.audit.entries,
        s.audit.checkpoints,
        if s.audit.verified { "verified" } else { "BROKEN" }
    )?;
    writeln!(
        w,
        "simulated {:.1} min of line time in {:.1} s",
        s.virtual_ms as f64 / 60_000.0,
        s.wall_ms as f64 / 1000.0
    )
}
