use super::*;
use crate::core::{Carriers, Channel, ManifestStatus, OfficerId, TargetCriterion, Waybill};
use proptest::prelude::*;
use serde_json::json;

pub fn sample_json(waybill: &str, version: u64) -> serde_json::Value {
    json!({
        "waybill": waybill, "list_no": "L2026000001", "version": version,
        "platform_time": "2026-03-01T08:00:00Z", "direction": "export",
        "ecommerce_ref": "ORD-1", "logistics_ref": "LOG-1", "payment_ref": "PAY-1",
        "channel": "green", "status": "accepted", "licence_required": false, "platform_targeted": false,
        "consignor": "Suzhou Silk Ltd", "consignee": "Jane Doe", "country": "US", "gross_weight_g": 800,
        "items": [{"name": "连衣裙 Silk Dress", "hs_code": "620442", "quantity": 1, "unit": "pcs",
                   "value_minor": 25000, "currency": "CNY"}]
    })
}

fn decl(v: serde_json::Value) -> Result<Declaration, FieldError> {
    from_json(v.to_string().as_bytes()).and_then(|d| d.validate(&Carriers::default()).map(|_| d))
}

fn field_of(v: serde_json::Value) -> String {
    decl(v).unwrap_err().field
}

fn edit(f: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut v = sample_json("EA123456785CN", 1);
    f(&mut v);
    v
}

#[test]
fn a_good_declaration_gives_the_core_view() {
    let d = decl(sample_json("EA123456785CN", 3)).unwrap();
    let m = d.validate(&Carriers::default()).unwrap();
    assert_eq!(m.waybill, Waybill::parse("EA123456785CN").unwrap());
    assert_eq!((m.version, m.channel, m.status), (3, Channel::Green, ManifestStatus::Accepted));
    assert_eq!(m.items[0].hs_code, "620442");
    assert_eq!(m.total_value_minor(), 25_000);
}

#[test]
fn errors_name_the_field() {
    assert_eq!(field_of(edit(|v| v["waybill"] = json!("EA123456784CN"))), "waybill", "check digit");
    assert_eq!(field_of(edit(|v| v["waybill"] = json!("ea123"))), "waybill");
    assert_eq!(field_of(edit(|v| v["items"][0]["hs_code"] = json!("62044"))), "items[0].hs_code");
    assert_eq!(field_of(edit(|v| v["items"][0]["hs_code"] = json!("62044212345"))), "items[0].hs_code");
    assert_eq!(field_of(edit(|v| v["items"][0]["value_minor"] = json!(-1))), "items[0].value_minor");
    assert_eq!(field_of(edit(|v| v["items"][0]["quantity"] = json!(0))), "items[0].quantity");
    assert_eq!(field_of(edit(|v| v["items"][0]["currency"] = json!("yuan"))), "items[0].currency");
    assert_eq!(field_of(edit(|v| v["items"][0]["colour"] = json!("red"))), "items[0].colour");
    assert_eq!(field_of(edit(|v| v["items"] = json!([]))), "items");
    assert_eq!(field_of(edit(|v| v["country"] = json!("XX"))), "country");
    assert_eq!(field_of(edit(|v| v["country"] = json!("us"))), "country");
    assert_eq!(field_of(edit(|v| v["gross_weight_g"] = json!(-5))), "gross_weight_g");
    assert_eq!(field_of(edit(|v| v["channel"] = json!("blue"))), "channel");
    assert_eq!(field_of(edit(|v| v["direction"] = json!("transit"))), "direction");
    assert_eq!(field_of(edit(|v| v["version"] = json!(0))), "version");
    assert_eq!(field_of(edit(|v| v["platform_time"] = json!("yesterday"))), "platform_time");
    assert_eq!(field_of(edit(|v| v["payment_ref"] = json!(""))), "payment_ref");
    assert_eq!(field_of(edit(|v| v["extra"] = json!(1))), "extra");
    assert_eq!(field_of(edit(|v| drop(v.as_object_mut().unwrap().remove("consignee")))), "consignee");
    assert_eq!(from_json(b"{not json").unwrap_err().field, "(json)");
    assert_eq!(from_json(b"[1]").unwrap_err().field, "(json)");
}

