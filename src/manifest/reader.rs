//! Streaming readers of declaration files: JSON Lines (one declaration per
//! line) and CSV (one row per item, the declaration's columns repeated; see
//! `docs/manifest.md`). Each yields declarations with the line they start on,
//! or the line and field at fault; memory is bounded by one declaration.

use super::model::{Declaration, DeclaredItem, FieldError, MAX_ITEMS};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::{BufRead, Read};
use std::path::Path;

/// Longest JSON line read; a longer one is reported and skipped.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Declaration columns of the CSV layout, in order, then the item columns.
pub const CSV_DECLARATION_COLUMNS: [&str; 16] = [
    "waybill",
    "list_no",
    "version",
    "platform_time",
    "direction",
    "ecommerce_ref",
    "logistics_ref",
    "payment_ref",
    "channel",
    "status",
    "licence_required",
    "platform_targeted",
    "consignor",
    "consignee",
    "country",
    "gross_weight_g",
];
pub const CSV_ITEM_COLUMNS: [&str; 6] =
    ["item_name", "item_hs_code", "item_quantity", "item_unit", "item_value_minor", "item_currency"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// By extension: `.csv` is CSV, `.jsonl`, `.ndjson` and `.json` are JSON Lines.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// One declaration read, or why not, with the (1-based) line it starts on.
#[derive(Debug)]
pub struct Parsed {
    pub line: u64,
    pub result: Result<Declaration, FieldError>,
}

/// The file cannot be read on: I/O, or a CSV header that does not fit the layout.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("CSV header: {0}")]
    Header(String),
}

/// Reads declarations from `r` in `format`.
pub fn read<'a, R: BufRead + 'a>(
    r: R,
    format: Format,
) -> Result<Box<dyn Iterator<Item = Result<Parsed, ReadError>> + 'a>, ReadError> {
    Ok(match format {
        Format::JsonLines => Box::new(JsonLines::new(r)),
        Format::Csv => Box::new(CsvRows::new(r)?),
    })
}

pub struct JsonLines<R> {
    r: R,
    buf: Vec<u8>,
    line: u64,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(r: R) -> Self {
        JsonLines { r, buf: Vec::with_capacity(1024), line: 0 }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<Parsed, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            let n = match (&mut self.r).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => return Some(Err(e.into())),
            };
            if n == 0 {
                return None;
            }
            self.line += 1;
            let line = self.line;
            if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                // Skip the rest of the line without holding it.
                loop {
                    self.buf.clear();
                    match (&mut self.r).take(64 * 1024).read_until(b'\n', &mut self.buf) {
                        Ok(0) => break,
                        Ok(_) if self.buf.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                let problem = format!("line longer than {MAX_LINE_BYTES} bytes");
                return Some(Ok(Parsed { line, result: Err(FieldError::new("(line)", problem)) }));
            }
            let mut bytes = self.buf.as_slice();
            if line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok(Parsed { line, result: from_json(bytes) }));
        }
    }
}

/// One JSON Lines line as a declaration; every error names its field.
pub fn from_json(bytes: &[u8]) -> Result<Declaration, FieldError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FieldError::new("(json)", e.to_string()))?;
    let Value::Object(mut o) = value else {
        return Err(FieldError::new("(json)", "a line must hold one JSON object"));
    };
    let items: Vec<Value> = take(&mut o, "", "items")?;
    if items.len() > MAX_ITEMS {
        return Err(FieldError::new("items", format!("more than {MAX_ITEMS} items")));
    }
    let d = Declaration {
        waybill: take(&mut o, "", "waybill")?,
        list_no: take(&mut o, "", "list_no")?,
        version: take(&mut o, "", "version")?,
        platform_time: take(&mut o, "", "platform_time")?,
        direction: take(&mut o, "", "direction")?,
        ecommerce_ref: take(&mut o, "", "ecommerce_ref")?,
        logistics_ref: take(&mut o, "", "logistics_ref")?,
        payment_ref: take(&mut o, "", "payment_ref")?,
        channel: take(&mut o, "", "channel")?,
        status: take(&mut o, "", "status")?,
        licence_required: take(&mut o, "", "licence_required")?,
        platform_targeted: take(&mut o, "", "platform_targeted")?,
        consignor: take(&mut o, "", "consignor")?,
        consignee: take(&mut o, "", "consignee")?,
        country: take(&mut o, "", "country")?,
        gross_weight_g: take(&mut o, "", "gross_weight_g")?,
        items: items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let prefix = format!("items[{i}].");
                let Value::Object(mut o) = v else {
                    return Err(FieldError::new(format!("items[{i}]"), "must be an object"));
                };
                let item = DeclaredItem {
                    name: take(&mut o, &prefix, "name")?,
                    hs_code: take(&mut o, &prefix, "hs_code")?,
                    quantity: take(&mut o, &prefix, "quantity")?,
                    unit: take(&mut o, &prefix, "unit")?,
                    value_minor: take(&mut o, &prefix, "value_minor")?,
                    currency: take(&mut o, &prefix, "currency")?,
                };
                no_more(&o, &prefix)?;
                Ok(item)
            })
            .collect::<Result<_, _>>()?,
    };
    no_more(&o, "")?;
    Ok(d)
}

