//! `/metrics` in the Prometheus text format: the core's counters, the PLC link's and the
//! scanner's figures (the same the MQTT `metrics` topic carries), the console's own.

use super::http::Ctx;
use serde_json::Value;
use std::fmt::Write;

/// Every number in `v` as one sample, named by its path (`sortline_plc_poll_cycle_p99_us`);
/// booleans as 0 or 1. Names are the serialised field names, so they follow the structs.
fn flatten(out: &mut String, name: &str, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(out, &format!("{name}_{k}"), v);
            }
        }
        Value::Number(n) => {
            let _ = writeln!(out, "# TYPE {name} untyped\n{name} {n}");
        }
        Value::Bool(b) => {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", u8::from(*b));
        }
        _ => {}
    }
}

pub fn render(ctx: &Ctx) -> String {
    let mut out = String::new();
    let line = serde_json::to_value(&*ctx.figures.line.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or_default();
    flatten(&mut out, "sortline_line", &line);
    let mode = ctx.figures.mode.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let _ = writeln!(
        out,
        "# TYPE sortline_line_safe_mode gauge\nsortline_line_safe_mode {}\n\
         # TYPE sortline_line_stopped gauge\nsortline_line_stopped {}\n\
         # TYPE sortline_line_plc_events_lost gauge\nsortline_line_plc_events_lost {}\n\
         # TYPE sortline_line_shadow gauge\nsortline_line_shadow {}",
        u8::from(mode.safe_mode),
        u8::from(mode.stopped_by.is_some()),
        u8::from(mode.plc_events_lost),
        u8::from(mode.shadow)
    );
    let plc = serde_json::to_value(&*ctx.figures.plc.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or_default();
    flatten(&mut out, "sortline_plc", &plc);
    if let Some(scanner) = &ctx.figures.scanner {
        flatten(&mut out, "sortline_scanner", &serde_json::to_value(scanner()).unwrap_or_default());
    }
    let view = ctx.board.line();
    let _ = writeln!(
        out,
        "# TYPE sortline_console_open_reviews gauge\nsortline_console_open_reviews {}\n\
         # TYPE sortline_console_parcels_on_belt gauge\nsortline_console_parcels_on_belt {}\n\
         # TYPE sortline_console_parcels_per_hour gauge\nsortline_console_parcels_per_hour {}",
        ctx.board.reviews().len(),
        view.parcels.len(),
        view.parcels_per_hour
    );
    let _ = writeln!(out, "# TYPE sortline_console_refused_total counter");
    for (kind, n) in ctx.counters.snapshot() {
        let _ = writeln!(out, "sortline_console_refused_total{{kind=\"{kind}\"}} {n}");
    }
    out
}
