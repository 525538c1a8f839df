//! `sortline manifest import|show` and `sortline target` run as the built binary: bad lines
//! reported by line and field, good ones kept, a second import changing nothing, a failed
//! batch rolled back whole with the batches before it kept, all of it across restarts.

use serde_json::json;
use sortline::core::waybill::s10_check_digit;
use sortline::core::Waybill;
use sortline::manifest::{ManifestStore, DB_FILE};
use std::path::Path;
use std::process::{Command, Output};

fn sortline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s10(n: u32) -> String {
    let serial: [u8; 8] = format!("{n:08}").as_bytes().try_into().unwrap();
    format!("EA{n:08}{}CN", s10_check_digit(&serial))
}

fn line(waybill: &str, version: u64) -> serde_json::Value {
    json!({
        "waybill": waybill, "list_no": format!("L-{waybill}"), "version": version,
        "platform_time": "2026-03-01T08:00:00Z", "direction": "export",
        "ecommerce_ref": "ORD-1", "logistics_ref": "LOG-1", "payment_ref": "PAY-1",
        "channel": "green", "status": "accepted", "licence_required": false, "platform_targeted": false,
        "consignor": "Suzhou Silk Ltd", "consignee": "Jane Doe", "country": "US", "gross_weight_g": 800,
        "items": [{"name": "Silk Dress", "hs_code": "620442", "quantity": 1, "unit": "pcs",
                   "value_minor": 25000, "currency": "CNY"}]
    })
}

fn held(data: &Path) -> usize {
    ManifestStore::open(&data.join(DB_FILE)).unwrap().len()
}

