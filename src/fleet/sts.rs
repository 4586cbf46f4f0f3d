//! Real role credentials: STS `AssumeRole` of the configured role, one session per delivery
//! (IMDSv1 and IMDSv2 callers get different sets, as on EC2), renewed in the background.
//!
//! A background task fetches both sets before the first guest request can use them and renews
//! each while a third of its life or 20 minutes remain, whichever comes first, so no set with
//! under 15 minutes left is served while STS answers. When STS fails, the last good set is
//! served until its own expiry (and the failure is logged), and the fetch is retried after 2 s,
//! then twice as long each time up to a minute; after the expiry the role answers 404, as on an
//! instance whose profile does not work. Guest requests only read what the task stored: they
//! never wait for STS, nor for the task.
//!
//! Remaining time is measured on imds' own clock from the moment of each fetch (the session's
//! length is `Expiration` minus the wall clock then), so a clock that differs from STS' shifts
//! nothing. Between fetches the task sleeps on that clock ([`Clock::sleep_until`]) until the
//! earliest moment it has something to do: a renewal, a retry or an expiry. A test that moves an
//! injected clock wakes it at once.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::config::retry::RetryConfig;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::fleet::credentials::{self, Delivery, IssuedSet, KeySet};
use crate::fleet::instance::StsRole;

/// A set is renewed when this little of it remains (or a third of its life, if sooner).
const RENEW_WITH: Duration = Duration::from_secs(20 * 60);
/// First wait after a failed fetch; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between failed fetches.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Bound on one STS call, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait between tries within one STS call (then doubled, with jitter, three tries in
/// all): a blip is retried within the call, a longer failure by the task on its own clock.
const CALL_RETRY: Duration = Duration::from_millis(100);

/// A set of credentials held for one delivery.
#[derive(Debug)]
struct Held {
    issued: Arc<IssuedSet>,
    renew_at: u64,
    expires_at: u64,
}

/// The role credentials obtained from STS for one instance.
#[derive(Debug)]
pub struct AssumedRole {
    sets: [ArcSwapOption<Held>; 2],
    clock: Arc<dyn Clock>,
    /// The first fetch of both sets has been tried.
    first_done: watch::Sender<bool>,
    /// Dropped with the role, which ends its renewal task at once (even asleep).
    _ends_renewal: oneshot::Sender<()>,
}

impl AssumedRole {
    /// Starts fetching credentials for `role` (through `endpoint`, else the regional STS
    /// endpoint) in a background task that lives as long as the returned value. Must be called
    /// within a Tokio runtime.
    pub fn start(
        role: &StsRole,
        endpoint: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Arc<AssumedRole> {
        let (ends_renewal, ended) = oneshot::channel();
        let assumed = Arc::new(AssumedRole {
            sets: [ArcSwapOption::empty(), ArcSwapOption::empty()],
            clock,
            first_done: watch::channel(false).0,
            _ends_renewal: ends_renewal,
        });
        let fetcher = Fetcher::new(role, endpoint);
        tokio::spawn(renew(Arc::downgrade(&assumed), fetcher, ended));
        assumed
    }

    /// The set served to a `delivery` caller at `now_millis`; `None` before the first successful
    /// fetch or after the last good set expired.
    pub fn credentials(&self, delivery: Delivery, now_millis: u64) -> Option<Arc<IssuedSet>> {
        let held = self.sets[index(delivery)].load();
        held.as_ref()
            .filter(|held| now_millis < held.expires_at)
            .map(|held| held.issued.clone())
    }

    /// Waits (at most `bound`) until the first fetch has been tried; true when both sets are held.
    pub async fn first_fetch(&self, bound: Duration) -> bool {
        let mut done = self.first_done.subscribe();
        let _ = tokio::time::timeout(bound, done.wait_for(|done| *done)).await;
        self.sets.iter().all(|set| set.load().is_some())
    }
}

fn index(delivery: Delivery) -> usize {
    match delivery {
        Delivery::V1 => 0,
        Delivery::V2 => 1,
    }
}

/// How the fetches of one delivery's set are going.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// After a failure, no fetch before this (clock milliseconds); 0 otherwise.
    retry_at: u64,
    /// The wait after the next failure.
    backoff: Duration,
    /// The last fetch failed.
    failing: bool,
}

