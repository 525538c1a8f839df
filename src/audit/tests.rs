use proptest::prelude::*;
use rusqlite::{params, Connection};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::encoding::{canonical_bytes, canonical_json, entry_hash, EntryFields, GENESIS_HASH};
use super::schema::{raw_entry, SELECT_ENTRY};
use super::*;

pub(super) fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sortline.db")
}

pub(super) fn site_signer() -> Signer {
    Signer::from_seed([7; 32])
}

pub(super) fn attacker_signer() -> Signer {
    Signer::from_seed([9; 32])
}

/// Deterministic, varied entries: some with tracking only, some with both.
pub(super) fn new_entry(i: u64) -> NewEntry {
    let kinds = ["gate", "scan", "decision", "destination_sent", "divert_confirmed"];
    NewEntry {
        kind: kinds[(i % 5) as usize].to_string(),
        wall_ms: 1_700_000_000_000 + i as i64 * 10,
        mono_ms: 5_000 + i * 10,
        tracking: Some((i / 5) as u32 % 1000),
        waybill: (!i.is_multiple_of(5)).then(|| format!("EA{:09}CN", i / 5)),
        payload: json!({"i": i, "lane": "hold", "reasons": ["no_manifest", {"z": 1, "a": null}]}),
    }
}

pub(super) fn build(path: &Path, n: u64, signer: Option<Signer>, every: u64, batch: usize) -> AuditLog {
    let mut log = AuditLog::open(path, signer, every).unwrap();
    let all: Vec<NewEntry> = (1..=n).map(new_entry).collect();
    for chunk in all.chunks(batch) {
        log.append(chunk).unwrap();
    }
    log
}

/// A second connection as an attacker would use it: triggers dropped.
pub(super) fn tamper(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS audit_entries_no_update;
         DROP TRIGGER IF EXISTS audit_entries_no_delete;
         DROP TRIGGER IF EXISTS audit_archives_continue;
         DROP TRIGGER IF EXISTS audit_archives_no_update;
         DROP TRIGGER IF EXISTS audit_archives_no_delete;",
    )
    .unwrap();
    conn
}

pub(super) fn first_break(path: &Path, key: Option<&[u8; 32]>) -> Option<Break> {
    verify(path, key).unwrap().first_break
}