#[test]
fn bad_lines_are_reported_good_ones_imported_and_a_second_import_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("lists.jsonl");
    let mut bad_hs = line(&s10(3), 1);
    bad_hs["items"][0]["hs_code"] = json!("62");
    let mut bad_country = line(&s10(4), 1);
    bad_country["country"] = json!("XX");
    let mut negative = line(&s10(5), 1);
    negative["items"][0]["value_minor"] = json!(-100);
    let lines = [
        line(&s10(1), 1).to_string(),
        line(&s10(2), 1).to_string(),
        bad_hs.to_string(),
        line("EA000000009CN", 1).to_string(),
        bad_country.to_string(),
        negative.to_string(),
        "{\"waybill\": ".into(),
        line(&s10(2), 2).to_string(),
        line(&s10(1), 1).to_string().replace("Jane Doe", "John Roe"),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let args = ["manifest", "import", file.to_str().unwrap(), "--data", data.to_str().unwrap(), "--batch-size", "2"];

    let first = sortline(&args);
    let out = stdout(&first);
    assert_eq!(first.status.code(), Some(2), "{out}");
    for expected in [
        "rejected line 3: items[0].hs_code:",
        "rejected line 4: waybill:",
        "rejected line 5: country:",
        "rejected line 6: items[0].value_minor:",
        "rejected line 7: (json):",
        "rejected line 9: version:",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(out.contains("9 declarations read: 2 new, 1 amended, 0 already held, 6 rejected; 2 held"), "{out}");

    let second = sortline(&args);
    let out2 = stdout(&second);
    assert_eq!(second.status.code(), Some(2));
    assert!(out2.contains("0 new, 0 amended, 3 already held, 6 rejected; 2 held"), "{out2}");

    // Each run is a fresh process: what is shown comes from the file.
    let show = sortline(&["manifest", "show", &s10(2), "--data", data.to_str().unwrap()]);
    let shown = stdout(&show);
    assert!(show.status.success(), "{shown}");
    assert!(shown.contains("\"version\": 2") && shown.contains("version 1 received"), "{shown}");
    let s = ManifestStore::open(&data.join(DB_FILE)).unwrap();
    assert_eq!(s.current_version(&Waybill::parse(&s10(1)).unwrap()), Some(1));
    assert_eq!(s.get(&Waybill::parse(&s10(1)).unwrap()).unwrap().unwrap().consignee, "Jane Doe", "never overwritten");
    assert_eq!(s.versions(&Waybill::parse(&s10(2)).unwrap()).unwrap().len(), 2, "the older version stays");
    let missing = sortline(&["manifest", "show", &s10(9), "--data", data.to_str().unwrap()]);
    assert!(!missing.status.success());
}

#[test]
fn csv_imports_one_row_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lists.csv");
    let header = sortline::manifest::CSV_DECLARATION_COLUMNS
        .iter()
        .chain(sortline::manifest::CSV_ITEM_COLUMNS.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    let head =
        |w: &str| format!("{w},L1,1,2026-03-01T08:00:00Z,import,O1,G1,P1,red,accepted,true,false,A Ltd,B,JP,900");
    let text = format!(
        "{header}\n{a},Camera,852580,1,pcs,300000,CNY\n{a},Lens,900211,2,pcs,90000,CNY\n{b},Tea,0902,1,kg,100,CNY\n",
        a = head(&s10(7)),
        b = head(&s10(8))
    );
    std::fs::write(&file, text).unwrap();
    let o = sortline(&["manifest", "import", file.to_str().unwrap(), "--data", dir.path().to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("rejected line 4: items[0].hs_code:"), "{out}");
    let s = ManifestStore::open(&dir.path().join(DB_FILE)).unwrap();
    assert_eq!(s.get(&Waybill::parse(&s10(7)).unwrap()).unwrap().unwrap().items.len(), 2);
}

#[test]
fn a_failed_batch_is_absent_whole_and_the_batches_before_it_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let file = data.join("big.jsonl");
    let text: String = (1..=50).map(|n| line(&s10(n), 1).to_string() + "\n").collect();
    std::fs::write(&file, text).unwrap();
    held(data);
    // The disk "fails" at line 35, in the fourth batch of ten.
    let conn = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER fail BEFORE INSERT ON manifest_versions WHEN NEW.waybill = '{}' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        s10(35)
    ))
    .unwrap();
    let args = ["manifest", "import", file.to_str().unwrap(), "--data", data.to_str().unwrap(), "--batch-size", "10"];
    let o = sortline(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("batch starting at line 31 not stored (rolled back)"), "{err}");
    let s = ManifestStore::open(&data.join(DB_FILE)).unwrap();
    assert_eq!(s.len(), 30, "batches 1 to 3 stay, the fourth is absent whole");
    assert!(s.current_version(&Waybill::parse(&s10(30)).unwrap()).is_some());
    assert!(s.current_version(&Waybill::parse(&s10(31)).unwrap()).is_none());
    drop(s);

    conn.execute_batch("DROP TRIGGER fail").unwrap();
    let o = sortline(&args);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("20 new, 0 amended, 30 already held, 0 rejected; 50 held"), "{}", stdout(&o));
}

/// SIGKILL in the middle of an import: the store opens consistent, holding whole batches only,
/// and the same import run again completes it.
#[test]
fn a_killed_import_leaves_whole_batches_and_completes_on_a_second_run() {
    const LINES: u32 = 40_000;
    const BATCH: u32 = 500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let file = data.join("big.jsonl");
    let text: String = (1..=LINES).map(|n| line(&s10(n), 1).to_string() + "\n").collect();
    std::fs::write(&file, text).unwrap();
    held(data);
    let batch = BATCH.to_string();
    let args = ["manifest", "import", file.to_str().unwrap(), "--data", data.to_str().unwrap(), "--batch-size", &batch];
    let mut import = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conn = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    let count = || -> u32 { conn.query_row("SELECT COUNT(*) FROM manifest_versions", [], |r| r.get(0)).unwrap_or(0) };
    // At most a minute for the first batch.
    let committed = (0..30_000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        count() >= BATCH
    });
    assert!(committed, "no batch committed");
    import.kill().unwrap();
    import.wait().unwrap();
    let s = ManifestStore::open(&data.join(DB_FILE)).unwrap();
    let kept = s.len() as u32;
    assert!(kept < LINES, "killed before the end ({kept} of {LINES} held)");
    assert_eq!(kept % BATCH, 0, "{kept} held: only whole batches");
    drop(s);
    let o = sortline(&args);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(held(data), LINES as usize);
}

