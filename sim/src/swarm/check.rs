//! The checkers: the safety rules as the referee sees them, after every step and at the end.
//! They know the truth the core cannot (which parcel an image shows, which list the platform
//! last sent), and they see the record only once it is committed.

use super::Failure;
use crate::{Ms, Report};
use sortline::core::{
    Channel, Lane, Manifest, ManifestStatus, ParcelId, ParcelReport, Reason, Record, Verdict, Waybill,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What the platform last sent for a waybill, as far as the line was told.
#[derive(Clone, Copy, Debug)]
struct Sent {
    version: u64,
    releasable: bool,
    gross_weight_g: u32,
}

/// What the line's sensors said of a World parcel (a merged pair is one).
#[derive(Default, Clone, Copy, Debug)]
pub struct Evidence {
    pub length_mm: Option<u32>,
    pub weight_g: Option<u32>,
    pub flagged: bool,
    /// Codes the scanner read at its trigger (two or more: the core must not release).
    pub codes: usize,
}

/// A parcel's story in the committed record.
#[derive(Default, Clone, Copy)]
struct Story {
    gate: bool,
    decision: bool,
    written: bool,
    completed: bool,
    /// A PLC event about it after the core that knew it was gone (divert, lost, forced hold).
    exit: bool,
}

/// A mark on an uncommitted entry: what it tells of which World parcel.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    Gate(u32),
    Decision(u32),
    Written(u32),
    Completed(u32),
    Exit(u32),
}

#[derive(Default)]
pub struct Checker {
    sent: HashMap<Waybill, Sent>,
    /// Release decisions committed, by parcel identity: the image they saw.
    releases: HashMap<ParcelId, Option<Arc<str>>>,
    stories: HashMap<u32, Story>,
    /// World parcels a release destination reached the PLC for in time.
    authorised: HashSet<u32>,
    /// World parcels on the line when the host lost their thread: true when the PLC lost it
    /// (a restart, lost events: the host is told, and the record says so), false when only
    /// the daemon did (a crash: the PLC's ring still tells the next run how they left).
    disrupted: HashMap<u32, bool>,
    /// The core's last account of each World parcel.
    reports: HashMap<u32, ParcelReport>,
    pub failures: Vec<Failure>,
    /// Released on an image that showed another parcel, on a station that names no barcode
    /// (the core cannot tell; a screening miss, counted, not a failure).
    pub released_on_swapped_image: u32,
    pub evidence: HashMap<u32, Evidence>,
    /// The line's length limit and weight tolerance, to tell what the sensors could show.
    pub max_length_mm: u32,
    /// The line has an X-ray station: release needs an image.
    pub xray: bool,
    pub weight: Option<sortline::core::WeightTolerance>,
    /// Parcels of merged pairs released with nothing to show the core the second parcel (its
    /// label unread, the pair's length and weight within the limits of the read parcel, the
    /// image not flagged), or released by an officer who looked at the pair's image (counted,
    /// not a failure; see docs/simulation.md).
    pub merged_unseen: u32,
    /// World parcels with entries in the last uncommitted moments before a crash.
    crash_tail: HashSet<u32>,
    /// Of those, parcels whose story is incomplete because of it: the PLC's events the dead
    /// run had taken in, and not yet committed, are not read again by the next run (a gap
    /// the swarm found; see docs/simulation.md).
    pub lost_in_crash: u32,
}

fn releasable(m: &Manifest) -> bool {
    m.channel == Channel::Green && m.status == ManifestStatus::Accepted && !m.licence_required && !m.platform_targeted
}

impl Checker {
    fn fail(&mut self, at: Ms, check: &'static str, detail: String) {
        // The first few say enough; a broken rule tends to break thousands of times.
        if self.failures.len() < 20 {
            self.failures.push(Failure { at, check, detail });
        }
    }

    /// A list reaches the core.
    pub fn manifest_sent(&mut self, m: &Manifest) {
        let newer = self.sent.get(&m.waybill).is_none_or(|s| m.version > s.version);
        if newer {
            let sent = Sent { version: m.version, releasable: releasable(m), gross_weight_g: m.gross_weight_g };
            self.sent.insert(m.waybill, sent);
        }
    }

