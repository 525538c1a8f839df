//! The declaration list (清单) as the platform sends it, its validation, and the
//! core's view of it (`core::Manifest`, the part the decision needs).

use crate::core::{Carriers, Channel, Item, Manifest, ManifestStatus, Waybill};
use serde::{Deserialize, Serialize};

/// Limits on what one declaration may hold ("put a limit on everything").
pub const MAX_ITEMS: usize = 1000;
pub const MAX_TEXT_CHARS: usize = 200;
pub const MAX_REF_CHARS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Export,
    Import,
}

/// One declaration list, new or amended (a higher `version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Shape only here (A-Z 0-9); the format (S10, SSCC, a configured carrier's) is checked
    /// by [`Declaration::validate`], as carrier formats are configuration.
    pub waybill: Waybill,
    /// The list number (清单编号).
    pub list_no: String,
    /// The platform's version of the record; an amendment carries a higher one.
    pub version: u64,
    /// When the platform issued this version, RFC 3339.
    pub platform_time: String,
    pub direction: Direction,
    /// The three documents compared (三单比对): the order, the logistics and the payment record.
    pub ecommerce_ref: String,
    pub logistics_ref: String,
    pub payment_ref: String,
    pub channel: Channel,
    pub status: ManifestStatus,
    pub licence_required: bool,
    pub platform_targeted: bool,
    pub consignor: String,
    pub consignee: String,
    /// ISO 3166-1 alpha-2: destination (export) or origin (import).
    pub country: String,
    pub gross_weight_g: u32,
    pub items: Vec<DeclaredItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredItem {
    pub name: String,
    /// 6 to 10 digits.
    pub hs_code: String,
    pub quantity: u32,
    /// Unit of the quantity, e.g. `pcs`, `kg`, `pair`.
    pub unit: String,
    /// Declared value of the whole line in minor units (fen for CNY).
    pub value_minor: u64,
    /// ISO 4217, e.g. `CNY`.
    pub currency: String,
}

/// What is wrong with a declaration, naming the field (`items[2].hs_code`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), problem: problem.into() }
    }
}

/// ISO 3166-1 alpha-2 codes, officially assigned.
const ISO_COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO \
BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES \
ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ \
IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM \
MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW \
PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO \
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub fn is_iso_country(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) && ISO_COUNTRIES.split(' ').any(|c| c == code)
}

fn text(field: &str, value: &str, max_chars: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(FieldError::new(field, format!("longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "holds a control character"));
    }
    Ok(())
}

impl Declaration {
    /// Checks every field and returns the decision's view. Errors name the field.
    pub fn validate(&self, carriers: &Carriers) -> Result<Manifest, FieldError> {
        carriers
            .parse(self.waybill.as_str())
            .map_err(|e| FieldError::new("waybill", format!("{:?}: {e}", self.waybill.as_str())))?;
        text("list_no", &self.list_no, MAX_REF_CHARS)?;
        if self.version == 0 {
            return Err(FieldError::new("version", "must be 1 or more"));
        }
        humantime::parse_rfc3339_weak(&self.platform_time)
            .map_err(|e| FieldError::new("platform_time", format!("{:?} is not RFC 3339: {e}", self.platform_time)))?;
        text("ecommerce_ref", &self.ecommerce_ref, MAX_REF_CHARS)?;
        text("logistics_ref", &self.logistics_ref, MAX_REF_CHARS)?;
        text("payment_ref", &self.payment_ref, MAX_REF_CHARS)?;
        text("consignor", &self.consignor, MAX_TEXT_CHARS)?;
        text("consignee", &self.consignee, MAX_TEXT_CHARS)?;
        if !is_iso_country(&self.country) {
            return Err(FieldError::new("country", format!("{:?} is not an ISO 3166-1 alpha-2 code", self.country)));
        }
        if self.gross_weight_g == 0 {
            return Err(FieldError::new("gross_weight_g", "must be above 0"));
        }
        if self.items.is_empty() {
            return Err(FieldError::new("items", "at least one item is required"));
        }
        if self.items.len() > MAX_ITEMS {
            return Err(FieldError::new("items", format!("more than {MAX_ITEMS} items")));
        }
        for (i, item) in self.items.iter().enumerate() {
            item.validate().map_err(|e| FieldError::new(format!("items[{i}].{}", e.field), e.problem))?;
        }
        Ok(self.core_view())
    }

    /// The decision's view, without checks: for records already validated at intake.
    pub fn core_view(&self) -> Manifest {
        Manifest {
            waybill: self.waybill,
            list_no: self.list_no.clone(),
            version: self.version,
            channel: self.channel,
            status: self.status,
            licence_required: self.licence_required,
            platform_targeted: self.platform_targeted,
            consignor: self.consignor.clone(),
            consignee: self.consignee.clone(),
            country: self.country.clone(),
            gross_weight_g: self.gross_weight_g,
            items: self
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
        }
    }
}

impl DeclaredItem {
    fn validate(&self) -> Result<(), FieldError> {
        text("name", &self.name, MAX_TEXT_CHARS)?;
        if !(6..=10).contains(&self.hs_code.len()) || !self.hs_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new("hs_code", format!("{:?} must be 6 to 10 digits", self.hs_code)));
        }
        if self.quantity == 0 {
            return Err(FieldError::new("quantity", "must be 1 or more"));
        }
        text("unit", &self.unit, 16)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new("currency", format!("{:?} is not an ISO 4217 code", self.currency)));
        }
        Ok(())
    }
}
