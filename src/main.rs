//! The `sortline` command line: the edge where errors become exit codes.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sortline::config::{ConfigError, ConfigErrors, LineConfig, Loaded};
use sortline::logs::LogFormat;
use sortline::service::ServiceError;
use sortline::{audit, manifest, recorder, replay, report};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the commands look for the line's configuration unless told: the checkout's shipped one.
const DEFAULT_CONFIG: &str = "firmware-config/line.toml";
/// Exit code for a configuration error (sysexits EX_USAGE), before anything starts.
const EXIT_CONFIG: u8 = 64;
/// Exit code when the audit chain does not verify.
const EXIT_BROKEN_CHAIN: u8 = 3;
/// Exit code of `manifest import` when any line was rejected (the good ones are imported).
const EXIT_REJECTED: u8 = 2;

#[derive(Parser)]
#[command(name = "sortline", version, about = "Controller for customs inspection sorting lines")]
struct Cli {
    /// Log lines on standard error as `text` or `json` (one object a line); default: the
    /// environment's SORTLINE_LOG_FORMAT, else text.
    #[arg(long, global = true, value_name = "text|json")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The line against the simulator: runs `sortline-sim demo` with the same arguments. The
    /// simulator is a program of its own (`sim/`), so that a line's build carries none of it.
    #[command(disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run the line: the PLC and the scanner the configuration names, the machine's clock, the
    /// record in the data directory. SIGTERM or SIGINT drains the belt and stops.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Data directory; default: `[data].dir` of the configuration.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Check a line configuration, its rule files and the files it names; every error is
    /// listed, then exit 64.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The same as `--config FILE`.
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// The tamper-evident record.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The line's figures for a time window, from the record: lanes, channel mix, no-read,
    /// late and inspection hit rates, review times per officer.
    Report {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        window: Window,
        /// Also write the figures as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// The box's Ed25519 key that signs audit checkpoints.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Declaration lists (清单) in the data directory's manifests.db.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Local manual targets (人工布控): stored in manifests.db, every change recorded in the audit chain.
    Target {
        #[command(subcommand)]
        command: TargetCommand,
    },
    /// What operators set at run time (a line stop, rates, the review window): stored in
    /// manifests.db before it takes effect, and restored at every start.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// The officer console's users (console.db in the data directory). Passwords are read
    /// from standard input, one line.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Adds a user: role officer (verdicts, transfers), inspector (inspection results),
    /// supervisor (everything, and targets, rates, line stop), viewer (reads only).
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "/var/lib/sortline")]
        data: PathBuf,
    },
    /// Sets a new password; the user's sessions end.
    Passwd {
        name: String,
        #[arg(long, default_value = "/var/lib/sortline")]
        data: PathBuf,
    },
    /// Disables a user: they can no longer log in.
    Disable {
        name: String,
        #[arg(long, default_value = "/var/lib/sortline")]
        data: PathBuf,
    },
    List {
        #[arg(long, default_value = "/var/lib/sortline")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Prints what is stored.
    Show {
        #[arg(long)]
        data: PathBuf,
    },
    /// Forgets the stored rates and review window, so that line.toml's apply again at the next
    /// start (a line stop stays: start the line with `line_start`). Recorded in the audit
    /// chain; refused while the daemon runs.
    Reset {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        author: String,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Import a JSON Lines or CSV file (docs/manifest.md). Every rejected line is printed with
    /// its line number and field; good lines are imported. Exit 2 when any line was rejected.
    Import {
        file: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// `jsonl` or `csv`; default: from the file's extension.
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// Declarations per transaction; default: `[manifests] batch_size`.
        #[arg(long)]
        batch_size: Option<usize>,
        /// For the carriers' waybill formats and the batch size.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// A waybill's current declaration (JSON) and the versions on record.
    Show {
        waybill: String,
        #[arg(long)]
        data: PathBuf,
    },
    /// Retention: remove declarations not amended for `[manifests] retention_days`.
    Purge {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FileFormat {
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetBy {
    Waybill,
    Consignor,
    Consignee,
    HsPrefix,
    ListNo,
}

#[derive(Subcommand)]
enum TargetCommand {
    /// Add a target; prints its id.
    Add {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum)]
        by: TargetBy,
        value: String,
        /// The risk officer's id.
        #[arg(long)]
        author: String,
        #[arg(long)]
        reason: String,
        /// RFC 3339 time from which it no longer matches.
        #[arg(long)]
        expires: Option<String>,
        /// For the carriers' waybill formats (`--by waybill`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Targets in force (with `--all`, removed and expired ones too).
    List {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        all: bool,
    },
    /// Remove a target; it stays on record as removed.
    Remove {
        id: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        author: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the whole chain and every checkpoint signature; non-zero exit on any break.
    Verify {
        #[arg(long)]
        data: PathBuf,
        /// The site's copy of the box's public key (hex); without it, checkpoints are checked
        /// against the key they carry, which proves integrity but not origin.
        #[arg(long)]
        public_key: Option<String>,
        /// A checkpoint saved off the box, `SEQ:HASH` (the entry it covers and its hash): the
        /// chain must reach it and agree. Repeatable.
        #[arg(long)]
        anchor: Vec<String>,
        /// A file of checkpoints saved off the box, one JSON object per line with `seq` and
        /// `head` (the MQTT `audit/checkpoint` messages captured, or `audit checkpoints`).
        #[arg(long)]
        anchors: Option<PathBuf>,
        /// For the archive folder: every archive row is checked against its file there.
        /// Without it: `firmware-config/line.toml` if there is one, else the shipped `archive`
        /// folder of the data directory.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Every signed checkpoint, one JSON object per line (seq and head covered, public key,
    /// signature, the checkpoint's own entry and time): keep them off the box as anchors.
    Checkpoints {
        #[arg(long)]
        data: PathBuf,
    },
    /// A parcel's whole story, in order.
    Show {
        waybill: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Feed the recorded inputs through a fresh core; every recorded decision must come out the same.
    Replay {
        #[arg(long)]
        data: PathBuf,
        /// For runs that were not demos: the configuration whose secret they used.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Move entries older than a time into archive files (each ending at a signed checkpoint)
    /// and out of the database; `verify` then checks the rest against the archive's head.
    Archive {
        #[arg(long)]
        data: PathBuf,
        /// RFC 3339 time: entries before it are archived.
        #[arg(long)]
        before: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check an archive file on its own: its hash chain and its signed checkpoints.
    VerifyArchive {
        file: PathBuf,
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Entries between two times as JSON Lines.
    Export {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        window: Window,
    },
}

/// A time window over the record's wall clock; open ends reach everything.
#[derive(clap::Args)]
struct Window {
    /// RFC 3339 time, e.g. 2026-11-23T08:00:00Z; default: the beginning.
    #[arg(long)]
    from: Option<String>,
    /// RFC 3339 time, exclusive; default: no end.
    #[arg(long)]
    to: Option<String>,
}

impl Window {
    fn bounds(&self) -> Result<(i64, i64)> {
        let from = self.from.as_deref().map(rfc3339_ms).transpose()?.unwrap_or(i64::MIN);
        let to = self.to.as_deref().map(rfc3339_ms).transpose()?.unwrap_or(i64::MAX);
        Ok((from, to))
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the signing key in the data directory (refuses to overwrite one).
    Init {
        #[arg(long)]
        data: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = sortline::logs::init_with(cli.log_format);
    match run(cli, format) {
        Ok(code) => code,
        Err(e) => {
            if let Some(all) = e.downcast_ref::<ConfigErrors>() {
                for c in all.iter() {
                    say(format, &format!("configuration error: {c}"));
                }
                if all.stopped() {
                    say(format, "checked no further: the rest of the configuration needs that fixed first");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            // One error: the commands that load to the first error, and what only a run reads
            // (the site secret).
            let single = e.downcast_ref::<ConfigError>().or(match e.downcast_ref::<ServiceError>() {
                Some(ServiceError::Config(c)) => Some(c),
                _ => None,
            });
            if let Some(c) = single {
                say(format, &format!("configuration error: {c}"));
                return ExitCode::from(EXIT_CONFIG);
            }
            say(format, &format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// An error for the operator on standard error: a plain line, or in JSON a log event like the
/// others, so that a log collector reads every line there.
fn say(format: LogFormat, text: &str) {
    match format {
        LogFormat::Text => eprintln!("sortline: {text}"),
        LogFormat::Json => tracing::error!("{text}"),
    }
}

/// `sortline demo`: replaced by `sortline-sim demo`, found beside this program (as cargo builds
/// them) or on the PATH. Returns only if it could not be started.
fn demo(args: Vec<std::ffi::OsString>, format: LogFormat) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()?.with_file_name("sortline-sim");
    let program = if beside.exists() { beside.into_os_string() } else { "sortline-sim".into() };
    // The simulator takes its log format from the environment.
    let e = std::process::Command::new(&program)
        .arg("demo")
        .args(args)
        .env(sortline::logs::FORMAT_ENV, format.as_str())
        .exec();
    Err(anyhow::anyhow!(
        "cannot start the simulator {}: {e}; the demo is `cargo run -p sortline-sim -- demo` \
         (or build it beside sortline: `cargo build -p sortline-sim`)",
        Path::new(&program).display()
    ))
}

fn load(config: &Path) -> Result<Loaded> {
    Ok(LineConfig::load(config)?)
}

fn run(cli: Cli, format: LogFormat) -> Result<ExitCode> {
    match cli.command {
        Command::Demo { args } => demo(args, format),
        Command::Run { config, data } => {
            // All that check-config checks, before anything opens.
            let (cfg, _) = LineConfig::check_all(&config)?;
            let data = data.unwrap_or_else(|| cfg.line.data.dir.clone());
            let stopped = sortline::service::run(&cfg, &data)?;
            tracing::info!(parcels = stopped.parcels, drained = stopped.drained, "sortline stopped");
            Ok(if stopped.drained { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::CheckConfig { config, file } => {
            let config = file.unwrap_or(config);
            let (cfg, c) = LineConfig::check_all(&config)?;
            println!(
                "{}: valid; {} interception rules; gate to cut-off {} ms, gate to end {} ms; register map v{}; scanner profile {}{}",
                config.display(),
                c.rules,
                c.gate_to_cutoff_ms,
                c.gate_to_end_ms,
                c.map_version,
                cfg.scanner_profile.display(),
                if cfg.line.commissioning.shadow { "; shadow mode: every parcel to hold" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit_command(command),
        Command::Report { data, window, csv } => {
            let (from, to) = window.bounds()?;
            let r = report::report(&data.join(audit::DB_FILE), from, to)?;
            print!("{}", r.to_text());
            if let Some(path) = csv {
                std::fs::write(&path, r.to_csv()).with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest { command } => manifest_command(command),
        Command::Target { command } => target_command(command),
        Command::Operator { command } => operator_command(command),
        Command::User { command } => user_command(command),
        Command::Keys { command: KeysCommand::Init { data } } => {
            let key = data.join(audit::KEY_FILE);
            // The key's own folder (`keys/`) too: a fresh data directory has none.
            std::fs::create_dir_all(key.parent().unwrap_or(&data))?;
            let signer = audit::Signer::init(&key)?;
            println!("public key {}", signer.public_key_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn audit_command(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { data, public_key, anchor, anchors, config } => {
            let key = public_key.map(|k| parse_key(&k)).transpose()?;
            let mut given = anchor.iter().map(|a| parse_anchor(a)).collect::<Result<Vec<_>>>()?;
            if let Some(file) = &anchors {
                given.extend(read_anchors(file)?);
            }
            let db = data.join(audit::DB_FILE);
            let chain = print_verify(&audit::verify_against(&db, key.as_ref(), &given)?, !given.is_empty());
            // The chain needs no configuration; only the archive folder does, and a box's
            // daily check runs from anywhere.
            let config = config.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|c| c.exists()));
            let archive_dir = match &config {
                Some(c) => data.join(&load(c)?.line.audit.archive_dir),
                None => data.join(audit::DEFAULT_ARCHIVE_DIR),
            };
            let archives = audit::verify_archives(&db, &archive_dir, key.as_ref(), &given)?;
            if config.is_none() && !archives.is_empty() {
                println!("archive folder {} (the shipped default; --config names the line's)", archive_dir.display());
            }
            let mut broken = false;
            for a in &archives {
                match &a.problem {
                    None => println!("archive {}..={} verified: {}", a.first_seq, a.last_seq, a.file.display()),
                    Some(p) => {
                        broken = true;
                        println!("archive {}..={} BROKEN: {} ({})", a.first_seq, a.last_seq, p, a.file.display());
                    }
                }
            }
            Ok(if broken { ExitCode::from(EXIT_BROKEN_CHAIN) } else { chain })
        }
        AuditCommand::Checkpoints { data } => {
            let mut out = std::io::stdout().lock();
            let mut failed = None;
            audit::entries(&data.join(audit::DB_FILE), |e| {
                if e.kind != audit::CHECKPOINT_KIND || failed.is_some() {
                    return Ok(());
                }
                match serde_json::from_value::<audit::CheckpointPayload>(e.payload.clone()) {
                    Ok(payload) => {
                        let cp = audit::SignedCheckpoint { entry_seq: e.seq, wall_ms: e.wall_ms, payload };
                        if let Err(err) = writeln!(out, "{}", serde_json::to_string(&cp).unwrap_or_default()) {
                            failed = Some(anyhow::Error::from(err));
                        }
                    }
                    Err(err) => failed = Some(anyhow::anyhow!("checkpoint entry {}: {err}", e.seq)),
                }
                Ok(())
            })?;
            failed.map_or(Ok(ExitCode::SUCCESS), Err)
        }
        AuditCommand::Show { waybill, data, config } => {
            let lanes = load(&config)?.line.lanes;
            let story = audit::story(&data.join(audit::DB_FILE), &waybill)?;
            if story.is_empty() {
                println!("no record of {waybill}");
                return Ok(ExitCode::FAILURE);
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{waybill}")?;
            for e in story {
                let what = recorder::describe_entry(&e.kind, &e.payload, &lanes);
                let tracking = e.tracking.map(|t| format!("T{t}")).unwrap_or_default();
                writeln!(out, "  #{:<7} {}  {:>7}  {}", e.seq, wall_time(e.wall_ms), tracking, what)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive { data, before, config } => {
            let dir = data.join(&load(&config)?.line.audit.archive_dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let before = rfc3339_ms(&before)?;
            let db = data.join(audit::DB_FILE);
            // Each call moves a bounded segment, so that the daemon's writes wait briefly.
            let mut moved = 0;
            while let Some(a) = audit::archive(&db, before, &dir, sortline::clock::wall_ms())? {
                println!("archived entries {}..={} ({}) to {}", a.first_seq, a.last_seq, a.entries, a.file.display());
                moved += a.entries;
            }
            println!("{moved} entries archived");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::VerifyArchive { file, public_key } => {
            let key = public_key.map(|k| parse_key(&k)).transpose()?;
            let r = audit::verify_archive(&file, key.as_ref())?;
            Ok(print_verify(&r, false))
        }
        AuditCommand::Replay { data, config } => {
            let r = replay::replay(&data.join(audit::DB_FILE), |start| run_secret(start, &config, &data))?;
            println!(
                "replayed {} runs: {} inputs, {} recorded decisions, {} not reproduced",
                r.runs, r.inputs, r.decisions, r.mismatch_count
            );
            for m in &r.mismatches {
                println!(
                    "  entry {}: recorded {} / replayed {}",
                    m.seq,
                    json_or_none(&m.recorded),
                    json_or_none(&m.replayed)
                );
            }
            Ok(if r.reproduced() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Export { data, window } => {
            let (from, to) = window.bounds()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            audit::entries_between(&data.join(audit::DB_FILE), from, to, |e| {
                let line = serde_json::json!({
                    "seq": e.seq, "kind": e.kind, "wall_ms": e.wall_ms, "mono_ms": e.mono_ms,
                    "tracking": e.tracking, "waybill": e.waybill, "payload": e.payload,
                    "prev_hash": hex::encode(e.prev_hash), "hash": hex::encode(e.hash),
                });
                writeln!(out, "{line}").map_err(|source| audit::AuditError::Io { path: "<stdout>".into(), source })
            })?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_store(data: &Path) -> Result<manifest::ManifestStore> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Ok(manifest::ManifestStore::open(&data.join(manifest::DB_FILE))?)
}

fn manifest_command(command: ManifestCommand) -> Result<ExitCode> {
    match command {
        ManifestCommand::Import { file, data, format, batch_size, config } => {
            let cfg = load(&config)?;
            let format = match format {
                Some(FileFormat::Jsonl) => manifest::Format::JsonLines,
                Some(FileFormat::Csv) => manifest::Format::Csv,
                None => manifest::Format::from_path(&file)
                    .with_context(|| format!("{}: say --format jsonl or csv", file.display()))?,
            };
            let mut store = open_store(&data)?;
            let reader = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let lines = manifest::read(std::io::BufReader::with_capacity(1 << 16, reader), format)
                .with_context(|| file.display().to_string())?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut write_failed = None;
            let result = manifest::import(
                &mut store,
                lines,
                &cfg.line.waybills.carriers,
                batch_size.unwrap_or(cfg.line.manifests.batch_size),
                sortline::clock::wall_ms(),
                |r| {
                    if let Err(e) = writeln!(out, "rejected {r}") {
                        write_failed.get_or_insert(e);
                    }
                },
            );
            if let Some(e) = write_failed {
                return Err(e.into());
            }
            let r = result.with_context(|| file.display().to_string())?;
            writeln!(
                out,
                "{}: {} declarations read: {} new, {} amended, {} already held, {} rejected; {} held in {}",
                file.display(),
                r.declarations,
                r.new,
                r.amended,
                r.unchanged,
                r.rejected,
                store.len(),
                store.path().display()
            )?;
            out.flush()?;
            Ok(if r.rejected > 0 { ExitCode::from(EXIT_REJECTED) } else { ExitCode::SUCCESS })
        }
        ManifestCommand::Show { waybill, data } => {
            let store = open_store(&data)?;
            let w: sortline::core::Waybill =
                serde_json::from_value(waybill.clone().into()).with_context(|| format!("{waybill:?}"))?;
            let Some(d) = store.get(&w)? else {
                println!("no declaration for {waybill}");
                return Ok(ExitCode::FAILURE);
            };
            println!("{}", serde_json::to_string_pretty(&d)?);
            for (version, received_ms) in store.versions(&w)? {
                let current = if version == d.version { " (current)" } else { "" };
                println!("version {version} received {}{current}", wall_time(received_ms));
            }
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Purge { data, config } => {
            let retention = load(&config)?.line.manifests;
            let mut store = open_store(&data)?;
            let before = retention.retention_cutoff_ms(sortline::clock::wall_ms());
            let n = store.purge_before(before)?;
            println!(
                "{n} declaration versions removed (not amended since {}); {} held",
                wall_time(before),
                store.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The audit chain's writer, taken before the store changes: a running daemon holds it (its
/// chain must have one writer), and a target the record cannot tell of must not be stored.
fn audit_writer(data: &Path) -> Result<audit::AuditLog> {
    Ok(audit::AuditLog::open(&data.join(audit::DB_FILE), None, 0)?)
}

/// Appends a target change to the audit chain, as the core's input would be recorded.
fn record_target(log: &mut audit::AuditLog, input: sortline::core::Input, wall_ms: i64) -> Result<u64> {
    let record = sortline::core::Record::Input(input);
    Ok(log.append(&[recorder::entry(&record, sortline::core::Millis(0), wall_ms)])?)
}

fn password_from_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn user_command(command: UserCommand) -> Result<ExitCode> {
    use sortline::console::users::{Role, UserStore};
    let now = sortline::clock::wall_ms();
    match command {
        UserCommand::Add { name, role, data } => {
            let role = Role::parse(&role)?;
            std::fs::create_dir_all(&data)?;
            UserStore::open(&data)?.add(&name, role, &password_from_stdin()?, now)?;
            println!("user {name} added as {}", role.as_str());
        }
        UserCommand::Passwd { name, data } => {
            UserStore::open(&data)?.set_password(&name, &password_from_stdin()?, now)?;
            println!("password of {name} changed");
        }
        UserCommand::Disable { name, data } => {
            UserStore::open(&data)?.set_disabled(&name, true, now)?;
            println!("user {name} disabled");
        }
        UserCommand::List { data } => {
            for u in UserStore::open(&data)?.list()? {
                println!("{:<32} {:<10} {}", u.name, u.role.as_str(), if u.disabled { "disabled" } else { "" });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn operator_command(command: OperatorCommand) -> Result<ExitCode> {
    match command {
        OperatorCommand::Show { data } => {
            let state = manifest::OperatorStore::open(&data.join(manifest::DB_FILE))?.operator_state()?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        OperatorCommand::Reset { data, author } => {
            let author = sortline::core::OfficerId::new(&author).map_err(|e| anyhow::anyhow!("--author: {e}"))?;
            let mut log = audit_writer(&data)?;
            let mut store = manifest::OperatorStore::open(&data.join(manifest::DB_FILE))?;
            let now = sortline::clock::wall_ms();
            let state = store.operator_state()?;
            let kept = sortline::core::OperatorState { stopped_by: state.stopped_by.clone(), ..Default::default() };
            store.save_state(&kept, now)?;
            let reply = sortline::mqtt::command::Reply {
                command: "operator_reset".into(),
                request_id: None,
                operator: Some(author.to_string()),
                status: "accepted",
                error: None,
                via: None,
            };
            let seq = log.append(&[recorder::command_entry(&reply, sortline::core::Millis(0), now)])?;
            println!("operators' rates and review window forgotten (audit entry {seq}); was {state:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn target_command(command: TargetCommand) -> Result<ExitCode> {
    use sortline::core::{Input, Millis, OfficerId, TargetCriterion};
    match command {
        TargetCommand::Add { data, by, value, author, reason, expires, config } => {
            let author = OfficerId::new(&author).map_err(|e| anyhow::anyhow!("--author: {e}"))?;
            anyhow::ensure!(!reason.trim().is_empty(), "--reason: must not be empty");
            let criterion = match by {
                TargetBy::Waybill => TargetCriterion::Waybill(
                    load(&config)?.line.waybills.carriers.parse(&value).with_context(|| format!("{value:?}"))?,
                ),
                TargetBy::Consignor => TargetCriterion::Consignor(value),
                TargetBy::Consignee => TargetCriterion::Consignee(value),
                TargetBy::HsPrefix => {
                    anyhow::ensure!(
                        (1..=10).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()),
                        "--by hs-prefix: {value:?} must be 1 to 10 digits"
                    );
                    TargetCriterion::HsPrefix(value)
                }
                TargetBy::ListNo => TargetCriterion::ListNo(value),
            };
            let now = sortline::clock::wall_ms();
            let expires = expires.as_deref().map(rfc3339_ms).transpose()?;
            anyhow::ensure!(expires.is_none_or(|e| e > now), "--expires: must be in the future");
            let mut log = audit_writer(&data)?;
            let mut store = open_store(&data)?;
            let target = manifest::new_target(store.next_target_id()?, criterion, &author, &reason, now, expires);
            store.add_target(&target)?;
            // Outside a run there is no line clock: the recorded times are wall-clock ms.
            let input = Input::TargetAdd(target.to_core(now, Millis(now.max(0) as u64))?);
            let seq = record_target(&mut log, input, now)?;
            println!("target {} added (audit entry {seq})", target.id);
            Ok(ExitCode::SUCCESS)
        }
        TargetCommand::List { data, all } => {
            let store = open_store(&data)?;
            let now = sortline::clock::wall_ms();
            for t in store.targets()?.into_iter().filter(|t| all || t.active_at(now)) {
                let criterion = serde_json::to_string(&t.criterion)?;
                let expires = t.expires_ms.map(|e| format!(" expires {}", wall_time(e))).unwrap_or_default();
                let state = match &t.removed {
                    Some((ms, by)) => format!(" REMOVED {} by {by}", wall_time(*ms)),
                    None if !t.active_at(now) => " EXPIRED".into(),
                    None => String::new(),
                };
                println!(
                    "{} {criterion} by {} at {}{expires}{state}: {}",
                    t.id,
                    t.author,
                    wall_time(t.created_ms),
                    t.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TargetCommand::Remove { id, data, author } => {
            let officer = OfficerId::new(&author).map_err(|e| anyhow::anyhow!("--author: {e}"))?;
            let now = sortline::clock::wall_ms();
            let mut log = audit_writer(&data)?;
            let mut store = open_store(&data)?;
            store.remove_target(&id, officer.as_str(), now)?;
            let seq = record_target(&mut log, Input::TargetRemove { id: id.as_str().into(), officer }, now)?;
            println!("target {id} removed (audit entry {seq})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_verify(r: &audit::VerifyReport, anchored: bool) -> ExitCode {
    match &r.first_break {
        None if r.entries == 0 => {
            println!("audit chain verified: no entries after entry {} (head {})", r.first_seq - 1, hex::encode(r.head));
            ExitCode::SUCCESS
        }
        None => {
            println!(
                "audit chain verified: entries {}..={} ({}), {} signed checkpoints, head {}",
                r.first_seq,
                r.first_seq + r.entries - 1,
                r.entries,
                r.checkpoints,
                hex::encode(r.head)
            );
            match r.unsigned {
                0 => println!("every entry is covered by a signed checkpoint"),
                n => println!("{n} entries after the last signed checkpoint are unsigned"),
            }
            if anchored {
                println!(
                    "{} anchors reached and agreeing; {} in archived segments (checked against their files below)",
                    r.anchors_checked, r.anchors_archived
                );
            } else {
                println!(
                    "no anchors given: the chain is consistent and signed, not shown complete (see docs/audit.md)"
                );
            }
            ExitCode::SUCCESS
        }
        Some(b) => {
            println!("audit chain BROKEN at entry {}: {}", b.seq, b.problem);
            ExitCode::from(EXIT_BROKEN_CHAIN)
        }
    }
}

/// `SEQ:HASH`, the entry a checkpoint covers and its hash in hex.
fn parse_anchor(text: &str) -> Result<audit::Anchor> {
    let (seq, hash) = text.split_once(':').with_context(|| format!("--anchor {text:?}: SEQ:HASH"))?;
    let seq = seq.parse().with_context(|| format!("--anchor {text:?}: SEQ is not a number"))?;
    let mut head = [0u8; 32];
    hex::decode_to_slice(hash, &mut head).with_context(|| format!("--anchor {text:?}: HASH is not 32 hex bytes"))?;
    Ok(audit::Anchor { seq, head })
}

/// Anchors from a file of JSON objects, one a line, each with `seq` and `head` (other fields,
/// an MQTT event id, the signature, are ignored); blank lines are skipped.
fn read_anchors(file: &Path) -> Result<Vec<audit::Anchor>> {
    #[derive(serde::Deserialize)]
    struct Line {
        seq: u64,
        head: String,
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("--anchors {}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).with_context(|| format!("{}:{}", file.display(), n + 1))?;
        out.push(
            parse_anchor(&format!("{}:{}", l.seq, l.head)).with_context(|| format!("{}:{}", file.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// The secret a recorded run used: a demo's comes from its seed, a line's
/// from its configuration.
fn run_secret(start: &serde_json::Value, config: &Path, data: &Path) -> Result<sortline::core::SiteSecret, String> {
    if start.get("mode").and_then(|m| m.as_str()) == Some("demo") {
        let seed = start.get("seed").and_then(|s| s.as_u64()).ok_or("demo run without a seed")?;
        return Ok(sortline::core::SiteSecret::from_demo_seed(seed));
    }
    let cfg = LineConfig::load(config).map_err(|e| e.to_string())?;
    cfg.line.sampling.secret.resolve(data).map_err(|e| e.to_string())
}

fn json_or_none(v: &Option<serde_json::Value>) -> String {
    v.as_ref().map_or_else(|| "nothing".into(), |v| v.to_string())
}

fn parse_key(text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).context("public key must be hex")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("public key must be 32 bytes"))
}

fn rfc3339_ms(text: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(text).with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

fn wall_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
