//! Real role credentials: STS `AssumeRole` of the configured role, one session per delivery
//! (IMDSv1 and IMDSv2 callers get different sets, as on EC2), renewed in the background.
//!
//! A background task fetches both sets before the first guest request can use them and renews
//! each while a third of its life or 20 minutes remain, whichever comes first, so no set with
//! under 15 minutes left is served while STS answers. When STS fails, the last good set is
//! served until its own expiry (and the failure is logged); after that the role answers 404, as
//! on an instance whose profile does not work. Guest requests only read what the task stored:
//! they never wait for STS.
//!
//! Remaining time is measured on imds' own clock from the moment of each fetch (the session's
//! length is `Expiration` minus the wall clock then), so a clock that differs from STS' shifts
//! nothing, and tests can move time.

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
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::credentials::{self, Delivery, IssuedSet, KeySet};
use crate::instance::StsRole;

/// A set is renewed when this little of it remains (or a third of its life, if sooner).
const RENEW_WITH: Duration = Duration::from_secs(20 * 60);
/// First wait after a failed fetch; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between failed fetches.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often the task looks at the clock (which tests may move).
const TICK: Duration = Duration::from_secs(1);
/// Bound on one STS call, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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
        let assumed = Arc::new(AssumedRole {
            sets: [ArcSwapOption::empty(), ArcSwapOption::empty()],
            clock,
            first_done: watch::channel(false).0,
        });
        let fetcher = Fetcher::new(role, endpoint);
        tokio::spawn(renew(Arc::downgrade(&assumed), fetcher));
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

/// Keeps both sets fresh until the [`AssumedRole`] is dropped.
async fn renew(assumed: Weak<AssumedRole>, fetcher: Fetcher) {
    let mut retry_at = [0u64; 2];
    let mut backoff = [FIRST_RETRY; 2];
    let mut failing = [false; 2];
    let mut first = true;
    loop {
        let Some(role) = assumed.upgrade() else {
            return;
        };
        for delivery in [Delivery::V1, Delivery::V2] {
            let i = index(delivery);
            let now = role.clock.now_millis();
            let held = role.sets[i].load_full();
            if held.as_ref().is_some_and(|held| now >= held.expires_at) {
                role.sets[i].store(None);
                tracing::error!(
                    role_delivery = delivery.role_delivery(),
                    "role credentials expired and STS still fails: the role answers 404"
                );
            }
            let due = held.as_ref().is_none_or(|held| now >= held.renew_at);
            if !due || now < retry_at[i] {
                continue;
            }
            match fetcher.assume(delivery).await {
                Ok(session) => {
                    let fetched_at = role.clock.now_millis();
                    role.sets[i].store(Some(Arc::new(session.held(fetched_at, &fetcher))));
                    retry_at[i] = 0;
                    backoff[i] = FIRST_RETRY;
                    if std::mem::take(&mut failing[i]) {
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
                    let now = role.clock.now_millis();
                    retry_at[i] = now + backoff[i].as_millis() as u64;
                    backoff[i] = (backoff[i] * 2).min(MAX_RETRY);
                    if !std::mem::replace(&mut failing[i], true) {
                        let held = role.sets[i].load();
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
        if std::mem::take(&mut first) {
            role.first_done.send_replace(true);
        }
        drop(role);
        tokio::time::sleep(TICK).await;
    }
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
            .timeout_config(timeouts);
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