#[test]
fn carrier_formats_are_accepted_for_declarations() {
    let carriers: Carriers = serde_json::from_str(r#"[{"name":"SF Express","pattern":"SF[0-9]{12}"}]"#).unwrap();
    let d = from_json(sample_json("SF123456789012", 1).to_string().as_bytes()).unwrap();
    assert_eq!(d.validate(&Carriers::default()).unwrap_err().field, "waybill");
    assert!(d.validate(&carriers).is_ok());
}

fn csv_text(rows: &[&str]) -> String {
    let header: Vec<&str> = CSV_DECLARATION_COLUMNS.iter().chain(CSV_ITEM_COLUMNS.iter()).copied().collect();
    let mut s = header.join(",") + "\n";
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

const HEAD: &str =
    "EA123456785CN,L1,1,2026-03-01T08:00:00Z,export,O1,G1,P1,green,accepted,false,false,Suzhou Silk,Jane Doe,US,800";

#[test]
fn csv_rows_group_into_declarations_and_errors_name_line_and_column() {
    let text = csv_text(&[
        &format!("{HEAD},Dress,620442,1,pcs,25000,CNY"),
        &format!("{HEAD},\"Scarf, silk\",621410,2,pcs,9000,CNY"),
        "RR473124829GB,L2,1,2026-03-01T08:00:00Z,import,O2,G2,P2,red,accepted,true,false,A,B,GB,100,Tea,090210,1,kg,100,CNY",
        "RR473124829GB,L2,2,2026-03-01T08:00:00Z,import,O2,G2,P2,red,accepted,true,false,A,B,GB,100,Tea,0902,1,kg,100,CNY",
        &format!("{},Shoe,640399,1,pair,100,CNY", HEAD.replace(",L1,1,", ",L1,2,")),
        &format!("{},Shoe,640399,1,pair,100,CNY", HEAD.replace(",L1,1,", ",L1,2,").replace("Jane Doe", "Joe")),
    ]);
    let parsed: Vec<Parsed> = CsvRows::new(text.as_bytes()).unwrap().map(Result::unwrap).collect();
    let lines: Vec<u64> = parsed.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 4, 5, 7], "a bad row of a declaration is reported at its own line");
    let first = parsed[0].result.as_ref().unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[1].name, "Scarf, silk");
    assert!(parsed[1].result.as_ref().unwrap().validate(&Carriers::default()).is_ok());
    let tea = parsed[2].result.as_ref().unwrap().validate(&Carriers::default()).unwrap_err();
    assert_eq!(tea.field, "items[0].hs_code");
    let differs = parsed[3].result.as_ref().unwrap_err();
    assert_eq!((parsed[3].line, differs.field.as_str()), (7, "consignee"));

    let bad_number = csv_text(&[&format!("{HEAD},Dress,620442,1,pcs,-3,CNY")]);
    let p = CsvRows::new(bad_number.as_bytes()).unwrap().next().unwrap().unwrap();
    assert_eq!(p.result.unwrap_err().field, "items[0].value_minor");
    assert!(matches!(CsvRows::new("waybill,list_no\n".as_bytes()), Err(ReadError::Header(_))));
}

#[test]
fn json_lines_skip_blank_lines_and_count_every_line() {
    let good = sample_json("EA123456785CN", 1).to_string();
    let text = format!("\n{good}\n  \n{{\"waybill\":1}}\n{good}");
    let parsed: Vec<(u64, bool)> =
        JsonLines::new(text.as_bytes()).map(|p| p.unwrap()).map(|p| (p.line, p.result.is_ok())).collect();
    assert_eq!(parsed, [(2, true), (4, false), (5, true)]);
}

fn store() -> (tempfile::TempDir, ManifestStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ManifestStore::open(&dir.path().join(DB_FILE)).unwrap();
    (dir, s)
}

fn d(waybill: &str, version: u64, consignee: &str) -> Declaration {
    decl(edit(|v| {
        v["waybill"] = json!(waybill);
        v["version"] = json!(version);
        v["consignee"] = json!(consignee);
    }))
    .unwrap()
}

#[test]
fn newer_versions_replace_older_ones_which_stay_on_record() {
    let (dir, mut s) = store();
    let w = Waybill::parse("EA123456785CN").unwrap();
    let out = s.store_batch(&[d("EA123456785CN", 1, "A"), d("EA123456785CN", 3, "B")], 10).unwrap();
    assert_eq!(out, [Stored::New, Stored::Amended { previous: 1 }]);
    let out = s
        .store_batch(&[d("EA123456785CN", 2, "C"), d("EA123456785CN", 3, "B"), d("EA123456785CN", 3, "X")], 20)
        .unwrap();
    assert_eq!(out[0], Stored::Refused { held: 3, why: "a newer version is held" });
    assert_eq!(out[1], Stored::Unchanged);
    assert!(matches!(out[2], Stored::Refused { held: 3, .. }));
    assert_eq!(s.current_version(&w), Some(3));
    assert_eq!(s.get(&w).unwrap().unwrap().consignee, "B");
    assert_eq!(s.get_version(&w, 1).unwrap().unwrap().consignee, "A");
    assert_eq!(s.versions(&w).unwrap(), [(1, 10), (3, 10)]);
    drop(s);
    let s = ManifestStore::open(&dir.path().join(DB_FILE)).unwrap();
    assert_eq!((s.len(), s.current_version(&w)), (1, Some(3)), "the index is rebuilt at open");
    let mut seen = Vec::new();
    s.for_each_current(|d| seen.push((d.waybill, d.version))).unwrap();
    assert_eq!(seen, [(w, 3)]);
}

