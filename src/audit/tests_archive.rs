//! Retention (archive files) and timed checkpoints.

use rusqlite::{params, Connection};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::archive::archive_capped;
use super::tests::{all_entries, build, db, first_break, new_entry, site_signer, tamper};
use super::*;

/// wall_ms of `new_entry(i)`.
fn wall(i: u64) -> i64 {
    1_700_000_000_000 + i as i64 * 10
}

fn arch_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("archive")
}

fn key() -> [u8; 32] {
    site_signer().public_key()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn header(file: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(file).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn archive_rows(path: &Path) -> i64 {
    Connection::open(path).unwrap().query_row("SELECT COUNT(*) FROM audit_archives", [], |r| r.get(0)).unwrap()
}

/// 600 entries, checkpoints every 50, the first ~300 archived.
fn archived_db(dir: &tempfile::TempDir) -> (PathBuf, ArchiveReport) {
    let path = db(dir);
    drop(build(&path, 600, Some(site_signer()), 50, 4));
    let r = archive(&path, wall(300), &arch_dir(dir), 1).unwrap().unwrap();
    (path, r)
}

#[test]
fn archive_a_prefix_then_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 5000, Some(site_signer()), 500, 7));
    let before = all_entries(&path);
    let at = |seq: u64| &before[seq as usize - 1];
    let cut = wall(2200);

    let r = archive(&path, cut, &arch_dir(&dir), 42).unwrap().unwrap();
    // Cut at the last checkpoint whose entries are all older than the cut.
    assert_eq!(r.first_seq, 1);
    assert_eq!(at(r.last_seq).kind, CHECKPOINT_KIND);
    assert!(before[..r.last_seq as usize].iter().all(|e| e.wall_ms < cut));
    let next_checkpoint = before.iter().find(|e| e.seq > r.last_seq && e.kind == CHECKPOINT_KIND).unwrap();
    assert!(next_checkpoint.wall_ms >= cut, "{} would have fitted", next_checkpoint.seq);
    assert_eq!((r.entries, r.head), (r.last_seq, at(r.last_seq).hash));
    assert_eq!(r.file_sha256, sha256_file(&r.file));
    assert!(r.file.starts_with(arch_dir(&dir)));
    assert_eq!(archive_rows(&path), 1);

    // The database verifies from the archive on, the file on its own.
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.first_seq, r.last_seq + 1);
    assert_eq!(v.entries, before.len() as u64 - r.entries);
    assert_eq!(v.head, before.last().unwrap().hash);
    let f = verify_archive(&r.file, Some(&key())).unwrap();
    assert!(f.is_intact(), "{f:?}");
    assert_eq!((f.first_seq, f.entries, f.head), (1, r.entries, r.head));
    assert_eq!(
        f.checkpoints,
        before[..r.last_seq as usize].iter().filter(|e| e.kind == CHECKPOINT_KIND).count() as u64
    );
    assert_eq!(f.last_checkpoint, Some(Anchor { seq: r.last_seq - 1, head: at(r.last_seq - 1).hash }));

    // Queries see what remains.
    let rest = all_entries(&path);
    assert_eq!(rest[..], before[r.last_seq as usize..]);
    assert_eq!(story(&path, &format!("EA{:09}CN", 4000 / 5)).unwrap().len(), 5);
    assert!(story(&path, &format!("EA{:09}CN", 100 / 5)).unwrap().is_empty(), "archived");

    // An anchor in the archived part is checked on the file, not the database.
    let anchor = f.last_checkpoint.unwrap();
    let v = verify_against(&path, Some(&key()), &[anchor]).unwrap();
    assert!(v.is_intact() && (v.anchors_archived, v.anchors_checked) == (1, 0), "{v:?}");
    assert!(verify_archive_against(&r.file, Some(&key()), Some(anchor)).unwrap().is_intact());
    let forged = Anchor { head: [1; 32], ..anchor };
    assert_eq!(verify_archive_against(&r.file, None, Some(forged)).unwrap().first_break.unwrap().seq, anchor.seq);

    // The second archive continues from the first, file to file.
    let r2 = archive(&path, wall(4100), &arch_dir(&dir), 43).unwrap().unwrap();
    assert_eq!(r2.first_seq, r.last_seq + 1);
    assert_eq!(header(&r2.file)["prev_hash"], json!(hex::encode(r.head)));
    assert_eq!(header(&r2.file)["first_seq"], json!(r2.first_seq));
    let f2 = verify_archive(&r2.file, Some(&key())).unwrap();
    assert!(f2.is_intact(), "{f2:?}");
    assert_eq!((f2.first_seq, f2.entries), (r2.first_seq, r2.entries));
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.first_seq, r2.last_seq + 1);
    assert_eq!(archive_rows(&path), 2);

    // The writer reopens and continues the chain after archives.
    let mut log = AuditLog::open(&path, Some(site_signer()), 500).unwrap();
    log.append(&(5001..=5600).map(new_entry).collect::<Vec<_>>()).unwrap();
    drop(log);
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.first_seq, r2.last_seq + 1);
}