pub(super) fn all_entries(path: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    entries(path, |e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    out
}

/// Rewrites every hash from `from_seq` on, re-signing checkpoints with
/// `signer`, and fixes the head: the best an attacker without the site key can do.
pub(super) fn rewrite_chain_from(conn: &Connection, from_seq: u64, signer: &Signer) {
    let mut prev: [u8; 32] = if from_seq == 1 {
        GENESIS_HASH
    } else {
        let h: Vec<u8> = conn
            .query_row("SELECT hash FROM audit_entries WHERE seq = ?1", [from_seq as i64 - 1], |r| r.get(0))
            .unwrap();
        h.try_into().unwrap()
    };
    let rows: Vec<_> = {
        let mut stmt = conn.prepare(&format!("{SELECT_ENTRY} WHERE seq >= ?1 ORDER BY seq")).unwrap();
        let rows = stmt.query_map([from_seq as i64], |r| Ok(raw_entry(r)?.unwrap())).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let mut buf = Vec::new();
    for mut raw in rows {
        if raw.kind == CHECKPOINT_KIND {
            let sig = signer.sign_checkpoint(raw.seq - 1, &prev);
            raw.payload = canonical_json(&json!({
                "seq": raw.seq - 1, "head": hex::encode(prev),
                "public_key": signer.public_key_hex(), "signature": hex::encode(sig),
            }))
            .unwrap();
        }
        let h = entry_hash(&prev, &raw.fields(), &mut buf);
        conn.execute(
            "UPDATE audit_entries SET payload = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            params![raw.payload, &prev[..], &h[..], raw.seq as i64],
        )
        .unwrap();
        prev = h;
    }
    conn.execute("UPDATE audit_head SET hash = ?1", [&prev[..]]).unwrap();
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    assert_eq!(log.head(), (0, GENESIS_HASH));
    let batch: Vec<NewEntry> = (1..=7).map(new_entry).collect();
    assert_eq!(log.append(&batch).unwrap(), 7);
    assert_eq!(log.append(&[]).unwrap(), 7);
    let got = all_entries(&path);
    assert_eq!(got.len(), 7);
    let mut prev = GENESIS_HASH;
    for (e, n) in got.iter().zip(&batch) {
        assert_eq!((&e.kind, e.wall_ms, e.mono_ms), (&n.kind, n.wall_ms, n.mono_ms));
        assert_eq!((e.tracking, &e.waybill, &e.payload), (n.tracking, &n.waybill, &n.payload));
        assert_eq!(e.prev_hash, prev);
        prev = e.hash;
    }
    assert_eq!(log.head(), (7, prev));
    let report = verify(&path, None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries, report.checkpoints, report.head), (7, 0, prev));
}

#[test]
fn payload_is_stored_as_canonical_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    let mut e = new_entry(1);
    e.payload = json!({"b": [1, {"y": "é\n", "x": 2.5}], "a": true});
    log.append(&[e]).unwrap();
    let text: String =
        Connection::open(&path).unwrap().query_row("SELECT payload FROM audit_entries", [], |r| r.get(0)).unwrap();
    assert_eq!(text, r#"{"a":true,"b":[1,{"x":2.5,"y":"é\n"}]}"#);
}

/// Pins the format: if this changes, every stored hash is invalid.
#[test]
fn canonical_encoding_golden_vector() {
    let f = EntryFields {
        seq: 1,
        kind: "scan",
        wall_ms: 1_700_000_000_000,
        mono_ms: 42,
        tracking: Some(7),
        waybill: Some("EA123456785CN"),
        payload: r#"{"lane":"hold"}"#,
    };
    let mut bytes = Vec::new();
    canonical_bytes(&f, &mut bytes);
    let mut expect = b"sortline-audit-v1\0".to_vec();
    expect.extend_from_slice(&1u64.to_be_bytes());
    expect.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    expect.extend_from_slice(&42u64.to_be_bytes());
    expect.extend_from_slice(&[0, 0, 0, 4]);
    expect.extend_from_slice(b"scan");
    expect.extend_from_slice(&[1, 0, 0, 0, 7]);
    expect.extend_from_slice(&[1, 0, 0, 0, 13]);
    expect.extend_from_slice(b"EA123456785CN");
    expect.extend_from_slice(&[0, 0, 0, 15]);
    expect.extend_from_slice(br#"{"lane":"hold"}"#);
    assert_eq!(bytes, expect);
    let h = entry_hash(&GENESIS_HASH, &f, &mut bytes);
    assert_eq!(hex::encode(h), GOLDEN_HASH);
    let none = EntryFields { tracking: None, waybill: None, ..f };
    canonical_bytes(&none, &mut bytes);
    assert_eq!(bytes.len(), expect.len() - 4 - 4 - 13);
}

/// Computed independently with Python hashlib (see AUDIT.md).
const GOLDEN_HASH: &str = "df2eda1f06bbe5603b9796e25a760538447947d6d3604e289e3903be5e6d30e0";

#[test]
fn ten_thousand_entries_in_many_batches_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, Some(site_signer()), 1000).unwrap();
    let mut i = 0u64;
    let mut size = 1usize;
    while i < 10_000 {
        let batch: Vec<NewEntry> = (i + 1..=(i + size as u64).min(10_000)).map(new_entry).collect();
        i += batch.len() as u64;
        log.append(&batch).unwrap();
        size = size % 197 + 13; // varied batch sizes
    }
    let report = verify(&path, Some(&site_signer().public_key())).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // A checkpoint lands at the end of the batch that reaches 1000 entries since the last.
    assert!((9..=10).contains(&report.checkpoints), "{report:?}");
    assert_eq!(report.entries, 10_000 + report.checkpoints);
    assert_eq!(log.head(), (report.entries, report.head));
}

#[test]
fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let log = build(&path, 25, Some(site_signer()), 10, 3);
    let head = log.head();
    drop(log);
    let mut log = AuditLog::open(&path, Some(site_signer()), 10).unwrap();
    assert_eq!(log.head(), head);
    let last = log.append(&[new_entry(26)]).unwrap();
    assert_eq!(last, head.0 + 1);
    let e = all_entries(&path).pop().unwrap();
    assert_eq!((e.seq, e.prev_hash), (last, head.1));
    let report = verify(&path, Some(&site_signer().public_key())).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // 26 entries and a checkpoint after entries 10, 20 (+1 each).
    assert_eq!(report.checkpoints, 2);
}

