//! The readers' invariants over arbitrary bytes, run by the fuzz target
//! `manifest_lines` (nightly) and by a proptest (stable).

use super::reader::{CsvRows, JsonLines, Parsed, CSV_DECLARATION_COLUMNS, CSV_ITEM_COLUMNS};
use crate::core::Carriers;

/// JSON Lines: never panics; lines come in increasing order within the input; a
/// declaration read back from its own JSON is the same; validation never panics.
pub fn check_json_lines(data: &[u8]) {
    let max_line = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let mut last = 0;
    for p in JsonLines::new(data) {
        let p = p.expect("reading from memory cannot fail");
        assert!(p.line > last && p.line <= max_line, "line {} after {last} (max {max_line})", p.line);
        last = p.line;
        check_parsed(&p);
    }
}

/// CSV: the first byte chooses whether the layout's header is put in front (so that the
/// rows are read, not only the header refused); then as for JSON Lines, with lines
/// non-decreasing (a row error is reported after the declaration it ended).
pub fn check_csv(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else { return };
    let mut input = Vec::with_capacity(rest.len() + 256);
    if choice & 1 == 1 {
        let header: Vec<&str> = CSV_DECLARATION_COLUMNS.iter().chain(CSV_ITEM_COLUMNS.iter()).copied().collect();
        input.extend_from_slice(header.join(",").as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(rest);
    let Ok(rows) = CsvRows::new(input.as_slice()) else { return };
    for p in rows {
        let p = p.expect("reading from memory cannot fail");
        assert!(p.line >= 1, "line numbers start at 1");
        check_parsed(&p);
    }
}

fn check_parsed(p: &Parsed) {
    match &p.result {
        Ok(d) => {
            let json = serde_json::to_vec(d).expect("a declaration serialises");
            let back = super::reader::from_json(&json).expect("its own JSON reads back");
            assert_eq!(&back, d);
            if let Ok(m) = d.validate(&Carriers::default()) {
                assert_eq!(m.waybill, d.waybill);
                assert_eq!(m.items.len(), d.items.len());
            }
        }
        Err(e) => assert!(!e.field.is_empty(), "an error names its field"),
    }
}