#[test]
fn archiving_everything_leaves_a_chain_that_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Checkpoints after entries 50 and 100: the head is a checkpoint (seq 102).
    let mut log = build(&path, 100, Some(site_signer()), 50, 5);
    let head = log.head();
    let r = archive(&path, wall(1000), &arch_dir(&dir), 7).unwrap().unwrap();
    assert_eq!((r.last_seq, r.head), head);
    assert!(all_entries(&path).is_empty());
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!((v.first_seq, v.entries, v.head), (103, 0, head.1));
    assert_eq!(archive(&path, wall(1000), &arch_dir(&dir), 8).unwrap(), None);

    // The open writer's cached head is still the chain's head; so is a reopened one's.
    log.append(&[new_entry(101)]).unwrap();
    drop(log);
    let mut log = AuditLog::open(&path, Some(site_signer()), 50).unwrap();
    assert_eq!(log.head().0, 103);
    log.append(&(102..=160).map(new_entry).collect::<Vec<_>>()).unwrap();
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.checkpoints, 1, "50 entries since the archived checkpoint");
}

#[test]
fn archiving_while_the_log_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    const N: u64 = 3000;
    let log = AuditLog::open(&path, Some(site_signer()), 40).unwrap();
    let mut reports = Vec::new();
    // Every 150 entries the writer waits for one more archive to be done, so
    // that the two overlap many times however fast the disk is. (No deadlock:
    // those 150 entries hold new checkpoints for the next run to take.)
    let (runs, ran) = std::sync::mpsc::channel::<()>();
    let head = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut log = log;
            let all: Vec<NewEntry> = (1..=N).map(new_entry).collect();
            for (i, chunk) in all.chunks(3).enumerate() {
                log.append(chunk).unwrap();
                if i % 50 == 49 {
                    ran.recv().unwrap();
                }
            }
            log.head()
        });
        // Everything is old: each run takes all up to the newest checkpoint, often the head itself.
        while !writer.is_finished() {
            if let Some(r) = archive(&path, wall(N + 1), &arch_dir(&dir), 0).unwrap() {
                reports.push(r);
                let _ = runs.send(());
            }
        }
        writer.join().unwrap()
    });
    reports.extend(archive(&path, wall(N + 1), &arch_dir(&dir), 0).unwrap());
    assert!(reports.len() >= 10, "{}", reports.len());
    let mut next = 1;
    for r in &reports {
        assert_eq!(r.first_seq, next);
        let f = verify_archive(&r.file, Some(&key())).unwrap();
        assert!(f.is_intact(), "{f:?}");
        next = r.last_seq + 1;
    }
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.first_seq, next);
    assert_eq!(next - 1 + v.entries, head.0);
    assert_eq!(v.head, head.1);
}