    /// A record the core just produced, before it is committed: a release must rest on the
    /// list the platform last sent, and on an image of that very parcel (`image_truth`: the
    /// parcel the image shows, when the station knows it and names its barcode).
    pub fn decided(
        &mut self,
        at: Ms,
        record: &Record,
        image_of: impl Fn(&str) -> Option<(u32, bool)>,
        world: Option<u32>,
    ) {
        let Record::Decision { parcel, waybill, lane: Lane::Release, manifest_version, image_sha256, .. } = record
        else {
            return;
        };
        let sent = waybill.and_then(|w| self.sent.get(&w).copied());
        match (sent, manifest_version) {
            (Some(s), Some(v)) if s.version == *v && s.releasable => {}
            (s, v) => self.fail(
                at,
                "release on the list last sent",
                format!("{parcel} released on list version {v:?}; the platform last sent {s:?}"),
            ),
        }
        match image_sha256.as_deref().map(&image_of) {
            Some(Some((shows, named))) if Some(shows) != world => {
                if named {
                    self.fail(
                        at,
                        "release on the parcel's own image",
                        format!("{parcel} released on another parcel's image"),
                    );
                } else {
                    self.released_on_swapped_image += 1;
                }
            }
            Some(None) => {
                self.fail(at, "release on a real image", format!("{parcel} released on an image no station made"))
            }
            None if self.xray => self.fail(at, "release on a real image", format!("{parcel} released with no image")),
            _ => {}
        }
    }

    /// Entries reach the record.
    pub fn committed(&mut self, records: &[(Option<Record>, Option<Mark>)]) {
        for (record, mark) in records {
            if let Some(Record::Decision { parcel, lane: Lane::Release, image_sha256, .. }) = record {
                self.releases.insert(*parcel, image_sha256.clone());
            }
            if let Some(mark) = mark {
                let (world, f): (u32, fn(&mut Story)) = match *mark {
                    Mark::Gate(w) => (w, |s| s.gate = true),
                    Mark::Decision(w) => (w, |s| s.decision = true),
                    Mark::Written(w) => (w, |s| s.written = true),
                    Mark::Completed(w) => (w, |s| s.completed = true),
                    Mark::Exit(w) => (w, |s| s.exit = true),
                };
                f(self.stories.entry(world).or_default());
            }
        }
    }

    /// Whether nothing the core had showed a merged pair was two parcels.
    fn unseen(&self, world: u32, report: Option<&ParcelReport>) -> bool {
        let Some(e) = self.evidence.get(&world) else { return false };
        let declared = report.and_then(|r| r.waybill).and_then(|w| self.sent.get(&w)).map(|s| s.gross_weight_g);
        let weight_fits = match (self.weight, e.weight_g, declared) {
            (Some(t), Some(measured), Some(declared)) => !t.mismatch(declared, measured),
            (None, _, _) => true,
            _ => false,
        };
        e.codes <= 1 && !e.flagged && e.length_mm.is_some_and(|l| l <= self.max_length_mm) && weight_fits
    }

    /// The daemon died: every parcel whose story it had begun and not finished is one whose
    /// thread it lost (the next run hears of it only through the PLC's ring).
    pub fn crashed(&mut self, uncommitted: &[(Option<Record>, Option<Mark>)]) {
        for (_, mark) in uncommitted {
            if let Some(Mark::Gate(w) | Mark::Decision(w) | Mark::Written(w) | Mark::Completed(w) | Mark::Exit(w)) =
                mark
            {
                self.crash_tail.insert(*w);
            }
        }
        let open: Vec<u32> = self.stories.iter().filter(|(_, s)| s.gate && !s.completed).map(|(&w, _)| w).collect();
        for w in open {
            self.disrupt(w, false);
        }
    }

    pub fn disrupt(&mut self, world: u32, by_plc: bool) {
        *self.disrupted.entry(world).or_insert(by_plc) |= by_plc;
    }

    pub fn disrupted(&self) -> usize {
        self.disrupted.len()
    }

    pub fn report(&mut self, world: u32, report: ParcelReport) {
        self.reports.insert(world, report);
    }

    /// A destination is about to leave for the PLC: a release only for a parcel whose
    /// release decision is in the record.
    pub fn destination(&mut self, at: Ms, parcel: ParcelId, lane: Option<Lane>) {
        if lane == Some(Lane::Release) && !self.releases.contains_key(&parcel) {
            self.fail(
                at,
                "release recorded before it is sent",
                format!("release sent for {parcel} with no release decision committed"),
            );
        }
    }