#[test]
fn targets_are_stored_listed_removed_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = sortline(&[
        "target",
        "add",
        "--data",
        data,
        "--by",
        "list-no",
        "L-42",
        "--author",
        "risk-01",
        "--reason",
        "tip-off",
        "--expires",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    assert!(stdout(&add).contains("target MT-1 added"));
    let bad = sortline(&["target", "add", "--data", data, "--by", "waybill", "EA1", "--author", "r", "--reason", "x"]);
    assert!(!bad.status.success());
    // While another process writes the chain (a running daemon), a target change is refused
    // before anything is stored.
    {
        let _writer = sortline::audit::AuditLog::open(&dir.path().join(sortline::audit::DB_FILE), None, 0).unwrap();
        let busy =
            sortline(&["target", "add", "--data", data, "--by", "hs-prefix", "22", "--author", "r", "--reason", "x"]);
        assert!(!busy.status.success());
        assert!(String::from_utf8_lossy(&busy.stderr).contains("open for writing by another process"), "{busy:?}");
    }
    let list = stdout(&sortline(&["target", "list", "--data", data]));
    assert!(list.contains("MT-1 {\"by\":\"list_no\",\"value\":\"L-42\"} by risk-01"), "{list}");
    let rm = sortline(&["target", "remove", "MT-1", "--data", data, "--author", "risk-02"]);
    assert!(rm.status.success());
    assert!(!sortline(&["target", "remove", "MT-1", "--data", data, "--author", "risk-02"]).status.success());
    assert_eq!(stdout(&sortline(&["target", "list", "--data", data])), "");
    assert!(stdout(&sortline(&["target", "list", "--all", "--data", data])).contains("REMOVED"));
    let kinds: Vec<String> = {
        let mut k = Vec::new();
        sortline::audit::entries(&dir.path().join(sortline::audit::DB_FILE), |e| {
            k.push(e.kind);
            Ok(())
        })
        .unwrap();
        k
    };
    assert_eq!(kinds, ["target_add", "target_remove"]);
    assert!(sortline(&["audit", "verify", "--data", data]).status.success());
}

#[test]
fn operator_state_is_shown_and_a_reset_forgets_rates_but_keeps_a_stop_on_record() {
    use sortline::core::{OfficerId, OperatorState, PerChannel};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut store = sortline::manifest::OperatorStore::open(&dir.path().join(DB_FILE)).unwrap();
    let set = OperatorState {
        stopped_by: Some(OfficerId::new("ops-1").unwrap()),
        sample_rate: Some(PerChannel { green: 0.5, red: 1.0 }),
        review_window_ms: Some(4_000),
        ..OperatorState::default()
    };
    store.save_state(&set, 0).unwrap();
    let shown = sortline(&["operator", "show", "--data", data]);
    assert!(shown.status.success());
    let back: OperatorState = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(back, set);
    let reset = sortline(&["operator", "reset", "--data", data, "--author", "ops-2"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let after = store.operator_state().unwrap();
    assert_eq!(after, OperatorState { stopped_by: set.stopped_by.clone(), ..OperatorState::default() });
    let mut recorded = Vec::new();
    sortline::audit::entries(&dir.path().join(sortline::audit::DB_FILE), |e| {
        recorded.push((e.kind.clone(), e.payload["command"].clone(), e.payload["operator"].clone()));
        Ok(())
    })
    .unwrap();
    assert_eq!(recorded, vec![("command".to_string(), "operator_reset".into(), "ops-2".into())]);
    assert!(!sortline(&["operator", "reset", "--data", data, "--author", "has space"]).status.success());
}
