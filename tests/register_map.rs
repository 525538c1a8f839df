//! The PLC contract is one file (firmware-config/plc/register-map.toml); the document
//! (docs/register-map.md) and the reference PLC program (firmware-config/plc/sortline.st) must
//! say the same. These tests fail on any disagreement, naming it.

use sortline::plc::map::{Constant, RegisterMap};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn map() -> RegisterMap {
    RegisterMap::load(&path("firmware-config/plc/register-map.toml")).expect("the register map is valid")
}

/// The map's constants by their name in the program: `REG_STATUS` → 1.
fn constants(map: &RegisterMap) -> BTreeMap<String, u32> {
    map.constants().iter().map(|c: &Constant| (c.st_name(), c.value)).collect()
}

const PREFIXES: [&str; 12] =
    ["CFG_", "REG_", "EVR_", "DSR_", "EVS_", "DSS_", "ST_", "EV_", "LOST_", "RJ_", "FH_", "SMC_"];

/// One table row of the document under a prefixed heading.
#[derive(Debug)]
struct DocRow {
    line: usize,
    name: String,
    value: u32,
    cells: Vec<String>,
}

/// Rows of every table whose heading names a prefix in backticks, e.g. "## Registers (`REG_`)":
/// first cell a number, second cell a `NAME`. Other headings end the prefix's scope.
fn doc_rows(doc: &str) -> Vec<DocRow> {
    let mut prefix: Option<&str> = None;
    let mut rows = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            prefix = PREFIXES.iter().copied().find(|p| line.contains(&format!("(`{p}`)")));
            continue;
        }
        let (Some(prefix), true) = (prefix, line.starts_with('|')) else { continue };
        let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
        let Ok(value) = cells[0].parse::<u32>() else { continue }; // header and separator rows
        let name = cells.get(1).map(|c| c.trim_matches('`')).unwrap_or_default();
        assert!(
            cells.get(1).is_some_and(|c| c.starts_with('`') && c.ends_with('`')),
            "docs/register-map.md:{}: second cell must be a `NAME`",
            i + 1
        );
        rows.push(DocRow { line: i + 1, name: format!("{prefix}{name}"), value, cells });
    }
    rows
}

#[test]
fn the_document_tabulates_exactly_the_map() {
    let map = map();
    let want = constants(&map);
    let rows = doc_rows(&read("docs/register-map.md"));
    let mut seen = BTreeSet::new();
    for row in &rows {
        assert!(seen.insert(row.name.clone()), "docs/register-map.md:{}: {} listed twice", row.line, row.name);
        match want.get(&row.name) {
            None => panic!("docs/register-map.md:{}: {} is not in register-map.toml", row.line, row.name),
            Some(v) => assert_eq!(
                *v, row.value,
                "docs/register-map.md:{}: {} is {} in the document, {} in the map",
                row.line, row.name, row.value, v
            ),
        }
    }
    let missing: Vec<&String> = want.keys().filter(|n| !seen.contains(*n)).collect();
    assert!(missing.is_empty(), "not in docs/register-map.md: {missing:?}");
}

#[test]
fn the_document_gives_each_register_its_type_and_writer() {
    let map = map();
    for row in doc_rows(&read("docs/register-map.md")).iter().filter(|r| r.name.starts_with("REG_")) {
        let reg = map.register(&row.name["REG_".len()..]).expect("checked by the other test");
        assert_eq!(row.cells.get(2).map(String::as_str), Some(reg.ty.as_str()), "docs line {}: type", row.line);
        assert_eq!(row.cells.get(3).map(String::as_str), Some(reg.writer.as_str()), "docs line {}: writer", row.line);
    }
    // Ring slot fields too: offset and type.
    for (prefix, ring) in [("EVS_", &map.event_ring), ("DSS_", &map.dest_ring)] {
        for row in doc_rows(&read("docs/register-map.md")).iter().filter(|r| r.name.starts_with(prefix)) {
            let field = ring.field(&row.name[prefix.len()..]).unwrap();
            assert_eq!(row.cells.get(2).map(String::as_str), Some(field.ty.as_str()), "docs line {}: type", row.line);
        }
    }
}

/// `NAME : TYPE := value;` declarations of the program, by name.
fn st_declarations(st: &str) -> BTreeMap<String, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, line) in st.lines().enumerate() {
        let code = line.split("(*").next().unwrap_or("").trim();
        let Some((name, rest)) = code.split_once(':') else { continue };
        let Some((_, value)) = rest.split_once(":=") else { continue };
        let name = name.trim();
        if name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') && !name.is_empty() {
            out.insert(name.to_string(), (i + 1, value.trim().trim_end_matches(';').trim().to_string()));
        }
    }
    out
}