#[test]
fn only_archived_entries_may_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (path, r) = archived_db(&dir);
    let conn = Connection::open(&path).unwrap();
    for seq in [r.last_seq + 1, r.last_seq + 5] {
        let err = conn.execute("DELETE FROM audit_entries WHERE seq = ?1", [seq as i64]).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let err = conn.execute("UPDATE audit_archives SET last_hash = zeroblob(32)", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn.execute("DELETE FROM audit_archives", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // A row claiming entries it does not describe cannot open the way to deletes.
    let err = conn
        .execute(
            "INSERT INTO audit_archives VALUES (?1, ?2, zeroblob(32), zeroblob(32), 'x', zeroblob(32), 10, 0)",
            params![r.last_seq as i64 + 1, r.last_seq as i64 + 10],
        )
        .unwrap_err();
    assert!(err.to_string().contains("does not continue"), "{err}");
    assert!(verify(&path, Some(&key())).unwrap().is_intact());

    // Without the triggers, verify still names the deleted entry.
    tamper(&path).execute("DELETE FROM audit_entries WHERE seq = ?1", [r.last_seq as i64 + 5]).unwrap();
    let b = first_break(&path, Some(&key())).unwrap();
    assert_eq!(b.seq, r.last_seq + 5);
    assert!(b.problem.starts_with("gap"), "{b:?}");
}

#[test]
fn deleting_the_first_remaining_entry_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (path, r) = archived_db(&dir);
    tamper(&path).execute("DELETE FROM audit_entries WHERE seq = ?1", [r.last_seq as i64 + 1]).unwrap();
    let b = first_break(&path, None).unwrap();
    assert_eq!(b.seq, r.last_seq + 1);
    assert!(b.problem.starts_with("gap"), "{b:?}");
}

#[test]
fn changed_archive_rows_break_the_chain() {
    // (what, SQL given first_seq of the two archives, where the break must be named)
    type Case = (&'static str, fn(&ArchiveReport, &ArchiveReport) -> String, fn(&ArchiveReport, &ArchiveReport) -> u64);
    let cases: &[Case] = &[
        (
            "newest last_hash",
            |_, r2| format!("UPDATE audit_archives SET last_hash = zeroblob(32) WHERE first_seq = {}", r2.first_seq),
            |_, r2| r2.last_seq + 1,
        ),
        (
            "older last_hash",
            |_, _| "UPDATE audit_archives SET last_hash = zeroblob(32) WHERE first_seq = 1".into(),
            |_, r2| r2.first_seq,
        ),
        (
            "older last_seq",
            |_, _| {
                "UPDATE audit_archives SET last_seq = last_seq - 1, entries = entries - 1 WHERE first_seq = 1".into()
            },
            |r, _| r.last_seq,
        ),
        (
            "newest row deleted",
            |_, r2| format!("DELETE FROM audit_archives WHERE first_seq = {}", r2.first_seq),
            |_, r2| r2.first_seq,
        ),
        ("every row deleted", |_, _| "DELETE FROM audit_archives".into(), |_, _| 1),
        (
            "wrong count",
            |_, r2| format!("UPDATE audit_archives SET entries = 3 WHERE first_seq = {}", r2.first_seq),
            |_, r2| r2.first_seq,
        ),
        ("malformed", |_, _| "UPDATE audit_archives SET last_hash = 'x' WHERE first_seq = 1".into(), |_, _| 1),
        (
            "archived but still stored",
            |_, r2| {
                format!(
                    "INSERT INTO audit_archives SELECT seq, seq, prev_hash, hash, 'x', zeroblob(32), 1, 0 \
                     FROM audit_entries WHERE seq = {}",
                    r2.last_seq + 1
                )
            },
            |_, r2| r2.last_seq + 1,
        ),
    ];
    for (what, sql, seq) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (path, r) = archived_db(&dir);
        let r2 = archive(&path, wall(500), &arch_dir(&dir), 2).unwrap().unwrap();
        assert!(verify(&path, Some(&key())).unwrap().is_intact());
        assert!(tamper(&path).execute(&sql(&r, &r2), []).unwrap() > 0, "{what}");
        let b = first_break(&path, Some(&key())).unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!(b.seq, seq(&r, &r2), "{what}: {b:?}");
    }
}

#[test]
fn an_edited_archive_file_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, r) = archived_db(&dir);
    let pristine = std::fs::read_to_string(&r.file).unwrap();
    let lines: Vec<&str> = pristine.lines().collect();
    assert_eq!(lines.len() as u64, r.entries + 1, "a header and one line per entry");
    let edited = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        f(&mut l);
        std::fs::write(&r.file, l.join("\n") + "\n").unwrap();
        verify_archive(&r.file, Some(&key())).unwrap().first_break
    };
    let set = |l: &mut Vec<String>, seq: usize, field: &str, v: serde_json::Value| {
        let mut e: serde_json::Value = serde_json::from_str(&l[seq]).unwrap();
        e[field] = v;
        l[seq] = e.to_string();
    };
    assert_eq!(edited(&|_| {}), None);

    let b = edited(&|l| set(l, 100, "payload", json!("{\"lane\":\"release\"}"))).unwrap();
    assert_eq!(b.seq, 100, "{b:?}");
    assert!(b.problem.starts_with("hash mismatch"), "{b:?}");
    let b = edited(&|l| set(l, 77, "wall_ms", json!(1))).unwrap();
    assert_eq!(b.seq, 77, "{b:?}");
    let b = edited(&|l| l[120] = l[120].replace("\"kind\":", "\"kind\" ")).unwrap();
    assert_eq!(b.seq, 120, "{b:?}");
    assert!(b.problem.contains("line 121"), "{b:?}");
    let b = edited(&|l| {
        l.remove(42);
    })
    .unwrap();
    assert_eq!((b.seq, &b.problem[..3]), (42, "gap"), "{b:?}");
    let b = edited(&|l| l.truncate(l.len() - 3)).unwrap();
    assert_eq!(b.seq, r.last_seq - 2, "{b:?}");
    assert!(b.problem.starts_with("truncated"), "{b:?}");
    // Truncated and the header rewritten to match: the file no longer ends signed.
    let b = edited(&|l| {
        l.truncate(l.len() - 3);
        let mut h: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        let last = &l[l.len() - 1];
        h["last_seq"] = json!(r.last_seq - 3);
        h["entries"] = json!(r.entries - 3);
        h["head"] = serde_json::from_str::<serde_json::Value>(last).unwrap()["hash"].clone();
        l[0] = h.to_string();
    })
    .unwrap();
    assert!(b.problem.starts_with("unsigned"), "{b:?}");
    let b = edited(&|l| set(l, 0, "head", json!(hex::encode([3u8; 32])))).unwrap();
    assert_eq!(b.seq, r.last_seq, "{b:?}");
    let b = edited(&|l| set(l, 0, "prev_hash", json!(hex::encode([3u8; 32])))).unwrap();
    assert_eq!(b.seq, 1, "{b:?}");
    let b = edited(&|l| l[0] = "{}".into()).unwrap();
    assert_eq!(b.seq, 0, "{b:?}");
    assert!(b.problem.starts_with("bad archive header"), "{b:?}");
}