impl Default for Attempts {
    fn default() -> Attempts {
        Attempts {
            retry_at: 0,
            backoff: FIRST_RETRY,
            failing: false,
        }
    }
}

/// Keeps both sets fresh until the [`AssumedRole`] is dropped (`ended` then completes): does
/// what is due, then sleeps on the role's clock until the next moment something is.
async fn renew(assumed: Weak<AssumedRole>, fetcher: Fetcher, mut ended: oneshot::Receiver<()>) {
    let mut attempts = [Attempts::default(); 2];
    let mut first = true;
    loop {
        let Some(role) = assumed.upgrade() else {
            return;
        };
        for delivery in [Delivery::V1, Delivery::V2] {
            let i = index(delivery);
            role.refresh(delivery, &mut attempts[i], &fetcher).await;
        }
        if std::mem::take(&mut first) {
            role.first_done.send_replace(true);
        }
        let held = role.sets.each_ref().map(|set| set.load_full());
        let wake = next_moment(
            [held[0].as_deref(), held[1].as_deref()],
            &attempts,
            role.clock.now_millis(),
        );
        let clock = role.clock.clone();
        drop((role, held));
        tokio::select! {
            () = clock.sleep_until(wake) => {}
            _ = &mut ended => return,
        }
    }
}

impl AssumedRole {
    /// Does what is due for `delivery`'s set now: drops it once expired, fetches a new one once
    /// it is to be renewed (or missing) and no retry is pending.
    async fn refresh(&self, delivery: Delivery, attempts: &mut Attempts, fetcher: &Fetcher) {
        let i = index(delivery);
        let now = self.clock.now_millis();
        let held = self.sets[i].load_full();
        if held.as_ref().is_some_and(|held| now >= held.expires_at) {
            self.sets[i].store(None);
            tracing::error!(
                role_delivery = delivery.role_delivery(),
                "role credentials expired and STS still fails: the role answers 404"
            );
        }
        let due = held.as_ref().is_none_or(|held| now >= held.renew_at);
        if !due || now < attempts.retry_at {
            return;
        }
        match fetcher.assume(delivery).await {
            Ok(session) => {
                let fetched_at = self.clock.now_millis();
                self.sets[i].store(Some(Arc::new(session.held(fetched_at, fetcher))));
                let was_failing = attempts.failing;
                *attempts = Attempts::default();
                if was_failing {
                    tracing::info!(
                        role_delivery = delivery.role_delivery(),
                        "STS answers again: credentials renewed"
                    );
                } else {
                    tracing::debug!(
                        role_delivery = delivery.role_delivery(),
                        "role credentials renewed from STS"
                    );
                }
            }
            Err(error) => {
                let now = self.clock.now_millis();
                attempts.retry_at = now + attempts.backoff.as_millis() as u64;
                attempts.backoff = (attempts.backoff * 2).min(MAX_RETRY);
                if !std::mem::replace(&mut attempts.failing, true) {
                    let held = self.sets[i].load();
                    match held.as_ref() {
                        Some(held) => tracing::warn!(
                            role_arn = %fetcher.role_arn,
                            role_delivery = delivery.role_delivery(),
                            expires_in_seconds = held.expires_at.saturating_sub(now) / 1000,
                            %error,
                            "STS AssumeRole failed; serving the last good credentials until they expire"
                        ),
                        None => tracing::error!(
                            role_arn = %fetcher.role_arn,
                            role_delivery = delivery.role_delivery(),
                            %error,
                            "cannot assume the role; guests get 404 on it until STS answers (retrying)"
                        ),
                    }
                }
            }
        }
    }
}

