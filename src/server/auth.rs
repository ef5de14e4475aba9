//! Basic authentication for the server: a users file of `name:argon2-PHC-hash` lines, and
//! a layer in front of the gRPC services that asks every call for `authorization: Basic
//! …` credentials it knows. Calls without them, or with wrong ones, are answered
//! UNAUTHENTICATED, as KurrentDB answers them (the official clients report an
//! access-denied error).
//!
//! Argon2 is slow by design (tens of milliseconds a check), so credentials that checked
//! out once are remembered in memory, keyed by the user and a BLAKE2 digest of the
//! password (never the password itself); checks run on blocking threads, a few at a time.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use blake2::Digest as _;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::codegen::{BoxFuture, Service, http};

use crate::error::{Error, Result};

/// Credentials remembered at most (then the cache starts over).
const VERIFIED_MAX: usize = 4096;

/// Password checks running at once (each takes a blocking thread and argon2's memory).
const CHECKS_AT_ONCE: usize = 4;

/// Users and their password hashes (see [`ServerOptions::with_users`](super::ServerOptions::with_users)).
#[derive(Debug)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// A hash of nothing anyone knows, checked for unknown names so that a miss takes as
    /// long as a wrong password.
    decoy: String,
    verified: Mutex<HashSet<(String, [u8; 32])>>,
    checks: Semaphore,
}

impl Users {
    /// Reads a users file: one `name:hash` line per user, the hash an argon2 PHC string
    /// (`$argon2id$v=19$…`, as `streamlog hash-password` prints); blank lines and lines
    /// starting with `#` are skipped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the file cannot be read or a line is not a name and
    /// a valid argon2 hash (the error names the line).
    pub fn from_file(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the users file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("users file {}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// The same from the file's text.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a line that is not `name:argon2-hash`, a name given
    /// twice, or a file with no user.
    pub fn parse(text: &str) -> Result<Users> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error::InvalidArgument(format!("line {}: {why}", n + 1));
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("expected name:argon2-hash"))?;
            if name.is_empty() {
                return Err(bad("the user name is empty"));
            }
            let parsed = PasswordHash::new(hash)
                .map_err(|e| bad(&format!("not an argon2 PHC hash ({e})")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(bad("the hash is not an argon2 hash"));
            }
            if hashes.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(&format!("user {name} is listed twice")));
            }
        }
        if hashes.is_empty() {
            return Err(Error::InvalidArgument(
                "no user in the users file (every call would be refused)".into(),
            ));
        }
        Ok(Users {
            hashes,
            decoy: hash_password(&uuid::Uuid::new_v4().to_string())?,
            verified: Mutex::new(HashSet::new()),
            checks: Semaphore::new(CHECKS_AT_ONCE),
        })
    }

    /// Whether `name` with `password` is a user of this file.
    async fn check(self: &Arc<Self>, name: &str, password: &str) -> bool {
        let key = (
            name.to_owned(),
            <[u8; 32]>::from(blake2::Blake2s256::digest(password.as_bytes())),
        );
        if self.verified.lock().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let users = Arc::clone(self);
        let (name, password) = (name.to_owned(), password.to_owned());
        let known = tokio::task::spawn_blocking(move || {
            let (hash, known) = match users.hashes.get(&name) {
                Some(h) => (h.as_str(), true),
                None => (users.decoy.as_str(), false),
            };
            let ok = PasswordHash::new(hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            });
            ok && known
        })
        .await
        .unwrap_or(false);
        if known {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(key);
        }
        known
    }
}

/// Hashes `password` with argon2id (the crate's default parameters) and a random salt,
/// as a PHC string for a users file.
///
/// # Errors
/// [`Error::InvalidArgument`] if argon2 refuses the password (longer than it takes).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| Error::InvalidArgument(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::InvalidArgument(format!("cannot hash the password: {e}")))
}

/// The user and password of an `authorization: Basic …` header.
fn basic_credentials(header: &http::HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Calls that need no credentials: what clients ask before anything else, and what
/// KurrentDB answers anonymously too (it tells nothing about the data).
fn is_open(path: &str) -> bool {
    path.starts_with("/event_store.client.server_features.ServerFeatures/")
        || path.starts_with("/event_store.client.gossip.Gossip/")
}

/// The layer that puts [`Authenticate`] in front of the services (a pass-through
/// without users).
#[derive(Debug, Clone)]
pub(super) struct AuthLayer {
    pub(super) users: Option<Arc<Users>>,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            users: self.users.clone(),
        }
    }
}

/// Checks each call's credentials before handing it on.
#[derive(Debug, Clone)]
pub(super) struct Authenticate<S> {
    inner: S,
    users: Option<Arc<Users>>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(users) = self.users.clone() else {
            return Box::pin(self.inner.call(request));
        };
        if is_open(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The service that was made ready is the one to call; leave a fresh clone behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let credentials = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(basic_credentials);
            let allowed = match &credentials {
                Some((user, password)) => users.check(user, password).await,
                None => false,
            };
            if allowed {
                inner.call(request).await
            } else {
                let why = if credentials.is_some() {
                    "bad user name or password"
                } else {
                    "this server requires authentication (basic credentials)"
                };
                Ok(Status::unauthenticated(why).into_http())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_file_holds_names_and_argon2_hashes() {
        let hash = hash_password("secret").expect("hash");
        let users = Users::parse(&format!("# admins\n\nadmin:{hash}\n")).expect("parse");
        assert_eq!(users.hashes.len(), 1);
        for bad in [
            "admin".to_owned(),
            format!(":{hash}"),
            "admin:not-a-hash".to_owned(),
            format!("admin:{hash}\nadmin:{hash}"),
            "# nobody\n".to_owned(),
        ] {
            assert!(
                matches!(Users::parse(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?} is refused"
            );
        }
    }

    #[tokio::test]
    async fn only_the_right_password_checks_out_and_it_is_remembered() {
        let users = Arc::new(
            Users::parse(&format!("ops:{}", hash_password("right").expect("hash"))).expect("parse"),
        );
        assert!(!users.check("ops", "wrong").await);
        assert!(!users.check("nobody", "right").await);
        assert!(
            users.verified.lock().is_empty(),
            "failures are not remembered"
        );
        assert!(users.check("ops", "right").await);
        assert_eq!(users.verified.lock().len(), 1);
        assert!(users.check("ops", "right").await);
        assert!(!users.check("ops", "wrong").await);
    }

    #[test]
    fn basic_credentials_are_decoded_from_the_header() {
        let header = http::HeaderValue::from_static("Basic YWRtaW46Y2hhbmdlaXQ=");
        assert_eq!(
            basic_credentials(&header),
            Some(("admin".to_owned(), "changeit".to_owned()))
        );
        for bad in ["Bearer abc", "Basic !!!", "Basic YWRtaW4="] {
            assert_eq!(
                basic_credentials(&http::HeaderValue::from_static(bad)),
                None
            );
        }
    }
}
