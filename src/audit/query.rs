//! Read-only queries. They return what is stored; [`super::verify`] says whether to trust it.

use rusqlite::ToSql;
use std::path::Path;

use super::schema::{self, entry_from_row, SELECT_ENTRY};
use super::{AuditError, Entry};

/// All entries with this waybill, plus all entries of the tracking ids that
/// carried it (gate, divert, lost… are logged by tracking id only), in seq order.
pub fn story(db_path: &Path, waybill: &str) -> Result<Vec<Entry>, AuditError> {
    let mut out = Vec::new();
    stream(
        db_path,
        &format!(
            "{SELECT_ENTRY} WHERE waybill = ?1 OR tracking IN \
             (SELECT tracking FROM audit_entries WHERE waybill = ?1 AND tracking IS NOT NULL) \
             ORDER BY seq"
        ),
        &[&waybill],
        |e| {
            out.push(e);
            Ok(())
        },
    )?;
    Ok(out)
}

/// Streams entries with `from_wall_ms <= wall_ms < to_wall_ms` in seq order
/// (not wall order: the wall clock may step back). Returns how many.
pub fn entries_between(
    db_path: &Path,
    from_wall_ms: i64,
    to_wall_ms: i64,
    f: impl FnMut(Entry) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    stream(
        db_path,
        &format!("{SELECT_ENTRY} WHERE wall_ms >= ?1 AND wall_ms < ?2 ORDER BY seq"),
        &[&from_wall_ms, &to_wall_ms],
        f,
    )
}

/// Streams every entry in seq order. Returns how many.
pub fn entries(db_path: &Path, f: impl FnMut(Entry) -> Result<(), AuditError>) -> Result<u64, AuditError> {
    stream(db_path, &format!("{SELECT_ENTRY} ORDER BY seq"), &[], f)
}

fn stream(
    db_path: &Path,
    sql: &str,
    params: &[&dyn ToSql],
    mut f: impl FnMut(Entry) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let conn = schema::open_read_only(db_path)?;
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(params)?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        f(entry_from_row(row)?)?;
        n += 1;
    }
    Ok(n)
}
