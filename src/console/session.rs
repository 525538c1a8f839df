//! Sessions (in memory: a restart of the daemon logs everyone out) and the login limiter.
//! Times are the machine's monotonic milliseconds, handed in, so that both are testable.

use super::users::{Role, User};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use std::collections::{HashMap, VecDeque};

/// A session ends after this long without a request.
pub const IDLE_MS: u64 = 30 * 60_000;
/// Failed logins counted per user name and per client address...
pub const LOGIN_FAILURES: usize = 5;
/// ... within this window; beyond that, logins are refused until the window passes.
pub const LOGIN_WINDOW_MS: u64 = 5 * 60_000;
/// Sessions at once; the oldest goes when a login would pass it.
const MAX_SESSIONS: usize = 1024;
/// Names and addresses tracked by the limiter at once (a flood of made-up names cannot grow it).
const MAX_TRACKED: usize = 4096;

/// 256 random bits, hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    /// The user's row as of the login (a later change of password or a disabling ends it).
    pub user_changed_ms: i64,
    pub role: Role,
    pub csrf: String,
    pub created_ms: u64,
    pub last_ms: u64,
}

pub struct Sessions {
    by_token: HashMap<String, Session>,
    lifetime_ms: u64,
}

impl Sessions {
    pub fn new(lifetime_ms: u64) -> Sessions {
        Sessions { by_token: HashMap::new(), lifetime_ms }
    }

    /// A new session for `user`: its cookie token and the session.
    pub fn open(&mut self, user: &User, now_ms: u64) -> (String, Session) {
        self.expire(now_ms);
        if self.by_token.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.by_token.iter().min_by_key(|(_, s)| s.last_ms).map(|(t, _)| t.clone()) {
                self.by_token.remove(&oldest);
            }
        }
        let session = Session {
            user: user.name.clone(),
            user_changed_ms: user.changed_ms,
            role: user.role,
            csrf: token(),
            created_ms: now_ms,
            last_ms: now_ms,
        };
        let cookie = token();
        self.by_token.insert(cookie.clone(), session.clone());
        (cookie, session)
    }

    /// The session of `token`, if it stands; the request counts as activity.
    pub fn touch(&mut self, token: &str, now_ms: u64) -> Option<Session> {
        if self.stands(token, now_ms).is_none() {
            self.by_token.remove(token);
            return None;
        }
        let s = self.by_token.get_mut(token)?;
        s.last_ms = now_ms;
        Some(s.clone())
    }

    /// Whether the session of `token` stands, without counting as activity (an open event
    /// stream does not keep an idle screen logged in).
    pub fn stands(&self, token: &str, now_ms: u64) -> Option<&Session> {
        self.by_token.get(token).filter(|s| self.remaining_ms(s, now_ms) > 0)
    }

    /// When the session ends at the latest, ms from now (0: it has ended).
    pub fn remaining_ms(&self, s: &Session, now_ms: u64) -> u64 {
        remaining_ms(self.lifetime_ms, s, now_ms)
    }

    pub fn close(&mut self, token: &str) -> Option<Session> {
        self.by_token.remove(token)
    }

    fn expire(&mut self, now_ms: u64) {
        let lifetime = self.lifetime_ms;
        self.by_token.retain(|_, s| remaining_ms(lifetime, s, now_ms) > 0);
    }
}

fn remaining_ms(lifetime_ms: u64, s: &Session, now_ms: u64) -> u64 {
    (s.created_ms + lifetime_ms).min(s.last_ms + IDLE_MS).saturating_sub(now_ms)
}

/// Failed logins by key (a user name, a client address), within [`LOGIN_WINDOW_MS`].
#[derive(Default)]
pub struct LoginLimiter {
    failures: HashMap<String, VecDeque<u64>>,
}

impl LoginLimiter {
    /// Whether a login for any of `keys` may be tried now.
    pub fn allowed(&mut self, keys: &[&str], now_ms: u64) -> bool {
        keys.iter().all(|k| {
            let Some(f) = self.failures.get_mut(*k) else { return true };
            while f.front().is_some_and(|&t| now_ms.saturating_sub(t) >= LOGIN_WINDOW_MS) {
                f.pop_front();
            }
            f.len() < LOGIN_FAILURES
        })
    }

    pub fn failed(&mut self, keys: &[&str], now_ms: u64) {
        if self.failures.len() >= MAX_TRACKED {
            self.failures.retain(|_, f| f.back().is_some_and(|&t| now_ms.saturating_sub(t) < LOGIN_WINDOW_MS));
        }
        for k in keys {
            if self.failures.len() < MAX_TRACKED || self.failures.contains_key(*k) {
                self.failures.entry((*k).to_string()).or_default().push_back(now_ms);
            }
        }
    }

    pub fn succeeded(&mut self, user: &str) {
        self.failures.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User { name: "li.wei".into(), role: Role::Officer, disabled: false, changed_ms: 0 }
    }

    #[test]
    fn a_session_ends_at_its_lifetime_when_idle_and_at_logout() {
        let mut s = Sessions::new(60 * 60_000);
        let (t, session) = s.open(&user(), 0);
        assert_eq!(session.csrf.len(), 64);
        assert!(s.touch(&t, 20 * 60_000).is_some());
        assert!(s.touch(&t, 45 * 60_000).is_some());
        assert!(s.touch(&t, 60 * 60_000).is_none(), "past its lifetime");
        let (t, _) = s.open(&user(), 0);
        assert!(s.touch(&t, IDLE_MS).is_none(), "idle too long");
        let (t, _) = s.open(&user(), 0);
        assert!(s.close(&t).is_some());
        assert!(s.touch(&t, 1).is_none());
    }

    #[test]
    fn five_failures_lock_a_name_or_an_address_for_the_window() {
        let mut l = LoginLimiter::default();
        for i in 0..LOGIN_FAILURES as u64 {
            assert!(l.allowed(&["li.wei", "10.0.0.1"], i));
            l.failed(&["li.wei", "10.0.0.1"], i);
        }
        assert!(!l.allowed(&["li.wei", "10.0.0.2"], 10), "the name is locked from any address");
        assert!(!l.allowed(&["zhang", "10.0.0.1"], 10), "the address is locked for any name");
        assert!(l.allowed(&["zhang", "10.0.0.2"], 10));
        assert!(l.allowed(&["li.wei", "10.0.0.1"], LOGIN_WINDOW_MS + 5));
    }
}