#[test]
fn retention_removes_whole_histories_not_amended_since() {
    let (_dir, mut s) = store();
    s.store_batch(&[d("EA123456785CN", 1, "A"), d("RR473124829GB", 1, "A")], 100).unwrap();
    s.store_batch(&[d("RR473124829GB", 2, "A")], 200).unwrap();
    assert_eq!(s.purge_before(150).unwrap(), 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s.current_version(&Waybill::parse("RR473124829GB").unwrap()), Some(2));
    assert_eq!(s.versions(&Waybill::parse("RR473124829GB").unwrap()).unwrap().len(), 2);
}

#[test]
fn targets_are_durable_and_removal_is_kept() {
    let (dir, mut s) = store();
    let officer = OfficerId::new("risk-01").unwrap();
    let id = s.next_target_id().unwrap();
    assert_eq!(id, "MT-1");
    let t = new_target(id.clone(), TargetCriterion::ListNo("L1".into()), &officer, "tip-off", 1000, Some(5000));
    s.add_target(&t).unwrap();
    assert!(matches!(s.add_target(&t), Err(StoreError::TargetExists(_))));
    assert_eq!(s.standing_targets(4999).unwrap().len(), 1);
    assert!(s.standing_targets(5000).unwrap().is_empty(), "expired");
    let core = t.to_core(2000, crate::core::Millis(10)).unwrap();
    assert_eq!(core.expires_at, Some(crate::core::Millis(3010)), "moved to line time");
    drop(s);
    let mut s = ManifestStore::open(&dir.path().join(DB_FILE)).unwrap();
    let removed = s.remove_target(&id, "risk-02", 3000).unwrap();
    assert_eq!(removed.removed, Some((3000, "risk-02".into())));
    assert!(matches!(s.remove_target(&id, "risk-02", 3001), Err(StoreError::NoTarget(_))));
    assert!(s.standing_targets(3001).unwrap().is_empty());
    assert_eq!(s.targets().unwrap().len(), 1, "the removed target stays on record");
    assert_eq!(s.next_target_id().unwrap(), "MT-2");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever order versions arrive in, the current one is the highest seen, every stored
    /// version stays, and only a first arrival of a higher version is stored.
    #[test]
    fn version_precedence(versions in proptest::collection::vec(1u64..8, 1..12), batch in 1usize..4) {
        let (_dir, mut s) = store();
        let w = Waybill::parse("EA123456785CN").unwrap();
        let mut held: Option<u64> = None;
        let mut stored = std::collections::BTreeSet::new();
        for chunk in versions.chunks(batch) {
            let decls: Vec<Declaration> = chunk.iter().map(|&v| d("EA123456785CN", v, "A")).collect();
            let out = s.store_batch(&decls, 0).unwrap();
            for (&v, o) in chunk.iter().zip(out) {
                let expect = match held {
                    None => Stored::New,
                    Some(h) if v > h => Stored::Amended { previous: h },
                    Some(_) if stored.contains(&v) => Stored::Unchanged,
                    Some(h) => Stored::Refused { held: h, why: "a newer version is held" },
                };
                prop_assert_eq!(o, expect);
                if held.is_none_or(|h| v > h) {
                    held = Some(v);
                    stored.insert(v);
                }
            }
        }
        prop_assert_eq!(s.current_version(&w), held);
        let on_record: Vec<u64> = s.versions(&w).unwrap().into_iter().map(|(v, _)| v).collect();
        prop_assert_eq!(on_record, stored.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn readers_hold_their_invariants_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::check_json_lines(&data);
        fuzzing::check_csv(&data);
    }

    /// Near-valid input reaches deeper: a good line with one byte changed.
    #[test]
    fn readers_hold_their_invariants_on_damaged_lines(at in 0usize..400, byte in any::<u8>(), csv_row in any::<bool>()) {
        let mut data = if csv_row {
            let mut v = vec![1u8];
            v.extend_from_slice(format!("{HEAD},Dress,620442,1,pcs,25000,CNY\n").as_bytes());
            v
        } else {
            (sample_json("EA123456785CN", 1).to_string() + "\n").into_bytes()
        };
        let i = at % data.len();
        data[i] = byte;
        if csv_row { fuzzing::check_csv(&data) } else { fuzzing::check_json_lines(&data) }
    }
}

#[test]
fn the_seed_corpus_holds_the_invariants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/manifest_lines");
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        fuzzing::check_json_lines(&data);
        fuzzing::check_csv(&data);
    }
}