#[test]
fn open_refuses_a_head_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 5, None, 0, 5));
    tamper(&path).execute("DELETE FROM audit_entries WHERE seq = 5", []).unwrap();
    let err = AuditLog::open(&path, None, 0).unwrap_err();
    assert!(matches!(err, AuditError::HeadMismatch { head_seq: 5, last_seq: 4, .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 5, None, 0, 5));
    tamper(&path).execute("UPDATE audit_entries SET payload = '{}' WHERE seq = 5", []).unwrap();
    let err = AuditLog::open(&path, None, 0).unwrap_err();
    assert!(matches!(err, AuditError::HeadMismatch { .. }), "{err}");
}

#[test]
fn triggers_refuse_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 3, None, 0, 3));
    let conn = Connection::open(&path).unwrap();
    let err = conn.execute("UPDATE audit_entries SET kind = 'x' WHERE seq = 2", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn.execute("DELETE FROM audit_entries WHERE seq = 2", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[test]
fn reserved_or_oversized_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    let mut e = new_entry(1);
    e.kind = CHECKPOINT_KIND.into();
    assert!(matches!(log.append(&[e]), Err(AuditError::InvalidEntry(_))));
    let mut e = new_entry(1);
    e.payload = json!("x".repeat(2 << 20));
    assert!(matches!(log.append(&[new_entry(1), e]), Err(AuditError::InvalidEntry(_))));
    assert_eq!(log.head().0, 0);
}

/// Each edit through plain SQL must be reported at the edited entry.
#[test]
fn plain_sql_edits_are_found_at_their_entry() {
    let cases: &[(&str, &str)] = &[
        ("payload", "UPDATE audit_entries SET payload = '{\"lane\":\"release\"}' WHERE seq = 37"),
        ("kind", "UPDATE audit_entries SET kind = 'verdict' WHERE seq = 37"),
        ("waybill", "UPDATE audit_entries SET waybill = 'EA000000000CN' WHERE seq = 37"),
        ("waybill removed", "UPDATE audit_entries SET waybill = NULL WHERE seq = 37"),
        ("tracking", "UPDATE audit_entries SET tracking = 999 WHERE seq = 37"),
        ("wall_ms", "UPDATE audit_entries SET wall_ms = wall_ms + 1 WHERE seq = 37"),
        ("mono_ms", "UPDATE audit_entries SET mono_ms = mono_ms - 1 WHERE seq = 37"),
        ("wall_ms type", "UPDATE audit_entries SET wall_ms = 'yesterday' WHERE seq = 37"),
    ];
    for (what, sql) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        drop(build(&path, 60, None, 0, 7));
        assert_eq!(tamper(&path).execute(sql, []).unwrap(), 1, "{what}");
        let b = first_break(&path, None).unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!(b.seq, 37, "{what}: {b:?}");
        assert!(b.problem.starts_with("hash mismatch"), "{what}: {b:?}");
    }
}

#[test]
fn deleting_a_middle_entry_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 60, None, 0, 7));
    tamper(&path).execute("DELETE FROM audit_entries WHERE seq = 41", []).unwrap();
    let b = first_break(&path, None).unwrap();
    assert_eq!(b.seq, 41);
    assert!(b.problem.starts_with("gap: entry 41 missing"), "{b:?}");
}

#[test]
fn deleting_the_last_entry_is_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 60, None, 0, 7));
    tamper(&path).execute("DELETE FROM audit_entries WHERE seq = 60", []).unwrap();
    let b = first_break(&path, None).unwrap();
    assert_eq!(b.seq, 60);
    assert!(b.problem.starts_with("truncated"), "{b:?}");
}

