//! The simulator's officers at the console: each is a console user of its own and acts
//! through the API the page uses (log in, read the queue or the live line, post), so that the
//! demo exercises the console's sessions, CSRF, roles and refusals on every verdict.

use super::client::{ClientError, ConsoleClient};
use super::DemoError;
use crate as sim;
use serde_json::json;
use sortline::clock;
use sortline::console::session::token;
use sortline::console::users::{Role, UserError, UserStore};
use sortline::core::Verdict;
use std::collections::HashMap;
use std::path::Path;

/// The console user the demo prints for a person: a supervisor, so every screen works.
pub const DEMO_USER: &str = "demo";

pub struct SimOfficers {
    base: String,
    users: UserStore,
    clients: HashMap<String, ConsoleClient>,
}

fn user_error(e: UserError) -> DemoError {
    DemoError::Sim { what: "the console's users", detail: e.to_string() }
}

fn client_error(e: ClientError) -> DemoError {
    DemoError::Sim { what: "a simulated officer at the console", detail: e.to_string() }
}

/// Sets the demo user's password (a new one every run, returned) in `console.db` of
/// `data_dir`, and readies the simulated officers for the console at `base`.
pub fn open(data_dir: &Path, base: &str) -> Result<(String, SimOfficers), DemoError> {
    let users = UserStore::open(data_dir).map_err(user_error)?;
    let password = token()[..16].to_string();
    let now = clock::wall_ms();
    match users.add(DEMO_USER, Role::Supervisor, &password, now) {
        Err(UserError::Exists(_)) => users.set_password(DEMO_USER, &password, now).map_err(user_error)?,
        other => other.map_err(user_error)?,
    }
    Ok((password, SimOfficers { base: base.into(), users, clients: HashMap::new() }))
}

/// Whether the simulator's event is an officer's (the console's, not the line's).
pub fn is_officers(event: &sim::SimEvent) -> bool {
    matches!(
        event,
        sim::SimEvent::Verdict { .. } | sim::SimEvent::ManualTransfer { .. } | sim::SimEvent::InspectionResult { .. }
    )
}

impl SimOfficers {
    /// The logged-in client of the simulated officer `name`, made a user with `role` at first use.
    fn client(&mut self, name: &str, role: Role) -> Result<&ConsoleClient, DemoError> {
        if !self.clients.contains_key(name) {
            let password = token();
            let now = clock::wall_ms();
            match self.users.add(name, role, &password, now) {
                Err(UserError::Exists(_)) => self.users.set_password(name, &password, now).map_err(user_error)?,
                other => other.map_err(user_error)?,
            }
            let client = ConsoleClient::login(&self.base, name, &password).map_err(client_error)?;
            self.clients.insert(name.to_string(), client);
        }
        Ok(&self.clients[name])
    }

    /// Does what the officer of `event` does at their screen. What the screen no longer shows
    /// (the review closed, the parcel gone) is not acted on, as a person would not.
    pub fn act(&mut self, event: &sim::SimEvent) -> Result<(), DemoError> {
        use sim::SimEvent as E;
        let answer = match event {
            E::Verdict { tracking, officer, verdict } => {
                let c = self.client(officer, Role::Officer)?;
                let Some(review) = c.review_of(*tracking).map_err(client_error)? else { return Ok(()) };
                let verdict = match verdict {
                    Verdict::Release => "release",
                    Verdict::Inspect => "inspect",
                    Verdict::Hold => "hold",
                };
                let body = json!({ "verdict": verdict, "image_sha256": review["image_sha256"] });
                c.post(&format!("/api/reviews/{}/verdict", review["review"]), &body).map_err(client_error)?
            }
            E::ManualTransfer { tracking, officer } => {
                let c = self.client(officer, Role::Officer)?;
                let Some(p) = c.on_line(*tracking).map_err(client_error)? else { return Ok(()) };
                let body = json!({ "boot": p["boot"], "tracking": p["tracking"], "serial": p["serial"] });
                c.post("/api/transfer", &body).map_err(client_error)?
            }
            E::InspectionResult { waybill, officer, discrepancy } => {
                let c = self.client(officer, Role::Inspector)?;
                let (outcome, note) = if *discrepancy {
                    ("discrepancy", Some("simulated bench: goods differ from the list"))
                } else {
                    ("no_discrepancy", None)
                };
                c.post("/api/inspection", &json!({ "waybill": waybill, "outcome": outcome, "note": note }))
                    .map_err(client_error)?
            }
            _ => return Ok(()),
        };
        match answer.status {
            200 => Ok(()),
            // Refused by the line (late, another parcel by now): on record, as for a person.
            409 => {
                tracing::debug!(body = %answer.body, "simulated officer's action refused by the line");
                Ok(())
            }
            // The core gone: the demo is stopping (results from the bench come in late).
            503 => {
                tracing::debug!(body = %answer.body, "simulated officer's action after the line stopped");
                Ok(())
            }
            // The console refusing a well-formed action of a logged-in officer is a fault.
            status => Err(DemoError::Sim {
                what: "the console refusing a simulated officer",
                detail: format!("{status}: {}", answer.body),
            }),
        }
    }
}
