//! The officer console (docs/console.md): review, live line, inspection desk and supervision
//! screens served by the daemon over HTTP, for users of `console.db` with their roles.
//!
//! - [`users`]: accounts, argon2id hashes, `sortline user`.
//! - [`session`]: session cookies, CSRF tokens, the login limiter.
//! - [`board`]: what the screens show, fed by the core's screen calls.
//! - [`http`]: the API and the pages; every action goes through the core as an operator's
//!   command, recorded with the user before it is answered.

pub mod board;
pub mod http;
mod metrics;
pub mod session;
#[cfg(test)]
mod tests;
pub mod users;

pub use board::{Board, ConsoleScreen};
pub use http::{Ctx, Defaults};

use crate::daemon::CoreMsg;
use crate::mqtt::wiring::Figures;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console: cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("console: {0}")]
    Users(#[from] users::UserError),
}

/// The console's listener, bound before the line runs (a taken port stops the start).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ConsoleError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| ConsoleError::Listen { addr, source })
}

/// What the console is made of, once the daemon runs.
pub struct Setup {
    pub board: Arc<Board>,
    pub core: crossbeam_channel::Sender<CoreMsg>,
    pub figures: Figures,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub defaults: Defaults,
    pub session_minutes: u32,
    pub xray: bool,
    pub broker: Option<tokio::sync::watch::Receiver<crate::mqtt::MqttStats>>,
}

impl Setup {
    pub fn ctx(self) -> Result<Arc<Ctx>, ConsoleError> {
        Ok(Arc::new(Ctx {
            users: Mutex::new(users::UserStore::open(&self.data_dir)?),
            sessions: Mutex::new(session::Sessions::new(u64::from(self.session_minutes) * 60_000)),
            limiter: Mutex::default(),
            counters: board::Counters::default(),
            board: self.board,
            core: self.core,
            figures: self.figures,
            xray: self.xray,
            broker: self.broker,
            data_dir: self.data_dir,
            rules_dir: self.rules_dir,
            defaults: self.defaults,
            clock: crate::clock::Stopwatch::start(),
            requests: Default::default(),
        }))
    }
}

/// Serves the console on `listener` until `shutdown` fires; requests under way get a second
/// to finish (the live screens' event streams never do).
pub fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    mut shutdown: tokio::sync::broadcast::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let app = http::router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let mut stopping = shutdown.resubscribe();
    tokio::spawn(async move {
        let graceful = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.recv().await;
        });
        tokio::select! {
            r = graceful => if let Err(e) = r {
                tracing::error!(error = %e, "console server stopped");
            },
            _ = async {
                let _ = stopping.recv().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            } => {}
        }
    })
}