fn take<T: DeserializeOwned>(o: &mut Map<String, Value>, prefix: &str, name: &str) -> Result<T, FieldError> {
    let v = o.remove(name).ok_or_else(|| FieldError::new(format!("{prefix}{name}"), "missing"))?;
    serde_json::from_value(v).map_err(|e| FieldError::new(format!("{prefix}{name}"), e.to_string()))
}

fn no_more(o: &Map<String, Value>, prefix: &str) -> Result<(), FieldError> {
    match o.keys().next() {
        Some(k) => Err(FieldError::new(format!("{prefix}{k}"), "unknown field")),
        None => Ok(()),
    }
}

/// CSV rows grouped into declarations: consecutive rows with the same waybill and version.
pub struct CsvRows<R: Read> {
    r: csv::Reader<R>,
    /// Column index of each declaration column, then each item column.
    cols: [usize; 22],
    /// A row read ahead: it starts the next declaration.
    ahead: Option<(u64, csv::ByteRecord)>,
    /// A row error to report after the declaration being grouped.
    deferred: Option<Parsed>,
    done: bool,
}

impl<R: Read> CsvRows<R> {
    pub fn new(r: R) -> Result<Self, ReadError> {
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(r);
        let headers = r.byte_headers().map_err(|e| ReadError::Header(e.to_string()))?.clone();
        let names: Vec<&str> = headers.iter().map(|h| std::str::from_utf8(h).unwrap_or("\u{fffd}").trim()).collect();
        if let Some(unknown) =
            names.iter().find(|n| !CSV_DECLARATION_COLUMNS.contains(n) && !CSV_ITEM_COLUMNS.contains(n))
        {
            return Err(ReadError::Header(format!("unknown column {unknown:?}")));
        }
        let mut cols = [0; 22];
        for (slot, want) in cols.iter_mut().zip(CSV_DECLARATION_COLUMNS.iter().chain(CSV_ITEM_COLUMNS.iter())) {
            *slot =
                names.iter().position(|n| n == want).ok_or_else(|| ReadError::Header(format!("no column {want:?}")))?;
        }
        Ok(CsvRows { r, cols, ahead: None, deferred: None, done: false })
    }