    /// The PLC latched a release in time for this World parcel.
    pub fn authorised(&mut self, world: u32) {
        self.authorised.insert(world);
    }

    pub fn bound(&mut self, at: Ms, what: &'static str, len: usize, bound: usize) {
        if len > bound {
            self.fail(at, "queues within their bounds", format!("{what}: {len} over its bound {bound}"));
        }
    }

    /// The end: every parcel's fate against the record. Returns (unaccounted, wrong lanes,
    /// of which unrecorded).
    pub fn finish(&mut self, at: Ms, report: &Report) -> (u32, u32, u32) {
        if report.in_flight > 0 || report.not_inducted > 0 {
            self.fail(
                at,
                "every parcel leaves the line",
                format!("{} on the belt, {} at the infeed", report.in_flight, report.not_inducted),
            );
        }
        let (mut unaccounted, mut wrong, mut unrecorded) = (0, 0, 0);
        let mut detail = BTreeMap::new();
        for o in &report.outcomes {
            let Some(world) = o.tracking else { continue };
            if o.physical == Lane::Release && o.must_not_release {
                let r = self.reports.get(&world);
                // An officer who looked at the pair's image and released it decided that.
                let officer_released = r.is_some_and(|r| {
                    r.reasons.iter().any(|x| matches!(x, Reason::OfficerVerdict { verdict: Verdict::Release, .. }))
                });
                if o.truth == "merged" && (self.unseen(world, r) || officer_released) {
                    self.merged_unseen += 1;
                    continue;
                }
                self.fail(
                    at,
                    "no unsafe release",
                    format!(
                        "parcel {world} ({}, truth {}) released; the core decided {:?} on {:?}; sensors {:?}",
                        o.waybill,
                        o.truth,
                        r.and_then(|r| r.decided),
                        r.map(|r| &r.reasons),
                        self.evidence.get(&world)
                    ),
                );
            }
            if o.physical == Lane::Release && !self.authorised.contains(&world) {
                self.fail(
                    at,
                    "release earned",
                    format!("parcel {world} left by release without a release latched for it"),
                );
            }
            let s = self.stories.get(&world).copied().unwrap_or_default();
            // Decided and sent, or reported lost or held by the PLC before it could be.
            let plc_took_it = self.reports.get(&world).is_some_and(|r| r.lost || r.held_by_plc.is_some());
            let complete = s.gate && s.completed && (s.decision && s.written || plc_took_it);
            let explained = match self.disrupted.get(&world) {
                Some(true) => true,
                Some(false) => s.completed || s.exit || !s.gate,
                None => false,
            };
            if !complete && !explained && self.crash_tail.contains(&world) {
                self.lost_in_crash += 1;
            } else if !complete && !explained {
                unaccounted += 1;
                detail.entry(world).or_insert(format!(
                    "gate {} decision {} written {} completed {} exit {}",
                    s.gate, s.decision, s.written, s.completed, s.exit
                ));
            }
            if o.destination.is_some_and(|d| d != o.physical) {
                wrong += 1;
            }
            if let Some(r) = self.reports.get(&world) {
                let told = r.lost || r.confirmed == Some(o.physical);
                if !told {
                    unrecorded += 1;
                    self.fail(
                        at,
                        "the record tells where the parcel went",
                        format!("parcel {world} left by {:?}; the record says confirmed {:?}", o.physical, r.confirmed),
                    );
                }
            }
        }
        if report.unsafe_releases > self.merged_unseen {
            let n = report.unsafe_releases;
            self.fail(
                at,
                "no unsafe release",
                format!("the referee counts {n} unsafe releases, {} unseen merges", self.merged_unseen),
            );
        }
        if let Some((world, story)) = detail.into_iter().next() {
            self.fail(
                at,
                "every parcel accounted for",
                format!("{unaccounted} parcels without a complete record, e.g. {world}: {story}"),
            );
        }
        (unaccounted, wrong, unrecorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sortline::core::{Item, TrackingId};

    fn parcel(t: u32) -> ParcelId {
        ParcelId { tracking: TrackingId(t), boot: 1, serial: u64::from(t) }
    }

    fn list(version: u64, channel: Channel) -> Manifest {
        Manifest {
            waybill: Waybill::parse("EA123456785CN").unwrap(),
            list_no: "L1".into(),
            version,
            channel,
            status: ManifestStatus::Accepted,
            licence_required: false,
            platform_targeted: false,
            consignor: String::new(),
            consignee: String::new(),
            country: "CN".into(),
            gross_weight_g: 500,
            items: Vec::<Item>::new(),
        }
    }

    fn release(p: ParcelId, version: u64, image: Option<&str>) -> Record {
        Record::Decision {
            parcel: p,
            waybill: Some(Waybill::parse("EA123456785CN").unwrap()),
            lane: Lane::Release,
            reasons: Vec::new(),
            manifest_version: Some(version),
            channel: Some(Channel::Green),
            image_sha256: image.map(Arc::from),
            shadow: false,
        }
    }

    #[test]
    fn a_release_sent_before_its_decision_is_committed_fails() {
        let mut c = Checker::default();
        c.destination(5, parcel(1), Some(Lane::Release));
        assert_eq!(c.failures[0].check, "release recorded before it is sent");
        let mut c = Checker::default();
        c.committed(&[(Some(release(parcel(1), 1, None)), None)]);
        c.destination(5, parcel(1), Some(Lane::Release));
        // Another parcel with the same tracking id under another boot is not this one.
        c.destination(6, ParcelId { boot: 2, ..parcel(1) }, Some(Lane::Release));
        assert_eq!(c.failures.len(), 1);
    }

    #[test]
    fn a_release_on_a_withdrawn_list_or_another_parcels_image_fails() {
        let mut c = Checker::default();
        c.manifest_sent(&list(1, Channel::Green));
        c.decided(1, &release(parcel(1), 1, None), |_| None, Some(1));
        assert!(c.failures.is_empty());
        c.manifest_sent(&list(2, Channel::Red));
        c.decided(2, &release(parcel(1), 1, None), |_| None, Some(1));
        assert_eq!(c.failures[0].check, "release on the list last sent");
        let mut c = Checker::default();
        c.manifest_sent(&list(1, Channel::Green));
        c.decided(3, &release(parcel(1), 1, Some("ab")), |_| Some((2, true)), Some(1));
        assert_eq!(c.failures[0].check, "release on the parcel's own image");
        c.decided(3, &release(parcel(1), 1, Some("ab")), |_| Some((2, false)), Some(1));
        assert_eq!((c.failures.len(), c.released_on_swapped_image), (1, 1));
        // On a line with a station, a release needs an image.
        let mut c = Checker { xray: true, ..Checker::default() };
        c.manifest_sent(&list(1, Channel::Green));
        c.decided(4, &release(parcel(1), 1, None), |_| None, Some(1));
        assert_eq!(c.failures[0].check, "release on a real image");
    }

    #[test]
    fn a_parcel_without_its_story_is_unaccounted_unless_the_host_lost_it() {
        let mut c = Checker::default();
        c.committed(&[(None, Some(Mark::Gate(1))), (None, Some(Mark::Gate(2))), (None, Some(Mark::Gate(3)))]);
        c.disrupt(2, true);
        c.disrupt(3, false);
        let outcome = |t: u32| crate::ParcelOutcome {
            sim_id: t,
            waybill: String::new(),
            tracking: Some(t),
            must_not_release: false,
            truth: "green".into(),
            physical: Lane::Hold,
            destination: None,
            destination_in_time: false,
        };
        let report = Report {
            parcels: 3,
            lanes: Default::default(),
            in_flight: 0,
            not_inducted: 0,
            unsafe_releases: 0,
            undeclared_released: 0,
            wrong_lane: 0,
            late_destinations: 0,
            no_destination: 0,
            ignored_destinations: 0,
            ignored_reviews: 0,
            missed_diverts: 0,
            slips: 0,
            bounces: 0,
            plc_forced_holds: 0,
            plc_restarts: 0,
            merged: 0,
            scanner: Default::default(),
            outcomes: (1..=3).map(outcome).collect(),
        };
        // 1: nothing past its gate; 3: the daemon crashed and the next run heard nothing of it.
        let (unaccounted, _, _) = c.finish(10, &report);
        assert_eq!(unaccounted, 2);
        assert_eq!(c.failures.last().unwrap().check, "every parcel accounted for");
    }
}
