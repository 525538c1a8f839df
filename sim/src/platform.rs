//! The management platform's data: declaration lists (manifests) built from a catalogue of goods.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sortline::core::{Channel, ManifestStatus, Waybill};
use sortline::manifest::{Declaration, DeclaredItem, Direction};

/// A kind of goods the catalogue sells; values and weights are per piece.
struct Goods {
    name: &'static str,
    hs_code: &'static str,
    unit: &'static str,
    value_fen: (u64, u64),
    weight_g: (u32, u32),
    /// Relative frequency in orders; the quarantine-sensitive goods are rare.
    frequency: u32,
}

#[rustfmt::skip]
const CATALOGUE: &[Goods] = &[
    Goods { name: "连衣裙 dress", hs_code: "620442", unit: "件", value_fen: (8_000, 60_000), weight_g: (200, 500), frequency: 12 },
    Goods { name: "T恤 T-shirt", hs_code: "610910", unit: "件", value_fen: (3_000, 20_000), weight_g: (150, 300), frequency: 14 },
    Goods { name: "运动鞋 sneakers", hs_code: "6404110000", unit: "双", value_fen: (15_000, 90_000), weight_g: (600, 1_200), frequency: 8 },
    Goods { name: "图书 book", hs_code: "4901990000", unit: "本", value_fen: (2_000, 15_000), weight_g: (200, 900), frequency: 8 },
    Goods { name: "手机壳 phone case", hs_code: "392690", unit: "个", value_fen: (1_000, 8_000), weight_g: (30, 80), frequency: 12 },
    Goods { name: "蓝牙耳机 bluetooth earphones", hs_code: "851830", unit: "副", value_fen: (8_000, 80_000), weight_g: (50, 150), frequency: 8 },
    // Lithium cells: declared here, so not a surprise on the X-ray image.
    Goods { name: "充电宝 power bank", hs_code: "850760", unit: "个", value_fen: (6_000, 30_000), weight_g: (200, 450), frequency: 4 },
    Goods { name: "口红 lipstick", hs_code: "330410", unit: "支", value_fen: (5_000, 40_000), weight_g: (20, 60), frequency: 8 },
    // Liquid.
    Goods { name: "香水 perfume", hs_code: "330300", unit: "瓶", value_fen: (15_000, 120_000), weight_g: (150, 400), frequency: 4 },
    Goods { name: "绿茶 green tea", hs_code: "090210", unit: "盒", value_fen: (5_000, 50_000), weight_g: (100, 500), frequency: 5 },
    Goods { name: "玩具 toy", hs_code: "950300", unit: "件", value_fen: (2_000, 30_000), weight_g: (100, 800), frequency: 8 },
    Goods { name: "手表 watch", hs_code: "910211", unit: "块", value_fen: (10_000, 200_000), weight_g: (50, 200), frequency: 3 },
    Goods { name: "背包 backpack", hs_code: "420292", unit: "个", value_fen: (6_000, 50_000), weight_g: (400, 1_200), frequency: 4 },
    Goods { name: "数据线 USB cable", hs_code: "854442", unit: "根", value_fen: (1_000, 6_000), weight_g: (30, 100), frequency: 6 },
    Goods { name: "保温杯 vacuum flask", hs_code: "961700", unit: "个", value_fen: (4_000, 20_000), weight_g: (250, 500), frequency: 4 },
    // Rare; quarantine interception rules target these.
    Goods { name: "牛肉干 beef jerky", hs_code: "160250", unit: "袋", value_fen: (3_000, 15_000), weight_g: (100, 500), frequency: 1 },
    Goods { name: "蔬菜种子 vegetable seeds", hs_code: "120991", unit: "袋", value_fen: (500, 5_000), weight_g: (10, 50), frequency: 1 },
];

const CONSIGNORS: &[&str] = &[
    "张家港保税港区跨境优选贸易有限公司",
    "苏州云帆电子商务有限公司",
    "江苏港城供应链管理有限公司",
    "无锡优品汇跨境电商有限公司",
    "常熟锦绣服饰进出口有限公司",
];

const CONSIGNEES: &[&str] = &[
    "John Smith",
    "Maria Garcia",
    "Yuki Tanaka",
    "Kim Min-jun",
    "Olga Ivanova",
    "Lucas Silva",
    "Emma Müller",
    "Jean Dupont",
    "Aisha Khan",
    "Liam O'Brien",
];

const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "JP", "KR", "RU", "BR", "AU", "CA", "SG", "MY"];

/// Packaging weight added to the goods.
const PACKAGING_G: (u32, u32) = (50, 300);

/// What the platform decided about one list, drawn by the scenario.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ListFlags {
    pub rejected: bool,
    pub red: bool,
    pub licence_required: bool,
    pub platform_targeted: bool,
}

pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    // u32 keeps the draw identical on every platform (usize would not).
    let len = u32::try_from(items.len()).expect("small list");
    &items[rng.random_range(0..len) as usize]
}

