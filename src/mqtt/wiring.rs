//! MQTT for a running daemon, wired the same way by the demo and by `sortline run`: the sink
//! the daemon's screen feeds is opened before the daemon starts (with the durable outbox), and
//! the publisher starts once the daemon can take the commands it receives.

use super::client::{self, Health, HealthFn, Hooks, MetricsFn, MqttSink, Publisher, ReloadFn, SinkMsg};
use super::intake::Intake;
use super::outbox::{self, Outbox};
use super::{MqttError, Settings};
use crate::core::{Carriers, LineMode, LineStats};
use crate::daemon::CoreMsg;
use crate::plc::driver::DriverStats;
use crate::scanner::reader::ScannerStats;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Events the sink may queue ahead of the outbox; a full queue makes the core wait.
const SINK_CAPACITY: usize = 1024;

/// The sink and outbox, ready for the publisher.
pub struct Prepared {
    pub sink: MqttSink,
    settings: Settings,
    outbox: Outbox,
    events: mpsc::Receiver<SinkMsg>,
    intake: Option<Intake>,
}

/// What the `metrics` topic carries: the core's counters, the PLC link's and the scanner
/// reader's figures.
#[derive(Clone)]
pub struct Figures {
    pub line: Arc<Mutex<LineStats>>,
    /// The core's safe mode and operator stop, for `state`.
    pub mode: Arc<Mutex<LineMode>>,
    pub plc: Arc<Mutex<DriverStats>>,
    pub scanner: Option<Arc<dyn Fn() -> ScannerStats + Send + Sync>>,
}

impl Prepared {
    /// Opens the outbox (`outbox.db` in `data_dir`): what an earlier run left in it goes first;
    /// and, with the platform intake on, the manifest store it writes to (declarations
    /// validated against `carriers`). Sparkplug's bdSeq is kept beside them.
    pub fn open(mut settings: Settings, data_dir: &Path, carriers: Carriers) -> Result<Prepared, MqttError> {
        if let super::Output::SparkplugB(spb) = &mut settings.output {
            spb.bd_seq_file.get_or_insert_with(|| data_dir.join(super::sparkplug::BD_SEQ_FILE));
        }
        let outbox = Outbox::open(&data_dir.join(outbox::FILE), settings.outbox_capacity)?;
        let intake = match settings.platform_intake {
            true => {
                Some(Intake::open(data_dir, carriers).map_err(|e| MqttError::Broker(format!("platform intake: {e}")))?)
            }
            false => None,
        };
        let (sink, events) = client::sink(SINK_CAPACITY);
        Ok(Prepared { sink, settings, outbox, events, intake })
    }

    /// The topics' prefix, `sortline/v1/<site>/<line>`.
    pub fn prefix(&self) -> String {
        self.settings.topics.prefix().to_string()
    }

    /// Starts publishing; accepted commands go to the core through `inputs`; `reload_rules`
    /// reads the rule files in `rules_dir`. Call inside a multi-threaded tokio runtime.
    pub fn start(self, inputs: crossbeam_channel::Sender<CoreMsg>, figures: Figures, rules_dir: PathBuf) -> Publisher {
        let reload: ReloadFn = Box::new(move |officer| {
            crate::config::rules_input(&rules_dir, Some(officer.clone())).map_err(|e| e.to_string())
        });
        let figures = Arc::new(figures);
        let health: HealthFn = {
            let figures = figures.clone();
            Box::new(move || {
                let mode = figures.mode.lock().map(|m| m.clone()).unwrap_or_default();
                let mut degraded = Vec::new();
                if !figures.plc.lock().is_ok_and(|s| s.connected) {
                    degraded.push("plc_link_down");
                }
                if figures.scanner.as_ref().is_some_and(|stats| !stats().link.connected) {
                    degraded.push("scanner_link_down");
                }
                // Lost PLC events hold every parcel, as safe mode does; the condition says why.
                if mode.plc_events_lost {
                    degraded.push("plc_events_lost");
                }
                let safe_mode = mode.safe_mode || mode.plc_events_lost;
                Health { safe_mode, stopped_by: mode.stopped_by.map(String::from), shadow: mode.shadow, degraded }
            })
        };
        let metrics: MetricsFn = Box::new(move || {
            let value = |v: serde_json::Result<serde_json::Value>| v.unwrap_or_default();
            let mut m = serde_json::Map::new();
            let line = figures.line.lock().map(|s| s.clone()).unwrap_or_default();
            m.insert("line".into(), value(serde_json::to_value(line)));
            let plc = figures.plc.lock().map(|s| s.clone()).unwrap_or_default();
            m.insert("plc".into(), value(serde_json::to_value(plc)));
            let reader = figures.scanner.as_ref().map(|stats| stats());
            m.insert("scanner".into(), value(serde_json::to_value(reader)));
            m
        });
        let hooks = Hooks { metrics, health, reload: Some(reload) };
        Publisher::start(self.settings, self.outbox, self.events, inputs, hooks, self.intake)
    }
}
