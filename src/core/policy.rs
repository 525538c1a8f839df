//! Local targeting: manual targets (人工布控) and interception rules (拦截规则).
//! Both are matched against a manifest; neither can ask for release.

use super::manifest::{Item, Manifest};
use super::types::{Lane, Millis, OfficerId};
use super::waybill::Waybill;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a manual target matches on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum TargetCriterion {
    Waybill(Waybill),
    Consignor(String),
    Consignee(String),
    HsPrefix(String),
    ListNo(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualTarget {
    pub id: Arc<str>,
    pub criterion: TargetCriterion,
    pub author: OfficerId,
    pub reason: String,
    pub created_at: Millis,
    /// No longer matches from this time on; `None` until removed.
    pub expires_at: Option<Millis>,
}

impl ManualTarget {
    pub fn active(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    pub fn matches(&self, m: &Manifest) -> bool {
        match &self.criterion {
            TargetCriterion::Waybill(w) => *w == m.waybill,
            TargetCriterion::Consignor(c) => eq_name(c, &m.consignor),
            TargetCriterion::Consignee(c) => eq_name(c, &m.consignee),
            TargetCriterion::HsPrefix(p) => m.items.iter().any(|i| i.hs_code.starts_with(p.as_str())),
            TargetCriterion::ListNo(l) => *l == m.list_no,
        }
    }
}

/// Names compare trimmed and case-folded, without allocating.
fn eq_name(a: &str, b: &str) -> bool {
    a.trim().chars().flat_map(char::to_lowercase).eq(b.trim().chars().flat_map(char::to_lowercase))
}

/// Whether `hay` contains `needle` (already lower-case), ignoring case. The
/// common cases (an ASCII keyword, or a caseless one such as Chinese against
/// a name with no capitals) allocate nothing.
fn contains_folded(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        // UTF-8 continuation bytes never equal ASCII, so byte windows are safe.
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else if hay.chars().any(char::is_uppercase) {
        hay.to_lowercase().contains(needle)
    } else {
        hay.contains(needle)
    }
}

/// An interception rule as written in `firmware-config/rules/*.toml`.
///
/// Criteria of different kinds must all hold; the values within one list are
/// alternatives. Item criteria (HS prefixes, keywords, item value) must hold
/// for one and the same item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptionRule {
    pub id: Arc<str>,
    pub action: Lane,
    /// What the officer sees.
    pub reason: String,
    #[serde(default)]
    pub hs_prefixes: Vec<String>,
    /// Matched case-insensitively as substrings of item names (Chinese or English).
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub min_item_value_minor: Option<u64>,
    #[serde(default)]
    pub min_total_value_minor: Option<u64>,
    #[serde(default)]
    pub min_gross_weight_g: Option<u32>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub consignors: Vec<String>,
    #[serde(default)]
    pub consignees: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rule {rule:?}: {field}: {problem}")]
pub struct RuleError {
    pub rule: String,
    pub field: &'static str,
    pub problem: String,
}

impl InterceptionRule {
    /// Checks a rule as loaded; lower-cases keywords once so matching need not.
    pub fn validated(mut self) -> Result<InterceptionRule, RuleError> {
        let err = |field, problem: &str| RuleError { rule: self.id.to_string(), field, problem: problem.into() };
        if self.id.trim().is_empty() || self.id.len() > 64 {
            return Err(err("id", "must be 1 to 64 characters"));
        }
        if self.action == Lane::Release {
            return Err(err("action", "an interception rule can only ask for inspection or hold"));
        }
        if self.reason.trim().is_empty() {
            return Err(err("reason", "officers need a reason text"));
        }
        if let Some(p) =
            self.hs_prefixes.iter().find(|p| !(2..=10).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("hs_prefixes", &format!("{p:?} is not 2 to 10 digits")));
        }
        if self.keywords.iter().any(|k| k.trim().is_empty()) {
            return Err(err("keywords", "empty keyword"));
        }
        if let Some(c) = self.countries.iter().find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(err("countries", &format!("{c:?} is not an ISO 3166 alpha-2 code")));
        }
        let has_criterion = !self.hs_prefixes.is_empty()
            || !self.keywords.is_empty()
            || self.min_item_value_minor.is_some()
            || self.min_total_value_minor.is_some()
            || self.min_gross_weight_g.is_some()
            || !self.countries.is_empty()
            || !self.consignors.is_empty()
            || !self.consignees.is_empty();
        if !has_criterion {
            return Err(err("(criteria)", "a rule without criteria would stop every parcel"));
        }
        self.keywords = self.keywords.iter().map(|k| k.trim().to_lowercase()).collect();
        Ok(self)
    }

    fn has_item_criteria(&self) -> bool {
        !self.hs_prefixes.is_empty() || !self.keywords.is_empty() || self.min_item_value_minor.is_some()
    }

    fn item_matches(&self, item: &Item) -> bool {
        (self.hs_prefixes.is_empty() || self.hs_prefixes.iter().any(|p| item.hs_code.starts_with(p.as_str())))
            && (self.keywords.is_empty() || self.keywords.iter().any(|k| contains_folded(&item.name, k)))
            && self.min_item_value_minor.is_none_or(|v| item.value_minor >= v)
    }

    pub fn matches(&self, m: &Manifest) -> bool {
        (self.countries.is_empty() || self.countries.iter().any(|c| c.eq_ignore_ascii_case(&m.country)))
            && (self.consignors.is_empty() || self.consignors.iter().any(|c| eq_name(c, &m.consignor)))
            && (self.consignees.is_empty() || self.consignees.iter().any(|c| eq_name(c, &m.consignee)))
            && self.min_total_value_minor.is_none_or(|v| m.total_value_minor() >= v)
            && self.min_gross_weight_g.is_none_or(|g| m.gross_weight_g >= g)
            && (!self.has_item_criteria() || m.items.iter().any(|i| self.item_matches(i)))
    }
}

/// A validated set of rules with unique ids. Swapped whole on reload, so a
/// bad file never leaves the line without rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<InterceptionRule>,
}