#[test]
fn nothing_old_enough_returns_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Checkpoints after entries 50, 100, 150 (seqs 51, 102, 153).
    drop(build(&path, 160, Some(site_signer()), 50, 5));
    assert_eq!(archive(&path, wall(1), &arch_dir(&dir), 0).unwrap(), None);
    // Entry 50 is covered by the first checkpoint, but entry 50 itself is not older than the cut.
    assert_eq!(archive(&path, wall(50), &arch_dir(&dir), 0).unwrap(), None);
    assert!(!arch_dir(&dir).exists(), "no file, not even a directory");
    assert_eq!(archive(&path, wall(51), &arch_dir(&dir), 0).unwrap().unwrap().last_seq, 51);

    // A chain without checkpoints is never archived: the file would not be signed.
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 160, None, 50, 5));
    assert_eq!(archive(&path, wall(10_000), &arch_dir(&dir), 0).unwrap(), None);
}

#[test]
fn a_broken_segment_is_not_archived() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(build(&path, 200, Some(site_signer()), 50, 5));
    tamper(&path).execute("UPDATE audit_entries SET payload = '{}' WHERE seq = 10", []).unwrap();
    let err = archive(&path, wall(1000), &arch_dir(&dir), 0).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { seq: 10, .. }), "{err}");
    assert_eq!(all_entries(&path).len(), 204);
    assert_eq!(std::fs::read_dir(arch_dir(&dir)).unwrap().count(), 0, "the partial file is gone");
}