/// The honest limit: cutting the tail and forging the head row leaves a
/// valid, shorter chain. Only a checkpoint held outside the database (an
/// anchor, e.g. one published over MQTT) shows that the chain got shorter.
#[test]
fn tail_truncation_with_a_forged_head_needs_an_outside_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 50, Some(site_signer()), 10, 1));
    let key = site_signer().public_key();
    let report = verify(&path, Some(&key)).unwrap();
    assert!(report.is_intact());
    // Checkpoints at 11, 22, 33, 44, 55 cover 10, 21, 32, 43, 54; head is 55.
    let anchor = report.last_checkpoint.unwrap();
    assert_eq!(anchor.seq, 54);

    // Cut back to entry 40, including the checkpoints after it, and forge the head.
    let conn = tamper(&path);
    conn.execute("DELETE FROM audit_entries WHERE seq > 40", []).unwrap();
    conn.execute("UPDATE audit_head SET seq = 40, hash = (SELECT hash FROM audit_entries WHERE seq = 40)", []).unwrap();
    assert!(verify(&path, Some(&key)).unwrap().is_intact(), "limit: undetectable from inside");
    let b = verify_against(&path, Some(&key), &[anchor]).unwrap().first_break.unwrap();
    assert_eq!(b.seq, 41);
    assert!(b.problem.starts_with("truncated") && b.problem.contains("anchor 54:"), "{b:?}");
}

#[test]
fn an_anchor_catches_a_rewritten_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 30, None, 0, 4));
    let head = verify(&path, None).unwrap().head;
    let conn = tamper(&path);
    conn.execute("UPDATE audit_entries SET kind = 'x' WHERE seq = 12", []).unwrap();
    rewrite_chain_from(&conn, 12, &attacker_signer());
    assert!(verify(&path, None).unwrap().is_intact());
    let b = verify_against(&path, None, &[Anchor { seq: 30, head }]).unwrap().first_break.unwrap();
    assert_eq!(b.seq, 30);
    assert!(b.problem.contains("anchor 30:") && b.problem.contains("disagrees"), "{b:?}");
}

#[test]
fn swapping_two_entries_is_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 60, None, 0, 7));
    tamper(&path)
        .execute_batch(
            "UPDATE audit_entries SET seq = -1 WHERE seq = 20;
             UPDATE audit_entries SET seq = 20 WHERE seq = 21;
             UPDATE audit_entries SET seq = 21 WHERE seq = -1;",
        )
        .unwrap();
    let b = first_break(&path, None).unwrap();
    assert_eq!(b.seq, 20);
    assert!(b.problem.starts_with("out of order"), "{b:?}");
}

#[test]
fn checkpoint_signatures_verify_against_the_site_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 95, Some(site_signer()), 20, 6));
    let key = site_signer().public_key();
    let report = verify(&path, Some(&key)).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.checkpoints >= 4);
    assert_eq!(report.key, KeyUsed::Given { public_key_hex: hex::encode(key) });
    let report = verify(&path, None).unwrap();
    assert!(report.is_intact());
    assert_eq!(report.key, KeyUsed::Recorded { public_keys_hex: vec![hex::encode(key)] });
    // Every checkpoint is a chain entry whose payload covers the entry before it.
    let all = all_entries(&path);
    for cp in all.iter().filter(|e| e.kind == CHECKPOINT_KIND) {
        assert_eq!(cp.payload["seq"], json!(cp.seq - 1));
        assert_eq!(cp.payload["head"], json!(hex::encode(cp.prev_hash)));
    }
}

#[test]
fn a_chain_re_signed_with_another_key_fails_with_the_site_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 60, Some(site_signer()), 10, 1));
    let conn = tamper(&path);
    conn.execute("UPDATE audit_entries SET payload = '{\"lane\":\"release\"}' WHERE seq = 25", []).unwrap();
    rewrite_chain_from(&conn, 25, &attacker_signer());

    // Without the site key, the forgery is self-consistent; the report says whose key signed.
    let report = verify(&path, None).unwrap();
    assert!(report.is_intact());
    let KeyUsed::Recorded { public_keys_hex } = report.key else { panic!("{:?}", report.key) };
    assert!(public_keys_hex.contains(&attacker_signer().public_key_hex()));

    // With it, the first re-signed checkpoint (33 covers 32) is refused.
    let b = first_break(&path, Some(&site_signer().public_key())).unwrap();
    assert_eq!(b.seq, 33, "{b:?}");
    assert!(b.problem.starts_with("bad checkpoint signature"), "{b:?}");
}