    /// The next row with its line, a row error, or the end.
    fn row(&mut self) -> Option<Result<(u64, csv::ByteRecord), Result<Parsed, ReadError>>> {
        if let Some(row) = self.ahead.take() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        let mut rec = csv::ByteRecord::new();
        match self.r.read_byte_record(&mut rec) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => Some(Ok((rec.position().map_or(0, |p| p.line()), rec))),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if let csv::ErrorKind::Io(_) = e.kind() {
                    self.done = true;
                    let csv::ErrorKind::Io(io) = e.into_kind() else { unreachable!() };
                    return Some(Err(Err(ReadError::Io(io))));
                }
                Some(Err(Ok(Parsed { line, result: Err(FieldError::new("(csv)", e.to_string())) })))
            }
        }
    }

    fn field<'r>(&self, rec: &'r csv::ByteRecord, col: usize) -> Result<&'r str, FieldError> {
        let name = self.name(col);
        let bytes = rec.get(self.cols[col]).ok_or_else(|| FieldError::new(name, "missing"))?;
        std::str::from_utf8(bytes).map_err(|_| FieldError::new(name, "not UTF-8"))
    }

    fn name(&self, col: usize) -> &'static str {
        CSV_DECLARATION_COLUMNS.iter().chain(CSV_ITEM_COLUMNS.iter()).nth(col).copied().unwrap_or("?")
    }

    fn key<'r>(&self, rec: &'r csv::ByteRecord) -> (Option<&'r [u8]>, Option<&'r [u8]>) {
        (rec.get(self.cols[0]), rec.get(self.cols[2]))
    }

    fn declaration(&self, rows: &[(u64, csv::ByteRecord)]) -> Parsed {
        let line = rows[0].0;
        let fail = |line, e| Parsed { line, result: Err(e) };
        let first = &rows[0].1;
        if rows.len() > MAX_ITEMS {
            return fail(line, FieldError::new("items", format!("more than {MAX_ITEMS} items")));
        }
        for (row_line, rec) in &rows[1..] {
            for col in 0..CSV_DECLARATION_COLUMNS.len() {
                if rec.get(self.cols[col]) != first.get(self.cols[col]) {
                    let e =
                        FieldError::new(self.name(col), format!("differs from line {line} of the same declaration"));
                    return fail(*row_line, e);
                }
            }
        }
        let head = match self.head(first) {
            Ok(d) => d,
            Err(e) => return fail(line, e),
        };
        let mut items = Vec::with_capacity(rows.len());
        for (i, (row_line, rec)) in rows.iter().enumerate() {
            match self.item(rec) {
                Ok(item) => items.push(item),
                Err(e) => return fail(*row_line, FieldError::new(format!("items[{i}].{}", e.field), e.problem)),
            }
        }
        Parsed { line, result: Ok(Declaration { items, ..head }) }
    }

    fn head(&self, rec: &csv::ByteRecord) -> Result<Declaration, FieldError> {
        let s = |col| self.field(rec, col);
        Ok(Declaration {
            waybill: typed(s(0)?, "waybill")?,
            list_no: s(1)?.to_string(),
            version: number(s(2)?, "version")?,
            platform_time: s(3)?.to_string(),
            direction: typed(s(4)?, "direction")?,
            ecommerce_ref: s(5)?.to_string(),
            logistics_ref: s(6)?.to_string(),
            payment_ref: s(7)?.to_string(),
            channel: typed(s(8)?, "channel")?,
            status: typed(s(9)?, "status")?,
            licence_required: boolean(s(10)?, "licence_required")?,
            platform_targeted: boolean(s(11)?, "platform_targeted")?,
            consignor: s(12)?.to_string(),
            consignee: s(13)?.to_string(),
            country: s(14)?.to_string(),
            gross_weight_g: number(s(15)?, "gross_weight_g")?,
            items: Vec::new(),
        })
    }

    fn item(&self, rec: &csv::ByteRecord) -> Result<DeclaredItem, FieldError> {
        let s = |col: usize| self.field(rec, 16 + col);
        // Named without the `item_` prefix: the error says `items[i].<field>` as for JSON.
        let unprefixed = |e: FieldError| FieldError::new(e.field.trim_start_matches("item_").to_string(), e.problem);
        Ok(DeclaredItem {
            name: s(0).map_err(unprefixed)?.to_string(),
            hs_code: s(1).map_err(unprefixed)?.to_string(),
            quantity: number(s(2).map_err(unprefixed)?, "quantity")?,
            unit: s(3).map_err(unprefixed)?.to_string(),
            value_minor: number(s(4).map_err(unprefixed)?, "value_minor")?,
            currency: s(5).map_err(unprefixed)?.to_string(),
        })
    }
}

fn typed<T: DeserializeOwned>(s: &str, field: &str) -> Result<T, FieldError> {
    serde_json::from_value(Value::String(s.trim().to_string())).map_err(|e| FieldError::new(field, e.to_string()))
}

fn number<T: std::str::FromStr>(s: &str, field: &str) -> Result<T, FieldError>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e| FieldError::new(field, format!("{s:?}: {e}")))
}

fn boolean(s: &str, field: &str) -> Result<bool, FieldError> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(FieldError::new(field, format!("{other:?} must be true or false"))),
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<Parsed, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(p) = self.deferred.take() {
            return Some(Ok(p));
        }
        let first = match self.row()? {
            Ok(row) => row,
            Err(e) => return Some(e),
        };
        let mut rows = vec![first];
        loop {
            match self.row() {
                None => break,
                Some(Ok(row)) if self.key(&row.1) == self.key(&rows[0].1) => {
                    // Past the limit, rows are counted but not kept.
                    if rows.len() <= MAX_ITEMS {
                        rows.push(row);
                    }
                }
                Some(Ok(row)) => {
                    self.ahead = Some(row);
                    break;
                }
                Some(Err(Ok(p))) => {
                    self.deferred = Some(p);
                    break;
                }
                Some(Err(Err(e))) => return Some(Err(e)),
            }
        }
        Some(Ok(self.declaration(&rows)))
    }
}