#[test]
fn the_program_declares_the_generated_constants_verbatim() {
    let map = map();
    let st = read("firmware-config/plc/sortline.st");
    let start = st.find("VAR_GLOBAL CONSTANT\n").expect("a constants block");
    let block = &st[start..];
    let end = block.find("END_VAR\n").expect("END_VAR") + "END_VAR\n".len();
    let want_block = map.structured_text_constants();
    let first_line = st[..start].lines().count() + 1;
    for (i, (got, want)) in block[..end].lines().zip(want_block.lines()).enumerate() {
        assert_eq!(
            got,
            want,
            "sortline.st:{}: differs from the map (RegisterMap::structured_text_constants)",
            first_line + i
        );
    }
    assert_eq!(block[..end].lines().count(), want_block.lines().count(), "sortline.st: constants block length");
    // And no other contract-looking constant anywhere else in the program.
    let want = constants(&map);
    for (name, (line, value)) in st_declarations(&st) {
        if PREFIXES.iter().any(|p| name.starts_with(p)) {
            assert_eq!(want.get(&name).map(u32::to_string), Some(value), "sortline.st:{line}: {name}");
        }
    }
}

#[test]
fn the_program_uses_every_register_code_and_bit() {
    let map = map();
    let st = read("firmware-config/plc/sortline.st");
    let decls = st_declarations(&st);
    for name in constants(&map).keys() {
        let (decl_line, _) = decls[name];
        let used = st.lines().enumerate().any(|(i, line)| {
            i + 1 != decl_line
                && line.match_indices(name.as_str()).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    let after = line[at + name.len()..].chars().next();
                    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                    !ident(before) && !ident(after)
                })
        });
        assert!(used, "sortline.st declares {name} but never uses it");
    }
}

/// The program's line layout must be line.toml's.
#[test]
fn the_program_layout_matches_line_toml() {
    let line: toml::Value = toml::from_str(&read("firmware-config/line.toml")).unwrap();
    let st = read("firmware-config/plc/sortline.st");
    let decls = st_declarations(&st);
    let st_int =
        |name: &str| -> i64 { decls.get(name).unwrap_or_else(|| panic!("sortline.st: no {name}")).1.parse().unwrap() };
    let int = |v: &toml::Value| v.as_integer().unwrap();
    let lanes = &line["lanes"];
    let geo = &line["geometry"];
    for (name, want) in [
        ("LANE_RELEASE", int(&lanes["release"])),
        ("LANE_INSPECTION", int(&lanes["inspection"])),
        ("LANE_HOLD", int(&lanes["hold"])),
        ("GATE_MM", int(&geo["gate_mm"])),
        ("XRAY_MM", int(&geo["xray_mm"])),
        ("END_MM", int(&geo["end_mm"])),
        ("MAX_PARCEL_MM", int(&line["limits"]["max_parcel_length_mm"])),
    ] {
        assert_eq!(st_int(name), want, "sortline.st {name} vs line.toml");
    }
    let diverters = geo["diverters"].as_array().unwrap();
    let positions: Vec<i64> = diverters.iter().map(|d| int(&d["position_mm"])).collect();
    let lane_ids: Vec<i64> = diverters.iter().map(|d| int(&lanes[d["lane"].as_str().unwrap()])).collect();
    let array = |name: &str| -> Vec<i64> {
        let v = &decls.get(name).unwrap_or_else(|| panic!("sortline.st: no {name}")).1;
        v.trim_matches(|c| c == '[' || c == ']').split(',').map(|x| x.trim().parse().unwrap()).collect()
    };
    assert_eq!(array("DIV_MM"), positions, "sortline.st DIV_MM vs line.toml diverters");
    assert_eq!(array("DIV_LANE"), lane_ids, "sortline.st DIV_LANE vs line.toml diverters");
    let first = positions.iter().min().unwrap();
    assert_eq!(st_int("LATCH_MM"), first - int(&geo["latch_margin_mm"]), "LATCH_MM = first diverter - latch margin");
    assert_eq!(st_int("N_DIVERTERS"), positions.len() as i64);
}

#[test]
fn the_seed_corpus_is_valid_ring_snapshots() {
    // Each seed holds at least one well-formed event, so the fuzzer starts past the check word.
    let map = map();
    let dir = path("fuzz/corpus/registers");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        sortline::plc::fuzzing::check_register_polls(&bytes);
        let words: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
        let (_, header) = map.header_span();
        let slots = &words[usize::from(header) + 1..];
        let ok =
            slots.chunks_exact(map.event_slot.words).any(|s| map.event_slot.decode(s, s[map.event_slot.seq]).is_ok());
        assert!(ok, "seed without a well-formed slot");
        seeds += 1;
    }
    assert!(seeds >= 3, "a few seeds at least");
}