#[test]
fn a_checkpoint_with_a_bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 12, Some(site_signer()), 10, 1));
    let conn = tamper(&path);
    // Keep the recorded key, corrupt the signature, then re-hash so only the signature is wrong.
    let payload: String = conn.query_row("SELECT payload FROM audit_entries WHERE seq = 11", [], |r| r.get(0)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let sig = v["signature"].as_str().unwrap().to_string();
    v["signature"] = json!(format!("{}{}", if sig.starts_with('0') { "1" } else { "0" }, &sig[1..]));
    conn.execute("UPDATE audit_entries SET payload = ?1 WHERE seq = 11", [canonical_json(&v).unwrap()]).unwrap();
    let mut buf = Vec::new();
    let mut prev = GENESIS_HASH;
    let rows: Vec<_> = {
        let mut stmt = conn.prepare(&format!("{SELECT_ENTRY} ORDER BY seq")).unwrap();
        let rows = stmt.query_map([], |r| Ok(raw_entry(r)?.unwrap())).unwrap();
        rows.map(Result::unwrap).collect()
    };
    for raw in rows {
        let h = entry_hash(&prev, &raw.fields(), &mut buf);
        conn.execute(
            "UPDATE audit_entries SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![&prev[..], &h[..], raw.seq as i64],
        )
        .unwrap();
        prev = h;
    }
    conn.execute("UPDATE audit_head SET hash = ?1", [&prev[..]]).unwrap();
    for key in [None, Some(&site_signer().public_key())] {
        let b = first_break(&path, key).unwrap();
        assert_eq!((b.seq, b.problem.as_str()), (11, "bad checkpoint signature"));
    }
}

#[test]
fn story_follows_the_waybill_and_its_tracking_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    let e = |kind: &str, tracking: Option<u32>, waybill: Option<&str>| NewEntry {
        kind: kind.into(),
        wall_ms: 1,
        mono_ms: 1,
        tracking,
        waybill: waybill.map(Into::into),
        payload: json!({}),
    };
    log.append(&[
        e("gate", Some(1), None),
        e("gate", Some(2), None),
        e("scan", Some(1), Some("EA123456785CN")),
        e("scan", Some(2), Some("EB000000000CN")),
        e("divert_confirmed", Some(1), None),
        e("verdict", None, Some("EA123456785CN")),
        e("command", None, None),
    ])
    .unwrap();
    let seqs: Vec<u64> = story(&path, "EA123456785CN").unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 3, 5, 6]);
    assert!(story(&path, "nothing").unwrap().is_empty());
}

#[test]
fn entries_between_is_half_open_and_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    let walls = [100, 300, 200, 400, 250];
    let batch: Vec<NewEntry> = walls.iter().map(|&w| NewEntry { wall_ms: w, ..new_entry(1) }).collect();
    log.append(&batch).unwrap();
    let mut seqs = Vec::new();
    let n = entries_between(&path, 200, 400, |e| {
        seqs.push(e.seq);
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(seqs, [2, 3, 5]);
    // A callback error stops the stream and comes back.
    let err = entries(&path, |_| Err(AuditError::Closed)).unwrap_err();
    assert!(matches!(err, AuditError::Closed));
}

#[test]
fn group_commit_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let log = AuditLog::open(&path, Some(site_signer()), 100).unwrap();
    let gc = GroupCommit::start(log, Duration::from_millis(2), 64);
    const THREADS: u64 = 8;
    const SUBMITS: u64 = 150;
    let mut seqs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let gc = &gc;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..SUBMITS {
                        let k = 1 + (i + t) % 3; // 1..=3 entries per submit
                        let batch = (0..k).map(|j| new_entry(t * 10_000 + i * 3 + j)).collect();
                        let ticket = gc.submit(batch).unwrap();
                        // Wait on some tickets at once (like a decision), others later.
                        if i % 4 == 0 {
                            mine.push(ticket.wait().unwrap());
                        } else {
                            mine.push(u64::MAX);
                            std::mem::drop(ticket);
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let head = gc.flush().unwrap();
    gc.shutdown().unwrap();
    seqs.retain(|&s| s != u64::MAX);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), (THREADS * SUBMITS.div_ceil(4)) as usize, "every waited ticket has its own seq");

    let entries_n: u64 = (0..THREADS).map(|t| (0..SUBMITS).map(|i| 1 + (i + t) % 3).sum::<u64>()).sum();
    let report = verify(&path, Some(&site_signer().public_key())).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries - report.checkpoints, entries_n);
    assert_eq!(report.entries, head);
    // Every 100 entries, overshooting by at most one batch.
    assert!(report.checkpoints >= entries_n / (100 + 64), "{report:?}");
    assert!(seqs.iter().all(|&s| s <= head));
}