#[test]
fn a_v1_database_migrates_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open_at_schema(&path, Some(site_signer()), 50, 1).unwrap();
    log.append(&(1..=120).map(new_entry).collect::<Vec<_>>()).unwrap();
    drop(log);
    let conn = Connection::open(&path).unwrap();
    let version =
        |c: &Connection| -> i64 { c.query_row("SELECT MAX(version) FROM audit_migrations", [], |r| r.get(0)).unwrap() };
    assert_eq!(version(&conn), 1);
    assert!(conn.execute("SELECT 1 FROM audit_archives", []).is_err(), "v1 has no archive table");
    // Readers work on v1 as it is (they open read-only and cannot migrate).
    assert!(verify(&path, Some(&key())).unwrap().is_intact());

    let mut log = AuditLog::open(&path, Some(site_signer()), 50).unwrap();
    assert_eq!(version(&conn), 2);
    log.append(&(121..=130).map(new_entry).collect::<Vec<_>>()).unwrap();
    drop(log);
    assert!(verify(&path, Some(&key())).unwrap().is_intact());
    let err = conn.execute("DELETE FROM audit_entries WHERE seq = 1", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let r = archive(&path, wall(1000), &arch_dir(&dir), 0).unwrap().unwrap();
    // One batch of 120, so one checkpoint after it (121).
    assert_eq!((r.first_seq, r.last_seq), (1, 121));
    assert!(verify(&path, Some(&key())).unwrap().is_intact());
}

/// A batch at `wall_ms` of `n` entries.
fn at(wall_ms: i64, n: usize) -> Vec<NewEntry> {
    (0..n).map(|i| NewEntry { wall_ms, ..new_entry(i as u64 + 1) }).collect()
}

fn checkpoints(path: &Path) -> Vec<u64> {
    all_entries(path).into_iter().filter(|e| e.kind == CHECKPOINT_KIND).map(|e| e.seq).collect()
}

#[test]
fn checkpoints_every_m_ms_of_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    const M: u64 = 60_000;
    let t0 = 1_700_000_000_000;
    // The count bound is far away: only time signs.
    let mut log = AuditLog::open(&path, Some(site_signer()), 1000).unwrap();
    log.set_checkpoint_interval_ms(Some(M));
    log.append(&at(t0, 3)).unwrap(); // 1..=3; no checkpoint yet, so one at once: 4
    log.append(&at(t0 + 10_000, 2)).unwrap(); // 5, 6
    log.append(&at(t0 + 59_999, 1)).unwrap(); // 7
    assert_eq!(checkpoints(&path), [4]);
    // The batch's newest wall clock counts, not its last entry's.
    let mut batch = at(t0 + 60_000, 2);
    batch[1].wall_ms = t0 + 30_000;
    log.append(&batch).unwrap(); // 8, 9, checkpoint 10 (wall copied from entry 9: t0 + 30 s)
    assert_eq!(checkpoints(&path), [4, 10]);
    // A clock stepped back by M or more does not stall the bound.
    log.append(&at(t0 - 40_000, 1)).unwrap(); // 11, checkpoint 12
    assert_eq!(checkpoints(&path), [4, 10, 12]);

    // Idle: a tick signs the last entries once M has passed since the last checkpoint.
    log.append(&at(t0 - 30_000, 1)).unwrap(); // 13
    assert!(!log.checkpoint_if_due(t0 - 40_000 + 59_999).unwrap());
    assert!(log.checkpoint_if_due(t0 - 40_000 + 60_000).unwrap()); // 14, wall of entry 13
    assert!(!log.checkpoint_if_due(t0 + 10_000_000).unwrap(), "nothing since");
    assert_eq!(log.head().0, 14);
    drop(log);

    // Reopened: the last checkpoint's time comes from the database.
    let mut log = AuditLog::open(&path, Some(site_signer()), 1000).unwrap();
    log.set_checkpoint_interval_ms(Some(M));
    log.append(&at(t0 - 30_000 + 59_999, 1)).unwrap(); // 15
    assert_eq!(checkpoints(&path), [4, 10, 12, 14]);
    log.append(&at(t0 + 30_000, 1)).unwrap(); // 16, checkpoint 17
    assert_eq!(checkpoints(&path), [4, 10, 12, 14, 17]);
    // Off again: only the count bound.
    log.set_checkpoint_interval_ms(None);
    log.append(&at(t0 + 100_000_000, 1)).unwrap();
    assert_eq!(checkpoints(&path).len(), 5);
    drop(log);
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_intact(), "{v:?}");

    // Without a signer there is nothing to sign with.
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut log = AuditLog::open(&path, None, 0).unwrap();
    log.set_checkpoint_interval_ms(Some(1));
    log.append(&at(t0, 1)).unwrap();
    assert!(!log.checkpoint_if_due(t0 + 10).unwrap());
    assert!(checkpoints(&path).is_empty());
}

