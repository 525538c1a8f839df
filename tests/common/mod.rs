//! Fixtures shared by the pure (socket-free) tests of the core, and the MQTT tests' ([`mqtt`]).
#![allow(dead_code)] // each test binary uses its own subset

pub mod mqtt;
pub mod service;
pub mod webdriver;

use sortline::core::*;
use std::sync::Arc;

pub const CUTOFF_MS: u64 = 20_000;
pub const END_MS: u64 = 30_000;
pub const SCAN_TIMEOUT_MS: u64 = 1_000;
pub const LANES: LaneMap = LaneMap { release: 1, inspection: 2, hold: 3 };

pub fn settings() -> LineSettings {
    LineSettings {
        lanes: LANES,
        gate_to_cutoff_ms: CUTOFF_MS,
        gate_to_end_ms: END_MS,
        scan_timeout_ms: SCAN_TIMEOUT_MS,
        scan_match_window_ms: 2_000,
        confirm_grace_ms: 5_000,
        max_in_flight: 8,
        max_pending_scans: 4,
        carriers: Carriers::default(),
        untriggered_after_ms: 300,
        untriggered_before_ms: 0,
        xray: None,
        review_window_ms: None,
        shadow: false,
    }
}

pub fn policy() -> Policy {
    Policy {
        secret: SiteSecret::from_bytes([5; 16]),
        sample_rate: PerChannel { green: 0.0, red: 0.0 },
        xray_review_ratio: PerChannel { green: 0.0, red: 0.0 },
        rules: Arc::new(RuleSet::default()),
        targets: vec![],
        max_parcel_length_mm: 1000,
        weight_tolerance: Some(WeightTolerance { pct: 10.0, min_g: 100 }),
    }
}

/// The `n`th valid S10 waybill.
pub fn waybill(n: u32) -> Waybill {
    let serial = format!("{:08}", n % 100_000_000);
    let cd = sortline::core::waybill::s10_check_digit(serial.as_bytes().try_into().unwrap());
    Waybill::parse(&format!("EA{serial}{cd}CN")).unwrap()
}

pub fn manifest(n: u32) -> Manifest {
    Manifest {
        waybill: waybill(n),
        list_no: format!("L{n:06}"),
        version: 1,
        channel: Channel::Green,
        status: ManifestStatus::Accepted,
        licence_required: false,
        platform_targeted: false,
        consignor: "Suzhou Silk Ltd".into(),
        consignee: format!("Buyer {n}"),
        country: "US".into(),
        gross_weight_g: 700,
        items: vec![Item {
            name: "T恤 T-shirt".into(),
            hs_code: "610910".into(),
            quantity: 2,
            value_minor: 9_900,
            currency: "CNY".into(),
        }],
    }
}

/// An interception rule on one HS code prefix, and nothing else.
pub fn hs_rule(id: &str, action: Lane, hs_prefix: &str) -> InterceptionRule {
    InterceptionRule {
        id: id.into(),
        action,
        reason: "test".into(),
        hs_prefixes: vec![hs_prefix.into()],
        keywords: vec![],
        min_item_value_minor: None,
        min_total_value_minor: None,
        min_gross_weight_g: None,
        countries: vec![],
        consignors: vec![],
        consignees: vec![],
    }
}

/// A declaration list as the platform sends it (JSON Lines schema, docs/manifest.md).
pub fn declaration_json(waybill: &str, version: u64) -> serde_json::Value {
    serde_json::json!({
        "waybill": waybill, "list_no": format!("L-{waybill}"), "version": version,
        "platform_time": "2026-03-01T08:00:00Z", "direction": "export",
        "ecommerce_ref": "ORD-1", "logistics_ref": "LOG-1", "payment_ref": "PAY-1",
        "channel": "green", "status": "accepted", "licence_required": false, "platform_targeted": false,
        "consignor": "Suzhou Silk Ltd", "consignee": "Jane Doe", "country": "US", "gross_weight_g": 800,
        "items": [{"name": "连衣裙 Silk Dress", "hs_code": "620442", "quantity": 1, "unit": "pcs",
                   "value_minor": 25000, "currency": "CNY"}]
    })
}

pub fn officer(name: &str) -> OfficerId {
    OfficerId::new(name).unwrap()
}

/// A line plus everything it said, stepped by hand in virtual time.
pub struct Bench {
    pub line: Line,
    pub out: Vec<Output>,
    pub now: u64,
}