#[test]
fn group_commit_tickets_resolve_with_their_last_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let log = AuditLog::open(&path, None, 0).unwrap();
    let gc = GroupCommit::start(log, Duration::from_millis(50), 1000);
    let a = gc.submit((1..=3).map(new_entry).collect()).unwrap();
    let b = gc.submit(vec![new_entry(4)]).unwrap();
    let empty = gc.submit(Vec::new()).unwrap();
    let c = gc.submit((5..=6).map(new_entry).collect()).unwrap();
    // An invalid submission is refused at once and does not fail the others.
    let mut bad = new_entry(7);
    bad.kind = CHECKPOINT_KIND.into();
    assert!(matches!(gc.submit(vec![bad]), Err(AuditError::InvalidEntry(_))));
    assert_eq!(gc.flush().unwrap(), 6);
    assert_eq!((a.wait().unwrap(), b.wait().unwrap()), (3, 4));
    assert_eq!((empty.wait().unwrap(), c.wait().unwrap()), (4, 6));
    // Dropping without shutdown still commits what was queued.
    let d = gc.submit(vec![new_entry(8)]).unwrap();
    drop(gc);
    assert_eq!(d.wait().unwrap(), 7);
    assert_eq!(verify(&path, None).unwrap().entries, 7);
}

#[test]
fn signer_init_load_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.key");
    let s = Signer::init(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    assert_eq!(Signer::load(&path).unwrap().public_key_hex(), s.public_key_hex());
    assert!(matches!(Signer::init(&path), Err(AuditError::KeyExists(_))));
    assert_eq!(Signer::load(&path).unwrap().public_key_hex(), s.public_key_hex());
    assert!(!format!("{s:?}").contains(&hex::encode(std::fs::read(&path).unwrap())));
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(Signer::load(&path), Err(AuditError::BadKey { .. })));
}

/// A crash inside `init` leaves at most the temporary file, which the next
/// `init` clears; the key itself appears whole or not at all.
#[test]
fn signer_init_survives_a_leftover_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("audit-ed25519.key");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path.with_extension("key.tmp"), b"").unwrap();
    let s = Signer::load_or_init(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    assert!(!path.with_extension("key.tmp").exists());
    assert_eq!(Signer::load_or_init(&path).unwrap().public_key_hex(), s.public_key_hex());
}

/// One column of one entry, changed to something else through plain SQL.
#[derive(Debug, Clone)]
enum Edit {
    Kind,
    Wall(i64),
    Mono(u8),
    Tracking(Option<u32>),
    Waybill(Option<String>),
    PayloadSpace,
    Payload(u32),
    PrevHash(u8),
    Hash(u8),
    MoveSeq,
    WallText,
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Kind),
        (1i64..1_000_000).prop_map(Edit::Wall),
        (0u8..40).prop_map(Edit::Mono),
        proptest::option::of(any::<u32>()).prop_map(Edit::Tracking),
        proptest::option::of("[A-Z]{2}[0-9]{9}[A-Z]{2}").prop_map(Edit::Waybill),
        Just(Edit::PayloadSpace),
        any::<u32>().prop_map(Edit::Payload),
        (0u8..32).prop_map(Edit::PrevHash),
        (0u8..32).prop_map(Edit::Hash),
        Just(Edit::MoveSeq),
        Just(Edit::WallText),
    ]
}

const PROP_ENTRIES: u64 = 24;