/// The next moment (clock milliseconds) the task has something to do, after doing what was due
/// at `now`: a held set's renewal (or, when it is due but failing, the retry) or its expiry; a
/// missing set's retry. It may be `now` or earlier: then it is due at once.
fn next_moment(held: [Option<&Held>; 2], attempts: &[Attempts; 2], now: u64) -> u64 {
    held.iter()
        .zip(attempts)
        .flat_map(|(held, attempts)| match held {
            Some(held) if now < held.renew_at => [Some(held.renew_at), Some(held.expires_at)],
            Some(held) => [Some(attempts.retry_at), Some(held.expires_at)],
            None => [Some(attempts.retry_at), None],
        })
        .flatten()
        .min()
        .unwrap_or(now)
}

/// One session as STS returned it.
struct Session {
    keys: KeySet,
    expiration: SystemTime,
}

impl Session {
    /// What to hold, timed on imds' clock from `fetched_at`.
    fn held(self, fetched_at: u64, fetcher: &Fetcher) -> Held {
        let now = SystemTime::now();
        let life = self.expiration.duration_since(now).unwrap_or_default();
        let life_millis = life.as_millis() as u64;
        let renew_after = (life_millis - life_millis / 3)
            .min(life_millis.saturating_sub(RENEW_WITH.as_millis() as u64))
            .max(60_000);
        let to_datetime = |t: SystemTime| {
            let seconds = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            OffsetDateTime::from_unix_timestamp(seconds as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        let last_updated = to_datetime(UNIX_EPOCH + Duration::from_millis(fetched_at));
        let issued = credentials::role_documents(
            &self.keys,
            last_updated,
            to_datetime(self.expiration),
            &fetcher.account_id,
        );
        Held {
            issued: Arc::new(issued),
            renew_at: fetched_at + renew_after,
            expires_at: fetched_at + life_millis,
        }
    }
}

/// One line naming what went wrong: STS' error code and message, or why STS was not reached
/// (no base credentials, no connection, a timeout).
fn describe(error: &SdkError<AssumeRoleError, HttpResponse>) -> String {
    match error {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let body = raw
                .body()
                .bytes()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            // Some STS implementations answer errors in a shape the SDK does not parse; the
            // XML's Code and Message are still there.
            let element = |name: &str| {
                let open = format!("<{name}>");
                let start = body.find(&open)? + open.len();
                let end = body[start..].find("</")? + start;
                Some(body[start..end].to_owned())
            };
            let code = service
                .err()
                .code()
                .map(str::to_owned)
                .or_else(|| element("Code"));
            let message = service
                .err()
                .message()
                .map(str::to_owned)
                .or_else(|| element("Message"));
            format!(
                "STS answered {} {}: {}",
                raw.status().as_u16(),
                code.as_deref().unwrap_or("(no error code)"),
                message.as_deref().unwrap_or("(no message)")
            )
        }
        other => {
            // The chain of causes on one line ("no credentials found in chain", "connection
            // refused", ...), each said once.
            let mut parts = vec![other.to_string()];
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                source = cause.source();
            }
            let text = parts.join(": ");
            text.lines().map(str::trim).collect::<Vec<_>>().join("; ")
        }
    }
}

/// Calls STS.
struct Fetcher {
    client: aws_sdk_sts::Client,
    role_arn: String,
    account_id: String,
    external_id: Option<String>,
    session_name: String,
    duration_seconds: i32,
}

/// Why a fetch failed, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FetchError(String);

