//! `sortline run`: the daemon on a real line. The core runs on the machine's monotonic clock,
//! the PLC and the scanner are the ones `line.toml` names, the record is the data directory's;
//! SIGTERM or SIGINT drains the parcels on the belt (bounded) and stops with a closing entry;
//! SIGHUP reloads the interception rules (a bad rule file keeps the rules in force). Declaration
//! lists past `[manifests] retention_days` are purged at start and every hour.
//!
//! At start the core takes in the manifest store's current declarations and standing manual
//! targets (`manifests.db`, filled by `sortline manifest import` and `sortline target`), and
//! what operators had set (a line stop, rates, the review window: stored before each change
//! took effect, [`resume`]); the PLC driver starts only once all of that is in, so the PLC
//! holds induct until then. What is imported while it runs reaches it at the next start. With `[mqtt] broker` set it
//! publishes state, parcels, alarms and metrics through the durable outbox and takes commands
//! (`docs/mqtt.md`). With `[console]` set it serves the officer console (`docs/console.md`):
//! reviews go to the officers' screens and their verdicts come back through it; without it a
//! parcel selected for review is held at its cut-off as late.

use crate::audit::{self, AuditError, GroupCommit, Signer};
use crate::clock;
use crate::config::{ConfigError, Loaded};
use crate::core::{Alarm, Line, ParcelId, ParcelReport, Provisional, ReviewId, ReviewRequest, Waybill};
use crate::daemon::{self, CoreMsg, Daemon, DaemonConfig, DaemonError, LineClock, Parts, Screen};
use crate::manifest::{self, ManifestStore, OperatorStore, StoreError};
use crate::mqtt::wiring::{Figures, Prepared};
use crate::mqtt::{MqttError, MqttSink};
use crate::recorder;
use crate::scanner::link::ScannerLinkError;
use crate::scanner::reader::{ScannerOutput, ScannerReader};
use crate::xray::station::{self, Intakes};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("audit record: {0}")]
    Audit(#[from] AuditError),
    #[error("daemon: {0}")]
    Daemon(#[from] DaemonError),
    #[error("scanner: {0}")]
    Scanner(#[from] ScannerLinkError),
    #[error("manifest store: {0}")]
    Manifests(#[from] StoreError),
    #[error("MQTT: {0}")]
    Mqtt(#[from] MqttError),
    #[error("{0}")]
    Xray(#[from] crate::xray::station::StationError),
    #[error("{0}")]
    Console(#[from] crate::console::ConsoleError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a run ended.
#[derive(Debug)]
pub struct Stopped {
    /// Every parcel's story closed before the drain limit.
    pub drained: bool,
    pub parcels: u64,
}

/// The machine's monotonic clock, in ms since the daemon started.
struct MonotonicClock(clock::Stopwatch);

impl LineClock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed_ms()
    }
}

/// Review requests and finished parcels go to the log, and to MQTT when it is configured
/// (the console, when there is one, sits beside this screen).
struct LogScreen {
    mqtt: Option<MqttSink>,
    console: bool,
}

impl Screen for LogScreen {
    // The parcel's fields come with its span (`ParcelSpans`).
    fn review_requested(&mut self, request: &ReviewRequest) {
        if self.console {
            tracing::info!(review = %request.review, "review requested at the console");
        } else {
            tracing::warn!(
                review = %request.review,
                "review requested but no officer console is configured: the parcel will be held at its cut-off"
            );
        }
    }

    fn alarm(&mut self, alarm: &Alarm) {
        if let Some(m) = &self.mqtt {
            m.alarm(alarm);
        }
    }

    fn inspection_result(&mut self, result: &crate::core::Input) {
        if let Some(m) = &self.mqtt {
            m.inspection_result(result);
        }
    }

    fn parcel_done(&mut self, report: ParcelReport) {
        if let Some(m) = &self.mqtt {
            m.parcel_done(report.clone());
        }
        tracing::info!(decided = ?report.decided, confirmed = ?report.confirmed, "parcel done");
    }
}

/// The screens, each parcel's review and finished story handled inside a `parcel` span with
/// its id, tracking id and waybill, so that every event logged for it there (the log's, the
/// MQTT publisher's, the console's) carries them. One span per review and per finished parcel,
/// on the core thread but outside the core; none when `info` is filtered out.
struct ParcelSpans<S>(S);

fn parcel_span(parcel: &ParcelId, waybill: Option<&Waybill>) -> tracing::Span {
    tracing::info_span!(
        "parcel",
        parcel = %parcel,
        tracking = %parcel.tracking,
        waybill = waybill.map(tracing::field::display),
    )
}

impl<S: Screen> Screen for ParcelSpans<S> {
    fn review_requested(&mut self, request: &ReviewRequest) {
        parcel_span(&request.parcel, Some(&request.waybill)).in_scope(|| self.0.review_requested(request))
    }
    fn review_closed(&mut self, parcel: ParcelId, review: ReviewId) {
        self.0.review_closed(parcel, review)
    }
    fn provisional(&mut self, parcel: &Provisional) {
        self.0.provisional(parcel)
    }
    fn parcel_done(&mut self, report: ParcelReport) {
        let span = parcel_span(&report.parcel, report.waybill.as_ref());
        span.in_scope(|| self.0.parcel_done(report))
    }
    fn alarm(&mut self, alarm: &Alarm) {
        self.0.alarm(alarm)
    }
    fn inspection_result(&mut self, result: &crate::core::Input) {
        self.0.inspection_result(result)
    }
}

/// Takes back, before the run's first entry, what an earlier run on `data_dir` left: what
/// operators had set (from the operator store, where every change went before it took effect)
/// and where serials go on (the chain's length, see [`Line::set_serial_base`]). Returns the
/// store, where this run's changes go.
pub fn resume(line: &mut Line, data_dir: &Path, log: &crate::audit::AuditLog) -> Result<OperatorStore, StoreError> {
    let store = OperatorStore::open(&data_dir.join(manifest::DB_FILE))?;
    let state = store.operator_state()?;
    if state != Default::default() {
        tracing::warn!(?state, "operators' settings restored from the last run (they override line.toml)");
    }
    if let Some(officer) = &state.stopped_by {
        tracing::warn!(%officer, "the line was stopped by an operator and stays stopped: every parcel is held");
    }
    line.restore(state);
    line.set_serial_base(log.head().0);
    Ok(store)
}

/// Runs the line until SIGTERM or SIGINT; `data_dir` holds the record, the signing key and the
/// site secret (when `[sampling].secret` names a file).
pub fn run(cfg: &Loaded, data_dir: &Path) -> Result<Stopped, ServiceError> {
    std::fs::create_dir_all(data_dir)?;
    let secret = cfg.line.sampling.secret.resolve(data_dir)?;
    let map = cfg.register_map()?;
    let profile = cfg.scanner_profile()?;
    let xray_screen = cfg.xray_screen()?;
    let mut line = Line::new(cfg.line.settings(), cfg.line.policy(secret, cfg.rules.clone()));
    if line.settings().shadow {
        tracing::warn!("shadow mode ([commissioning] shadow): decisions are recorded, every parcel is sent to hold");
    }
    let signer = Signer::load_or_init(&data_dir.join(audit::KEY_FILE))?;
    let store = ManifestStore::open(&data_dir.join(manifest::DB_FILE))?;
    let initial = store.core_inputs(clock::wall_ms())?;
    drop(store);
    tracing::info!(inputs = initial.len(), "declarations and standing targets loaded from the manifest store");
    let mqtt = match cfg.line.mqtt.as_ref().and_then(|m| m.broker.as_deref().map(|b| (m, b))) {
        Some((m, broker)) => {
            let prepared = Prepared::open(m.settings(broker, &cfg.line.site)?, data_dir, cfg.line.settings().carriers)?;
            tracing::info!(broker, topics = %prepared.prefix(), "publishing over MQTT");
            Some(prepared)
        }
        None => None,
    };
    let mut log = recorder::open_audit(&data_dir.join(audit::DB_FILE), signer, &cfg.line.audit)?;
    if let Some(p) = &mqtt {
        // Every checkpoint leaves the box: the site's anchors (docs/audit.md).
        let sink = p.sink.clone();
        log.observe_checkpoints(Box::new(move |cp| sink.checkpoint(cp)));
    }
    let operator_store = resume(&mut line, data_dir, &log)?;
    log.append(&[recorder::run_start_entry(cfg, &line, "run", clock::wall_ms())])?;
    let audit = GroupCommit::start(log, Duration::from_millis(2), 256);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let finished = rt.block_on(async {
        let reader = ScannerReader::open(profile, cfg.line.scanner.link.clone()).await?;
        // The X-ray station: its intake opened (folder checked, listener bound) before the line runs.
        let station = match (&cfg.line.xray, xray_screen) {
            (Some(config), Some(screen)) => Some((config, Intakes::open(config, data_dir).await?, screen)),
            _ => None,
        };
        let (jobs, screen_jobs) = crossbeam_channel::bounded(station::QUEUE);
        let cache = station::ImageCache::new(
            cfg.line.xray.as_ref().map_or(0, |x| x.image_cache_mb as usize).saturating_mul(1 << 20),
        );
        let stopwatch = clock::Stopwatch::start();
        // The console's port taken stops the start here, before the line runs.
        let console = match &cfg.line.console {
            Some(c) => {
                let listener = crate::console::bind(c.validate()?).await?;
                let xray = station.as_ref().map(|(_, _, screen)| (screen.clone(), cache.clone()));
                let board = crate::console::Board::new(Box::new(move || stopwatch.elapsed_ms()), xray);
                Some((c, listener, board))
            }
            None => None,
        };
        let log_screen = LogScreen { mqtt: mqtt.as_ref().map(|p| p.sink.clone()), console: console.is_some() };
        let screen: Box<dyn Screen> = match &console {
            Some((_, _, board)) => {
                Box::new(ParcelSpans(crate::console::ConsoleScreen { inner: log_screen, board: board.clone() }))
            }
            None => Box::new(ParcelSpans(log_screen)),
        };
        let parts = Parts {
            line,
            audit,
            clock: MonotonicClock(stopwatch),
            screen,
            map,
            driver: cfg.line.driver_config(None),
            initial,
            screener: station.as_ref().map(|_| jobs),
            operator_store: Some(operator_store),
        };
        let config = DaemonConfig::default();
        let (line, mode) = (config.line_stats.clone(), config.line_mode.clone());
        let daemon = Daemon::start(parts, config)?;
        let figures = Figures { line, mode, plc: daemon.driver_stats(), scanner: Some(Arc::new(reader.stats())) };
        let publisher = mqtt.map(|p| p.start(daemon.inputs(), figures.clone(), cfg.rules_dir.clone()));
        let (stop_station, _) = broadcast::channel::<()>(1);
        let mut station_tasks = Vec::new();
        if let Some((c, listener, board)) = console {
            let ctx = crate::console::Setup {
                board,
                core: daemon.inputs(),
                figures,
                data_dir: data_dir.to_path_buf(),
                rules_dir: cfg.rules_dir.clone(),
                defaults: crate::console::Defaults::of(cfg),
                session_minutes: c.session_minutes,
                xray: station.is_some(),
                broker: publisher.as_ref().map(|p| p.stats()),
            }
            .ctx()?;
            tracing::info!(listen = %listener.local_addr()?, "officer console serving");
            station_tasks.push(crate::console::serve(listener, ctx, stop_station.subscribe()));
        }
        if let Some((config, intakes, screen)) = station {
            station::spawn_screener(screen, cache.clone(), screen_jobs, daemon.inputs())?;
            let store = intakes.store.clone();
            station_tasks.extend(intakes.run(cache, daemon.inputs(), stop_station.clone()));
            tracing::info!(folder = ?config.folder, tcp = ?config.tcp_listen, "X-ray station intake running");
            // Originals younger than an hour stay: no parcel is undecided on the belt that long.
            let config = config.clone();
            let mut stopped = stop_station.subscribe();
            station_tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = stopped.recv() => return,
                        _ = every.tick() => {}
                    }
                    let (store, config) = (store.clone(), config.clone());
                    match tokio::task::spawn_blocking(move || station::retention(&store, &config, 3_600_000)).await {
                        Ok(Ok(n)) => tracing::info!(deleted_files = n, "X-ray image retention"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "X-ray image retention failed; retried in an hour"),
                        Err(_) => return,
                    }
                }
            }));
        }
        let inputs = daemon.inputs();
        let (stop_reader, reader_stopped) = oneshot::channel::<()>();
        let scanner = tokio::spawn(reader.run(
            move |out| {
                let msg = match out {
                    ScannerOutput::Input(i) => CoreMsg::Input(i),
                    ScannerOutput::Alarm(a) => CoreMsg::Alarm(a),
                };
                // The core gone means the daemon is stopping.
                let _ = tokio::task::block_in_place(|| inputs.send(msg));
            },
            async move {
                let _ = reader_stopped.await;
            },
        ));
        // SIGHUP reads the rule files again; a bad set is an alarm and the rules in force stay.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let (rules_dir, reload_to) = (cfg.rules_dir.clone(), daemon.inputs());
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let msg = match crate::config::rules_input(&rules_dir, None) {
                    Ok(input) => CoreMsg::Input(input),
                    Err(e) => CoreMsg::Alarm(Alarm {
                        code: "rules_reload_failed",
                        severity: crate::core::Severity::Critical,
                        tracking: None,
                        message: format!("rule files not reloaded, the rules in force stay: {e}"),
                    }),
                };
                tracing::info!(dir = %rules_dir.display(), "SIGHUP: reloading the interception rules");
                if tokio::task::block_in_place(|| reload_to.send(msg)).is_err() {
                    break;
                }
            }
        });
        // Retention of the declaration lists, at start and every hour, as `manifest purge` does.
        let (retention, store_path) = (cfg.line.manifests.clone(), data_dir.join(manifest::DB_FILE));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let (cutoff_ms, path) = (retention.retention_cutoff_ms(clock::wall_ms()), store_path.clone());
                let purged =
                    tokio::task::spawn_blocking(move || ManifestStore::open(&path)?.purge_before(cutoff_ms)).await;
                match purged {
                    Ok(Ok(n)) => tracing::info!(versions = n, days = retention.retention_days, "manifest retention"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "manifest retention failed; retried in an hour"),
                    Err(_) => break,
                }
            }
        });
        let (shutdown, shutdown_rx) = broadcast::channel::<()>(1);
        // Registered before the line runs: a SIGTERM from then on drains, never kills.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stop requested: draining the parcels on the belt");
            let _ = shutdown.send(());
        });
        tracing::info!(site = %cfg.line.site.site_id, line = %cfg.line.site.line_id, "sortline running");
        let finished = daemon.run(shutdown_rx).await;
        let _ = stop_reader.send(());
        let _ = scanner.await;
        let _ = stop_station.send(());
        for task in station_tasks {
            let _ = task.await;
        }
        // Closed on record and signed before the publisher drains, so the last anchor leaves too.
        let closed = finished.map(|f| {
            let signed = tokio::task::block_in_place(|| {
                recorder::close_run(&f.audit, f.line.stats(), Some(f.plc_safe_mode), f.now_ms)
            });
            (f, signed)
        });
        if let Some(p) = publisher {
            // What the outbox still holds after this goes out at the next start.
            match p.stop(Duration::from_secs(10)).await {
                Ok(stats) => tracing::info!(?stats, "MQTT publisher stopped"),
                Err(e) => tracing::warn!(error = %e, "MQTT publisher"),
            }
        }
        let (finished, signed) = closed?;
        Ok::<_, ServiceError>((finished, signed?))
    })?;
    let (daemon::Finished { line, audit, driver_stats, drained, plc_safe_mode, .. }, head) = finished;
    tracing::info!(?driver_stats, drained, ?plc_safe_mode, head, "daemon stopped; the record closed and signed");
    audit.shutdown()?;
    Ok(Stopped { drained, parcels: line.stats().parcels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::waybill::s10_check_digit;
    use crate::core::{Lane, Millis, TrackingId};
    use std::sync::Mutex;

    /// What the JSON log wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn report(tracking: u32, waybill: Option<Waybill>) -> ParcelReport {
        ParcelReport {
            parcel: ParcelId { tracking: TrackingId(tracking), boot: 1, serial: 7 },
            waybill,
            channel: None,
            reasons: Vec::new(),
            decided: Some(Lane::Release),
            confirmed: Some(Lane::Release),
            shadow: false,
            lost: false,
            held_by_plc: None,
            image_seq: None,
            entered_at: Millis(0),
            decided_at: Some(Millis(5)),
            done_at: Millis(9),
        }
    }

    #[test]
    fn a_finished_parcels_log_lines_carry_its_tracking_id_and_waybill() {
        let out = Captured::default();
        let waybill = Waybill::parse(&format!("EA00000005{}CN", s10_check_digit(b"00000005"))).unwrap();
        let json = crate::logs::json(tracing_subscriber::EnvFilter::new("info"), out.clone());
        tracing::subscriber::with_default(json, || {
            let mut screen = ParcelSpans(LogScreen { mqtt: None, console: false });
            screen.parcel_done(report(42, Some(waybill)));
            screen.parcel_done(report(43, None));
            tracing::info!("not a parcel's");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["fields"]["message"], "parcel done");
        let span = &lines[0]["span"];
        assert_eq!((&span["name"], &span["tracking"]), (&"parcel".into(), &"T42".into()), "{text}");
        assert_eq!(span["waybill"], waybill.to_string());
        assert_eq!(span["parcel"], "T42 (boot 1, serial 7)");
        // No waybill read: the field is absent, not empty.
        assert_eq!(lines[1]["span"]["tracking"], "T43");
        assert!(lines[1]["span"].get("waybill").is_none(), "{text}");
        assert!(lines[2].get("span").is_none(), "{text}");
    }
}