impl Bench {
    pub fn new(policy: Policy) -> Bench {
        Bench { line: Line::new(settings(), policy), out: Vec::new(), now: 0 }
    }

    pub fn at(&mut self, ms: u64, input: Input) -> &mut Bench {
        assert!(ms >= self.now, "time runs forward");
        self.now = ms;
        self.line.handle(input, Millis(ms), &mut self.out);
        self
    }

    pub fn tick(&mut self, ms: u64) -> &mut Bench {
        self.at(ms, Input::Tick)
    }

    pub fn manifest(&mut self, m: Manifest) -> &mut Bench {
        let now = self.now;
        self.at(now, Input::Manifest(Arc::new(m)))
    }

    pub fn gate(&mut self, ms: u64, tracking: u32) -> &mut Bench {
        self.at(
            ms,
            Input::Gate {
                tracking: TrackingId(tracking),
                trigger: TriggerCount(tracking),
                length_mm: Some(400),
                at: None,
            },
        )
    }

    pub fn scan(&mut self, ms: u64, trigger: u32, codes: &[&str]) -> &mut Bench {
        self.at(
            ms,
            Input::Scan { trigger: Some(TriggerCount(trigger)), codes: codes.iter().map(|c| c.to_string()).collect() },
        )
    }

    /// A scan from a scanner that sends no trigger count.
    pub fn untriggered(&mut self, ms: u64, codes: &[&str]) -> &mut Bench {
        self.at(ms, Input::Scan { trigger: None, codes: codes.iter().map(|c| c.to_string()).collect() })
    }

    /// The parcel the line knows under tracking id `t` now.
    pub fn id(&self, t: u32) -> ParcelId {
        self.line.parcel_id(TrackingId(t)).unwrap_or_else(|| panic!("no parcel T{t} on the line"))
    }

    /// The last review asked for tracking id `t`.
    pub fn review(&self, t: u32) -> ReviewRequest {
        self.out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::ReviewRequested(r) if r.parcel.tracking.0 == t => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no review asked for T{t}"))
    }

    /// An officer's verdict on the last review of `t`, named as the screen names it.
    pub fn verdict(&mut self, ms: u64, t: u32, who: &str, verdict: Verdict) -> &mut Bench {
        let r = self.review(t);
        let input = Input::Verdict {
            parcel: r.parcel,
            review: r.review,
            image_sha256: r.image_sha256,
            officer: officer(who),
            verdict,
        };
        self.at(ms, input)
    }

    /// The pre-screen's answer to the last screening asked for `t`.
    pub fn screened(&mut self, ms: u64, t: u32, flags: &[&str]) -> &mut Bench {
        let (parcel, sha256, manifest_version) = self
            .out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::ScreenImage { parcel, sha256, manifest, .. } if parcel.tracking.0 == t => {
                    Some((*parcel, sha256.clone(), manifest.as_ref().map(|m| m.version)))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no screening asked for T{t}"));
        let flags = flags.iter().map(|f| Arc::from(*f)).collect();
        self.at(ms, Input::XrayScreened { parcel, sha256, manifest_version, flags })
    }

    /// An officer watching the live line moves `t` to review by hand.
    pub fn transfer(&mut self, ms: u64, t: u32, who: &str) -> &mut Bench {
        let parcel = self.id(t);
        self.at(ms, Input::ManualTransfer { parcel, officer: officer(who) })
    }

    pub fn destinations(&self, tracking: u32) -> Vec<Lane> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::SetDestination { parcel, lane, .. } if parcel.tracking.0 == tracking => Some(*lane),
                _ => None,
            })
            .collect()
    }

    pub fn decision(&self, tracking: u32) -> Option<(Lane, Vec<Reason>)> {
        self.out.iter().find_map(|o| match o {
            Output::Record(Record::Decision { parcel, lane, reasons, .. }) if parcel.tracking.0 == tracking => {
                Some((*lane, reasons.clone()))
            }
            _ => None,
        })
    }

    pub fn records(&self, kind: &str) -> Vec<&Record> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Record(r) if r.kind() == kind => Some(r),
                _ => None,
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<&ParcelReport> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::ParcelDone(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    pub fn alarms(&self, code: &str) -> usize {
        self.out.iter().filter(|o| matches!(o, Output::Alarm(a) if a.code == code)).count()
    }
}