impl Fetcher {
    fn new(role: &StsRole, endpoint: Option<&str>) -> Fetcher {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let region = Region::new(role.region.clone());
        let provider_config = ProviderConfig::without_region()
            .with_region(Some(region.clone()))
            .with_http_client(http.clone());
        let mut profile = ProfileFileCredentialsProvider::builder().configure(&provider_config);
        if let Some(name) = &role.base_profile {
            profile = profile.profile_name(name);
        }
        if let Some(file) = &role.base_credentials_file {
            let files = EnvConfigFiles::builder()
                .with_file(EnvConfigFileKind::Credentials, file)
                .build();
            profile = profile.profile_files(files);
        }
        // A profile or file named in the config is the only source; else the SDKs' usual order.
        let base = match (&role.base_profile, &role.base_credentials_file) {
            (None, None) => CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", profile.build()),
            _ => CredentialsProviderChain::first_try("Profile", profile.build()),
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_timeout(CALL_TIMEOUT)
            .build();
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(base)
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_initial_backoff(CALL_RETRY));
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Fetcher {
            client: aws_sdk_sts::Client::from_conf(config.build()),
            role_arn: role.role_arn.clone(),
            account_id: role.account_id.clone(),
            external_id: role.external_id.clone(),
            session_name: role.session_name.clone(),
            duration_seconds: role.duration.as_secs() as i32,
        }
    }

    async fn assume(&self, delivery: Delivery) -> Result<Session, FetchError> {
        let answer = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .duration_seconds(self.duration_seconds)
            .set_external_id(self.external_id.clone())
            .send()
            .await
            .map_err(|e| FetchError(describe(&e)))?;
        let credentials = answer
            .credentials
            .ok_or_else(|| FetchError("STS answered without credentials".into()))?;
        let expiration = SystemTime::try_from(credentials.expiration)
            .map_err(|e| FetchError(format!("STS answered an unusable expiration: {e}")))?;
        tracing::debug!(
            role_delivery = delivery.role_delivery(),
            "STS AssumeRole answered"
        );
        Ok(Session {
            keys: KeySet {
                access_key_id: credentials.access_key_id,
                secret_access_key: credentials.secret_access_key,
                token: credentials.session_token,
            },
            expiration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(renew_at: u64, expires_at: u64) -> Held {
        let keys = KeySet {
            access_key_id: "ASIAIMDSTESTKEY00001".into(),
            secret_access_key: "secret".into(),
            token: "token".into(),
        };
        let when = OffsetDateTime::UNIX_EPOCH;
        Held {
            issued: Arc::new(credentials::role_documents(
                &keys,
                when,
                when,
                "123456789012",
            )),
            renew_at,
            expires_at,
        }
    }

    fn failing(retry_at: u64) -> Attempts {
        Attempts {
            retry_at,
            backoff: FIRST_RETRY * 2,
            failing: true,
        }
    }

    #[test]
    fn the_task_sleeps_until_the_earlier_of_the_two_renewals() {
        let (v1, v2) = (held(100_000, 200_000), held(150_000, 250_000));
        let fresh = [Attempts::default(); 2];
        assert_eq!(next_moment([Some(&v1), Some(&v2)], &fresh, 50_000), 100_000);
        assert_eq!(next_moment([Some(&v2), Some(&v1)], &fresh, 50_000), 100_000);
    }

    #[test]
    fn a_failing_renewal_wakes_the_task_for_its_retry_or_the_expiry_if_that_comes_first() {
        let (due, later) = (held(100_000, 200_000), held(900_000, 990_000));
        let retry_soon = [failing(122_000), Attempts::default()];
        assert_eq!(
            next_moment([Some(&due), Some(&later)], &retry_soon, 120_000),
            122_000
        );
        let retry_late = [failing(300_000), Attempts::default()];
        assert_eq!(
            next_moment([Some(&due), Some(&later)], &retry_late, 120_000),
            200_000,
            "the expiry, to drop the set and say so"
        );
    }

    #[test]
    fn a_missing_set_wakes_the_task_for_its_retry() {
        let other = held(900_000, 990_000);
        let attempts = [failing(5_000), Attempts::default()];
        assert_eq!(next_moment([None, Some(&other)], &attempts, 1_000), 5_000);
    }
}