fn flip_byte(conn: &Connection, column: &str, seq: i64, i: u8) -> rusqlite::Result<usize> {
    let mut h: Vec<u8> =
        conn.query_row(&format!("SELECT {column} FROM audit_entries WHERE seq = ?1"), [seq], |r| r.get(0))?;
    h[usize::from(i)] ^= 0x5a;
    conn.execute(&format!("UPDATE audit_entries SET {column} = ?1 WHERE seq = ?2"), params![h, seq])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn any_single_edit_is_found_at_or_before_its_entry(target in 1u64..=PROP_ENTRIES * 2, edit in edit_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        // With checkpoints every 5, seqs 1..=29 hold 24 entries and 5 checkpoints.
        drop(build(&path, PROP_ENTRIES, Some(site_signer()), 5, 3));
        let conn = tamper(&path);
        let n: i64 = conn.query_row("SELECT MAX(seq) FROM audit_entries", [], |r| r.get(0)).unwrap();
        let target = 1 + (target - 1) % n as u64;
        let (tracking, waybill): (Option<i64>, Option<String>) = conn
            .query_row("SELECT tracking, waybill FROM audit_entries WHERE seq = ?1", [target as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        let t = target as i64;
        let changed = match &edit {
            Edit::Kind => conn.execute("UPDATE audit_entries SET kind = kind || 'x' WHERE seq = ?1", [t]),
            Edit::Wall(d) => conn.execute("UPDATE audit_entries SET wall_ms = wall_ms + ?1 WHERE seq = ?2", [*d, t]),
            Edit::Mono(bit) => conn.execute("UPDATE audit_entries SET mono_ms = (mono_ms | ?1) - (mono_ms & ?1) WHERE seq = ?2", [1i64 << bit, t]),
            Edit::Tracking(v) => {
                let new = v.map(i64::from);
                prop_assume!(new != tracking);
                conn.execute("UPDATE audit_entries SET tracking = ?1 WHERE seq = ?2", params![new, t])
            }
            Edit::Waybill(v) => {
                prop_assume!(*v != waybill);
                conn.execute("UPDATE audit_entries SET waybill = ?1 WHERE seq = ?2", params![v, t])
            }
            Edit::PayloadSpace => conn.execute("UPDATE audit_entries SET payload = payload || ' ' WHERE seq = ?1", [t]),
            Edit::Payload(n) => conn.execute("UPDATE audit_entries SET payload = ?1 WHERE seq = ?2", params![format!("{{\"forged\":{n}}}"), t]),
            Edit::PrevHash(i) => flip_byte(&conn, "prev_hash", t, *i),
            Edit::Hash(i) => flip_byte(&conn, "hash", t, *i),
            Edit::MoveSeq => conn.execute("UPDATE audit_entries SET seq = seq + 1000 WHERE seq = ?1", [t]),
            Edit::WallText => conn.execute("UPDATE audit_entries SET wall_ms = 'noon' WHERE seq = ?1", [t]),
        }.unwrap();
        prop_assume!(changed == 1);
        let b = first_break(&path, Some(&site_signer().public_key()));
        prop_assert!(b.is_some(), "{edit:?} at {target} not detected");
        let b = b.unwrap();
        prop_assert!(b.seq <= target, "{edit:?} at {target} reported at {b:?}");
        prop_assert_eq!(b.seq, target, "{:?}: {:?}", edit, b);
    }
}

#[test]
fn a_clean_stop_signs_the_tail_and_the_checkpoint_is_told_off_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Bounds that never sign on their own here: only the stop does.
    let mut log = build(&path, 25, Some(site_signer()), 1000, 5);
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = told.clone();
    log.observe_checkpoints(Box::new(move |cp| sink.lock().unwrap().push(cp.clone())));
    assert_eq!(log.unsigned(), 25);
    assert_eq!(verify(&path, None).unwrap().unsigned, 25);
    assert!(log.checkpoint_now(1_700_000_009_999).unwrap());
    assert!(!log.checkpoint_now(1_700_000_010_000).unwrap(), "nothing new to sign");
    assert_eq!(log.unsigned(), 0);
    let v = verify(&path, Some(&site_signer().public_key())).unwrap();
    assert!(v.is_intact() && v.unsigned == 0, "{v:?}");
    let told = told.lock().unwrap();
    assert_eq!(told.len(), 1);
    let cp = &told[0];
    assert_eq!((cp.entry_seq, cp.payload.seq), (26, 25));
    assert_eq!(cp.payload.anchor(), v.last_checkpoint, "what was told is the anchor verify finds");
    // Entries after it are unsigned again, and counted so.
    log.append(&[new_entry(26), new_entry(27)]).unwrap();
    assert_eq!(verify(&path, None).unwrap().unsigned, 2);
}
