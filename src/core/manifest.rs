//! The part of a declaration list (清单) the decision needs. The full model,
//! its store and its import live in `crate::manifest` (later issue).

use super::types::Channel;
use super::waybill::Waybill;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestStatus {
    Accepted,
    /// Sent back by the platform, e.g. after a failed three-document comparison.
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub name: String,
    pub hs_code: String,
    pub quantity: u32,
    /// Declared value in minor units (fen for CNY).
    pub value_minor: u64,
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_currency() -> String {
    "CNY".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub waybill: Waybill,
    pub list_no: String,
    /// The platform's version of the record; an amendment carries a higher one.
    pub version: u64,
    pub channel: Channel,
    pub status: ManifestStatus,
    pub licence_required: bool,
    pub platform_targeted: bool,
    #[serde(default)]
    pub consignor: String,
    #[serde(default)]
    pub consignee: String,
    /// ISO 3166 alpha-2 destination (export) or origin (import) country.
    #[serde(default)]
    pub country: String,
    pub gross_weight_g: u32,
    pub items: Vec<Item>,
}

impl Manifest {
    pub fn total_value_minor(&self) -> u64 {
        self.items.iter().map(|i| i.value_minor).fold(0, u64::saturating_add)
    }
}