impl RuleSet {
    pub fn new(rules: Vec<InterceptionRule>) -> Result<RuleSet, RuleError> {
        let mut out: Vec<InterceptionRule> = Vec::with_capacity(rules.len());
        for rule in rules {
            let rule = rule.validated()?;
            if out.iter().any(|r| r.id == rule.id) {
                return Err(RuleError { rule: rule.id.to_string(), field: "id", problem: "defined twice".into() });
            }
            out.push(rule);
        }
        Ok(RuleSet { rules: out })
    }

    pub fn matching<'a>(&'a self, m: &'a Manifest) -> impl Iterator<Item = &'a InterceptionRule> + 'a {
        self.rules.iter().filter(move |r| r.matches(m))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn rules(&self) -> &[InterceptionRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::manifest::ManifestStatus;
    use crate::core::types::Channel;

    pub fn manifest() -> Manifest {
        Manifest {
            waybill: Waybill::parse("EA123456785CN").unwrap(),
            list_no: "L0001".into(),
            version: 1,
            channel: Channel::Green,
            status: ManifestStatus::Accepted,
            licence_required: false,
            platform_targeted: false,
            consignor: "Suzhou Silk Ltd".into(),
            consignee: "Jane Doe".into(),
            country: "US".into(),
            gross_weight_g: 800,
            items: vec![Item {
                name: "连衣裙 Silk Dress".into(),
                hs_code: "620442".into(),
                quantity: 1,
                value_minor: 25_000,
                currency: "CNY".into(),
            }],
        }
    }

    /// A rule with no criteria, edited by `f`.
    pub fn rule(f: impl FnOnce(&mut InterceptionRule)) -> InterceptionRule {
        let mut r = InterceptionRule {
            id: "R1".into(),
            action: Lane::Inspection,
            reason: "test".into(),
            hs_prefixes: vec![],
            keywords: vec![],
            min_item_value_minor: None,
            min_total_value_minor: None,
            min_gross_weight_g: None,
            countries: vec![],
            consignors: vec![],
            consignees: vec![],
        };
        f(&mut r);
        r
    }

    #[test]
    fn rule_criteria() {
        let m = manifest();
        let ok = |r: InterceptionRule| r.validated().unwrap().matches(&m);
        assert!(ok(rule(|r| r.hs_prefixes = vec!["6204".into()])));
        assert!(!ok(rule(|r| r.hs_prefixes = vec!["85".into()])));
        assert!(ok(rule(|r| r.keywords = vec!["DRESS".into()])), "case-insensitive");
        assert!(ok(rule(|r| r.keywords = vec!["连衣裙".into()])));
        assert!(ok(rule(|r| r.countries = vec!["US".into()])));
        assert!(
            !ok(rule(|r| {
                r.countries = vec!["US".into()];
                r.min_gross_weight_g = Some(1000);
            })),
            "all kinds must hold"
        );
        assert!(
            !ok(rule(|r| {
                r.hs_prefixes = vec!["6204".into()];
                r.min_item_value_minor = Some(30_000);
            })),
            "item criteria on the same item"
        );
        assert!(ok(rule(|r| r.consignors = vec![" suzhou silk ltd".into()])));
        assert!(ok(rule(|r| r.min_total_value_minor = Some(25_000))));
    }

    #[test]
    fn folded_matching() {
        assert!(contains_folded("连衣裙 Silk DRESS", "dress"));
        assert!(contains_folded("连衣裙 Silk DRESS", "连衣裙"));
        assert!(contains_folded("T恤 T-Shirt", "t恤"));
        assert!(contains_folded("ÉCHARPE en soie", "écharpe"));
        assert!(!contains_folded("牛仔裤 jeans", "牛肉"));
        assert!(!contains_folded("dres", "dress"));
        assert!(eq_name("  Jane DOE ", "jane doe"));
        assert!(!eq_name("Jane", "Jane Doe"));
    }

    #[test]
    fn rule_validation_names_the_field() {
        let e = rule(|r| r.action = Lane::Release).validated().unwrap_err();
        assert_eq!(e.field, "action");
        assert_eq!(rule(|_| {}).validated().unwrap_err().field, "(criteria)");
        assert_eq!(rule(|r| r.hs_prefixes = vec!["62a".into()]).validated().unwrap_err().field, "hs_prefixes");
        assert_eq!(rule(|r| r.countries = vec!["usa".into()]).validated().unwrap_err().field, "countries");
        let e = RuleSet::new(vec![rule(|r| r.keywords = vec!["x".into()]), rule(|r| r.keywords = vec!["y".into()])])
            .unwrap_err();
        assert_eq!((e.rule.as_str(), e.field), ("R1", "id"));
    }

    #[test]
    fn targets_match_and_expire() {
        let m = manifest();
        let t = |criterion| ManualTarget {
            id: "MT1".into(),
            criterion,
            author: OfficerId::new("risk-01").unwrap(),
            reason: "tip-off".into(),
            created_at: Millis(0),
            expires_at: Some(Millis(100)),
        };
        assert!(t(TargetCriterion::Waybill(m.waybill)).matches(&m));
        assert!(t(TargetCriterion::Consignee("JANE DOE".into())).matches(&m));
        assert!(t(TargetCriterion::Consignor("Suzhou Silk Ltd".into())).matches(&m));
        assert!(t(TargetCriterion::HsPrefix("62".into())).matches(&m));
        assert!(t(TargetCriterion::ListNo("L0001".into())).matches(&m));
        assert!(!t(TargetCriterion::ListNo("L0002".into())).matches(&m));
        let target = t(TargetCriterion::ListNo("L0001".into()));
        assert!(target.active(Millis(99)));
        assert!(!target.active(Millis(100)));
    }
}