fn pick_goods(rng: &mut ChaCha8Rng) -> usize {
    let total: u32 = CATALOGUE.iter().map(|g| g.frequency).sum();
    let mut roll = rng.random_range(0..total);
    for (i, goods) in CATALOGUE.iter().enumerate() {
        if roll < goods.frequency {
            return i;
        }
        roll -= goods.frequency;
    }
    unreachable!("roll is below the total frequency")
}

/// What the platform's random draws make of one list: its goods, weight and parties.
struct Drawn {
    items: Vec<DeclaredItem>,
    gross_weight_g: u32,
    consignor: &'static str,
    consignee: &'static str,
    country: &'static str,
}

/// The draws of one list, in the order they have always been made.
fn draw(rng: &mut ChaCha8Rng) -> Drawn {
    let lines = rng.random_range(1..=4u32);
    let mut chosen: Vec<usize> = Vec::with_capacity(4);
    let mut items = Vec::with_capacity(4);
    let mut weight_g = rng.random_range(PACKAGING_G.0..=PACKAGING_G.1);
    // Bounded retries: a list has distinct goods, but never spin on an unlucky draw.
    for _ in 0..lines * 4 {
        if chosen.len() == lines as usize {
            break;
        }
        let g = pick_goods(rng);
        if chosen.contains(&g) {
            continue;
        }
        chosen.push(g);
        let goods = &CATALOGUE[g];
        let quantity = if rng.random_bool(0.8) { 1 } else { rng.random_range(2..=3) };
        let unit_value = rng.random_range(goods.value_fen.0..=goods.value_fen.1);
        // Prices end in whole yuan, as shop prices do.
        let unit_value = unit_value / 100 * 100;
        weight_g += quantity * rng.random_range(goods.weight_g.0..=goods.weight_g.1);
        items.push(DeclaredItem {
            name: goods.name.to_owned(),
            hs_code: goods.hs_code.to_owned(),
            quantity,
            unit: goods.unit.to_owned(),
            value_minor: unit_value * u64::from(quantity),
            currency: "CNY".to_owned(),
        });
    }
    let consignor = *pick(rng, CONSIGNORS);
    let consignee = *pick(rng, CONSIGNEES);
    let country = *pick(rng, COUNTRIES);
    Drawn { items, gross_weight_g: weight_g, consignor, consignee, country }
}

/// Goods as a list from the catalogue declares them, drawn as a whole list is (the X-ray
/// tunnel's view of a parcel that has none).
pub(crate) fn catalogue_items(rng: &mut ChaCha8Rng) -> Vec<DeclaredItem> {
    draw(rng).items
}

/// A realistic list for `waybill`, as the platform sends it; `seq` makes the list number unique
/// in the run. The simulator does not model the three documents or the issue time, so they are
/// derived from the list number (no draw).
pub(crate) fn manifest(rng: &mut ChaCha8Rng, waybill: Waybill, seq: u32, flags: ListFlags) -> Declaration {
    let Drawn { items, gross_weight_g, consignor, consignee, country } = draw(rng);
    // 18 digits: customs area, year, sequence.
    let list_no = format!("22352025{seq:010}");
    Declaration {
        waybill,
        version: 1,
        platform_time: "2026-01-01T00:00:00Z".into(),
        direction: Direction::Export,
        ecommerce_ref: format!("ORD-{list_no}"),
        logistics_ref: format!("LOG-{list_no}"),
        payment_ref: format!("PAY-{list_no}"),
        list_no,
        channel: if flags.red { Channel::Red } else { Channel::Green },
        status: if flags.rejected { ManifestStatus::Rejected } else { ManifestStatus::Accepted },
        licence_required: flags.licence_required,
        platform_targeted: flags.platform_targeted,
        consignor: consignor.to_owned(),
        consignee: consignee.to_owned(),
        country: country.to_owned(),
        gross_weight_g,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use sortline::core::Carriers;

    fn waybill(s: &str) -> Waybill {
        Waybill::parse(s).unwrap()
    }

    #[test]
    fn manifests_are_well_formed() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for seq in 0..500 {
            let m = manifest(&mut rng, waybill("EA123456785CN"), seq, ListFlags::default());
            assert_eq!(m.list_no.len(), 18);
            assert!((1..=4).contains(&m.items.len()));
            assert_eq!(m.country.len(), 2);
            for item in &m.items {
                assert!((6..=10).contains(&item.hs_code.len()));
                assert!(item.hs_code.bytes().all(|b| b.is_ascii_digit()));
                assert!(item.quantity >= 1 && item.value_minor > 0);
                assert_eq!(item.currency, "CNY");
            }
            let mut names: Vec<_> = m.items.iter().map(|i| &i.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), m.items.len());
            m.validate(&Carriers::default()).unwrap();
        }
    }

    #[test]
    fn json_is_snake_case_and_round_trips() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let flags = ListFlags { red: true, rejected: true, ..ListFlags::default() };
        let m = manifest(&mut rng, waybill("EA123456785CN"), 7, flags);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"channel\":\"red\""));
        assert!(json.contains("\"status\":\"rejected\""));
        assert!(json.contains("\"gross_weight_g\""));
        assert_eq!(serde_json::from_str::<Declaration>(&json).unwrap(), m);
    }
}
