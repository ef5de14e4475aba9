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
/// KurrentDB answers anonymously too (it tells nothing about the data), and a cluster
/// node's status (its view of the members and their roles, as gossip gives).
fn is_open(path: &str) -> bool {
    path.starts_with("/event_store.client.server_features.ServerFeatures/")
        || path.starts_with("/event_store.client.gossip.Gossip/")
        || path == RAFT_STATUS
}

/// The raft service's calls (`proto/streamlog/raft.proto`): between the nodes of a
/// cluster, and `streamlog cluster`'s administration.
const RAFT_SERVICE: &str = "/streamlog.raft.Raft/";
/// The one call of the raft service that is open: a node's status.
const RAFT_STATUS: &str = "/streamlog.raft.Raft/Status";

/// The gRPC metadata key that carries the [`ClusterSecret`] on raft calls.
pub(crate) const CLUSTER_SECRET_HEADER: &str = "streamlog-cluster-secret";

/// The secret the nodes of a cluster share (`serve --cluster-secret-file`): every raft
/// call between them and every administration call carries it, and a node given one
/// refuses those calls without it (UNAUTHENTICATED), compared in constant time. Needed
/// with users (basic authentication), which it complements: users authenticate
/// clients, the secret authenticates nodes. Without TLS it crosses the network in
/// clear, as basic credentials do.
#[derive(Clone)]
pub struct ClusterSecret {
    secret: Arc<str>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The shortest secret taken, in bytes.
    pub const MIN_BYTES: usize = 16;
    /// The longest secret taken, in bytes.
    pub const MAX_BYTES: usize = 1024;

    /// A secret of visible ASCII characters (it travels as a gRPC header), between
    /// [`ClusterSecret::MIN_BYTES`] and [`ClusterSecret::MAX_BYTES`] long, e.g. the
    /// output of `openssl rand -hex 32`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is too short, too long, or holds other
    /// characters (spaces included).
    pub fn new(secret: &str) -> Result<ClusterSecret> {
        if secret.len() < Self::MIN_BYTES || secret.len() > Self::MAX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a cluster secret is {} to {} characters long, not {}",
                Self::MIN_BYTES,
                Self::MAX_BYTES,
                secret.len()
            )));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(
                "a cluster secret holds visible ASCII characters only (no spaces)".into(),
            ));
        }
        Ok(ClusterSecret {
            secret: Arc::from(secret),
        })
    }

    /// Reads a secret from a file: its text without the line break at its end.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the file cannot be read or its text is not a
    /// secret [`ClusterSecret::new`] takes.
    pub fn from_file(path: &Path) -> Result<ClusterSecret> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the cluster secret file {}: {e}",
                path.display()
            ))
        })?;
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        ClusterSecret::new(secret).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("cluster secret file {}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Whether `presented` is the secret, compared in constant time (the time depends on
    /// the lengths only).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        self.secret.as_bytes().ct_eq(presented).into()
    }

    /// The secret as the value of [`CLUSTER_SECRET_HEADER`].
    #[cfg(feature = "cluster")]
    pub(crate) fn header_value(&self) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        // Checked by `new`: visible ASCII only, which is always a valid header value.
        tonic::metadata::MetadataValue::try_from(&*self.secret)
            .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(""))
    }
}

/// The layer that puts [`Authenticate`] in front of the services (a pass-through
/// without users).
#[derive(Debug, Clone)]
pub(super) struct AuthLayer {
    pub(super) users: Option<Arc<Users>>,
    /// Asked of the raft service's calls (but its status) when set.
    pub(super) cluster_secret: Option<ClusterSecret>,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            users: self.users.clone(),
            cluster_secret: self.cluster_secret.clone(),
        }
    }
}

/// Checks each call's credentials before handing it on: a user's for the KurrentDB
/// services, the cluster's secret for the raft service.
#[derive(Debug, Clone)]
pub(super) struct Authenticate<S> {
    inner: S,
    users: Option<Arc<Users>>,
    cluster_secret: Option<ClusterSecret>,
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
        let path = request.uri().path();
        if path.starts_with(RAFT_SERVICE) && path != RAFT_STATUS {
            // Between nodes (and from `streamlog cluster`): the cluster's secret, never a
            // user's credentials.
            let allowed = self.cluster_secret.as_ref().is_none_or(|secret| {
                request
                    .headers()
                    .get(CLUSTER_SECRET_HEADER)
                    .is_some_and(|v| secret.matches(v.as_bytes()))
            });
            if allowed {
                return Box::pin(self.inner.call(request));
            }
            return Box::pin(async {
                Ok(Status::unauthenticated(
                    "raft and administration calls need this cluster's secret \
                     (--cluster-secret-file)",
                )
                .into_http())
            });
        }
        let Some(users) = self.users.clone() else {
            return Box::pin(self.inner.call(request));
        };
        if is_open(path) {
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
    fn a_cluster_secret_is_long_visible_ascii_and_matches_only_itself() {
        let secret = ClusterSecret::new("0123456789abcdef0123").expect("secret");
        assert!(secret.matches(b"0123456789abcdef0123"));
        assert!(!secret.matches(b"0123456789abcdef0124"));
        assert!(!secret.matches(b"0123456789abcdef012"));
        assert!(!secret.matches(b""));
        for bad in [
            "short",
            "0123456789 abcdef",
            "0123456789abcdé0123",
            &"x".repeat(1025),
        ] {
            assert!(
                matches!(ClusterSecret::new(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} is refused"
            );
        }
        assert!(!format!("{secret:?}").contains("0123"), "Debug hides it");
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