#[test]
fn count_and_time_bounds_together_and_through_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let t0 = 1_700_000_000_000;
    let mut log = AuditLog::open(&path, Some(site_signer()), 5).unwrap();
    log.set_checkpoint_interval_ms(Some(1000));
    let gc = GroupCommit::start(log, Duration::from_millis(1), 100);
    gc.submit(at(t0, 1)).unwrap().wait().unwrap(); // 1, checkpoint 2 (first ever)
    gc.submit(at(t0 + 1, 5)).unwrap().wait().unwrap(); // 3..=7, checkpoint 8 by count
    gc.submit(at(t0 + 2, 1)).unwrap().wait().unwrap(); // 9
    assert!(!gc.checkpoint_if_due(t0 + 999).unwrap());
    assert!(gc.checkpoint_if_due(t0 + 1001).unwrap()); // 10
    assert_eq!(gc.flush().unwrap(), 10);
    gc.shutdown().unwrap();
    assert_eq!(checkpoints(&path), [2, 8, 10]);
    assert!(verify(&path, Some(&key())).unwrap().is_intact());
}

#[test]
fn one_run_moves_at_most_the_cap_unless_no_checkpoint_fits() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Checkpoints every 10 entries: seqs 11, 22, 33, …
    drop(build(&path, 200, Some(site_signer()), 10, 1));
    let run = |cap| archive_capped(&path, wall(1000), &arch_dir(&dir), 0, cap).unwrap().unwrap();
    let (a, b) = (run(25), run(25));
    assert_eq!([(a.first_seq, a.last_seq), (b.first_seq, b.last_seq)], [(1, 22), (23, 44)]);
    // No checkpoint within 5 entries: the first one after, rather than never
    // (seq 55, covering entry 50), if every entry up to it is old enough.
    assert_eq!(archive_capped(&path, wall(48), &arch_dir(&dir), 0, 5).unwrap(), None);
    let r = run(5);
    assert_eq!((r.first_seq, r.last_seq), (45, 55));
    assert!(verify(&path, Some(&key())).unwrap().is_intact());
    assert_eq!(archive_rows(&path), 3);
}

#[test]
fn every_archive_row_is_checked_against_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, r) = archived_db(&dir);
    let ok = verify_archives(&path, &arch_dir(&dir), Some(&key()), &[]).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!((ok[0].first_seq, ok[0].last_seq, ok[0].problem.as_deref()), (r.first_seq, r.last_seq, None));
    // Anchors in the file's range are checked there: one the site saved agrees, a forged one does not.
    let saved = verify_archive(&r.file, Some(&key())).unwrap().last_checkpoint.unwrap();
    assert!(verify_archives(&path, &arch_dir(&dir), Some(&key()), &[saved]).unwrap()[0].problem.is_none());
    let forged = Anchor { head: [3; 32], ..saved };
    let refused = verify_archives(&path, &arch_dir(&dir), Some(&key()), &[forged]).unwrap();
    assert!(refused[0].problem.as_deref().is_some_and(|p| p.contains("disagrees")), "{refused:?}");

    // A file that is not the one recorded, however well formed, is refused.
    let original = std::fs::read(&r.file).unwrap();
    std::fs::write(&r.file, [&original[..], b"\n"].concat()).unwrap();
    let changed = verify_archives(&path, &arch_dir(&dir), Some(&key()), &[]).unwrap();
    assert!(changed[0].problem.as_deref().is_some_and(|p| p.contains("SHA-256")), "{changed:?}");

    std::fs::remove_file(&r.file).unwrap();
    let missing = verify_archives(&path, &arch_dir(&dir), Some(&key()), &[]).unwrap();
    assert_eq!(missing[0].problem.as_deref(), Some("file missing"));
}
