//! The control surface, on its own listener (never the guest one): the subset of the EC2 Query
//! API that the unmodified AWS CLI (`aws ec2 ... --endpoint-url`) and boto3 speak, so a running
//! instance is changed the way EC2 instances are. Form-encoded POSTs with `Action` and
//! `Version=2016-11-15`, XML answers in the EC2 namespace with a `requestId`, errors as
//! `<Response><Errors><Error>` with EC2's codes.
//!
//! Actions:
//! - `DescribeInstances` (ids; filters `instance-id`, `metadata-options.http-tokens`,
//!   `metadata-options.http-endpoint`, `instance-state-name`, `availability-zone`, `tag:KEY`,
//!   `tag-key`)
//! - `ModifyInstanceMetadataOptions` (every option; omitted ones unchanged; `DryRun`)
//! - `CreateTags` (at most 50 tags, as on EC2), `DeleteTags`, `DescribeTags`
//! - `AssociateIamInstanceProfile`, `ReplaceIamInstanceProfileAssociation`,
//!   `DisassociateIamInstanceProfile`, `DescribeIamInstanceProfileAssociations`
//! - `GetInstanceMetadataDefaults`, `ModifyInstanceMetadataDefaults` (with `HttpTokensEnforced`,
//!   which makes `ModifyInstanceMetadataOptions` refuse `HttpTokens=optional`)
//! - `DescribeInstanceStatus`, `ModifyInstanceEventStartTime`, and imds' own event actions
//!   `SendSpotInstanceInterruptions`, `ScheduleInstanceEvent`, `CompleteInstanceEvent`,
//!   `CancelInstanceEvent`, `SetTargetLifecycleState`, `ClearInstanceEvents` (see `events`)
//! - imds' fault actions `InjectFault`, `DescribeFaults`, `ClearFaults` (see `faults`)
//!
//! With `[control]` keys configured, every Query request must carry a valid SigV4 signature
//! made with them (`AuthFailure` otherwise); without them the listener is loopback-only.
//!
//! Plus `GET /healthz` and `GET /metrics` (Prometheus text, see [`crate::metrics`]).
//!
//! A change is validated whole, made durable first (with `--state-dir`, in the
//! [`crate::store::Store`]; it is acknowledged only after that), then built into a new snapshot
//! swapped in whole, so the guest API follows it atomically. What the control plane changed
//! ([`InstanceChanges`]) stays layered over the config file at restart and at SIGHUP.

mod defaults;
mod error;
mod events;
mod faults;
mod iam;
mod instances;
mod query;
mod sigv4;
mod tags;
mod xml;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use self::defaults::MetadataDefaults;
pub use self::error::ControlError;
use self::query::QueryRequest;
pub use self::sigv4::ControlKeys;
use crate::changes::{InstanceChanges, RoleAssociation};
use crate::clock::Clock;
use crate::instance::{Instance, InstanceConfig};
use crate::metrics::Metrics;
use crate::state::{SnapshotBuilder, State};
use crate::store::{Store, StoreError};

/// Largest request body read.
const MAX_BODY: usize = 1024 * 1024;
/// How long a metadata options change reads `pending` before `applied`.
const APPLYING: Duration = Duration::from_millis(500);

/// What a control change touched.
#[derive(Debug, Clone)]
enum Change {
    Options,
    Tags,
    Events,
    /// A new association (its id), or none.
    Role(Option<String>),
}

/// The account defaults' name in the store.
const DEFAULTS: &str = "instance-metadata-defaults";

/// What the control plane changed before this start, and where changes are kept.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Where changes are kept; `None` keeps them in memory.
    pub store: Option<Arc<Store>>,
    /// The instance's changes, to layer over its config file.
    pub changes: InstanceChanges,
    /// The account's instance metadata defaults.
    pub defaults: MetadataDefaults,
}

impl Persisted {
    /// What `store` kept for the instance `instance_id` (nothing without a store).
    pub fn load(store: Option<Arc<Store>>, instance_id: &str) -> Result<Persisted, StoreError> {
        let Some(store) = store else {
            return Ok(Persisted::default());
        };
        Ok(Persisted {
            changes: store.instance_changes(instance_id)?.unwrap_or_default(),
            defaults: store.account(DEFAULTS)?.unwrap_or_default(),
            store: Some(store),
        })
    }
}

/// Answers control requests and applies their changes.
#[derive(Debug)]
pub struct ControlApi {
    state: Arc<State>,
    snapshots: Arc<SnapshotBuilder>,
    clock: Arc<dyn Clock>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
    /// Until when (clock millis) the last options change reads `pending`.
    pending_until: AtomicU64,
    /// What the control plane changed on the instance.
    changes: std::sync::Mutex<InstanceChanges>,
    /// Where changes are made durable, with `--state-dir`.
    store: Option<Arc<Store>>,
    /// Keys every request must be signed with, when configured.
    keys: Option<ControlKeys>,
    /// Counted here, rendered at `GET /metrics`.
    metrics: Arc<Metrics>,
    /// The account's instance metadata defaults.
    defaults: std::sync::Mutex<defaults::MetadataDefaults>,
    /// Counts applied instance changes, for whoever reacts to them (the link-local endpoint).
    applied: tokio::sync::watch::Sender<u64>,
}

impl ControlApi {
    /// A control API changing the instances in `state` with snapshots from `snapshots`, keeping
    /// its changes where `persisted` says (and starting from the ones kept there).
    pub fn new(
        state: Arc<State>,
        snapshots: Arc<SnapshotBuilder>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        keys: Option<ControlKeys>,
        persisted: Persisted,
    ) -> ControlApi {
        ControlApi {
            metrics,
            keys,
            state,
            snapshots,
            clock,
            changing: tokio::sync::Mutex::new(()),
            pending_until: AtomicU64::new(0),
            changes: std::sync::Mutex::new(persisted.changes),
            store: persisted.store,
            defaults: std::sync::Mutex::new(persisted.defaults),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Answers one request (from a socket, or in-process: any body will do).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = request_id();
        if request.method() == Method::GET && request.uri().path() == "/healthz" {
            return reply(StatusCode::OK, "text/plain", "ok\n".into());
        }
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            let text = self.metrics.render(self.state.current().instance.id());
            return reply(StatusCode::OK, "text/plain; version=0.0.4", text.into());
        }
        if request.method() != Method::GET && request.method() != Method::POST {
            return failure(&ControlError::MethodNotAllowed, &request_id);
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                let error = ControlError::InvalidParameterValue(
                    "the request body is too large or broken".into(),
                );
                return failure(&error, &request_id);
            }
        };
        if let Some(keys) = &self.keys {
            let now =
                time::OffsetDateTime::from_unix_timestamp((self.clock.now_millis() / 1000) as i64)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            if let Err(why) = keys.verify(&parts, &body, now) {
                tracing::warn!(reason = %why, "control request refused: bad signature");
                self.metrics
                    .control_action("(unauthenticated)", "AuthFailure");
                return failure(&ControlError::AuthFailure, &request_id);
            }
        }
        let query = match parts.method {
            Method::GET => QueryRequest::parse(parts.uri.query().unwrap_or("").as_bytes()),
            _ => QueryRequest::parse(&body),
        };
        let result = self.dispatch(&query, &request_id).await;
        // Only actions imds knows become labels, so clients cannot grow the metrics.
        let action = match &result {
            Err(ControlError::InvalidAction(_)) => "(invalid)",
            _ => query.get("Action").unwrap_or("(none)"),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.metrics.control_action(action, outcome);
        match result {
            Ok(xml) => reply(StatusCode::OK, "text/xml;charset=UTF-8", xml.into()),
            Err(error) => {
                tracing::debug!(action = query.get("Action"), %error, "control request refused");
                failure(&error, &request_id)
            }
        }
    }

    async fn dispatch(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        match query.action()? {
            "DescribeInstances" => self.describe_instances(query, request_id),
            "ModifyInstanceMetadataOptions" => {
                self.modify_instance_metadata_options(query, request_id)
                    .await
            }
            "CreateTags" => self.create_tags(query, request_id).await,
            "DeleteTags" => self.delete_tags(query, request_id).await,
            "DescribeTags" => self.describe_tags(query, request_id),
            "AssociateIamInstanceProfile" => {
                self.associate_iam_instance_profile(query, request_id).await
            }
            "ReplaceIamInstanceProfileAssociation" => {
                self.replace_iam_instance_profile_association(query, request_id)
                    .await
            }
            "DisassociateIamInstanceProfile" => {
                self.disassociate_iam_instance_profile(query, request_id)
                    .await
            }
            "DescribeIamInstanceProfileAssociations" => {
                self.describe_iam_instance_profile_associations(query, request_id)
            }
            "GetInstanceMetadataDefaults" => Ok(self.get_instance_metadata_defaults(request_id)),
            "ModifyInstanceMetadataDefaults" => {
                self.modify_instance_metadata_defaults(query, request_id)
                    .await
            }
            "DescribeInstanceStatus" => self.describe_instance_status(query, request_id),
            "ModifyInstanceEventStartTime" => {
                self.modify_instance_event_start_time(query, request_id)
                    .await
            }
            "SendSpotInstanceInterruptions" => {
                self.send_spot_instance_interruptions(query, request_id)
                    .await
            }
            "ScheduleInstanceEvent" => self.schedule_instance_event(query, request_id).await,
            "CompleteInstanceEvent" => {
                self.end_instance_event(query, request_id, crate::events::Outcome::Completed)
                    .await
            }
            "CancelInstanceEvent" => {
                self.end_instance_event(query, request_id, crate::events::Outcome::Canceled)
                    .await
            }
            "SetTargetLifecycleState" => self.set_target_lifecycle_state(query, request_id).await,
            "ClearInstanceEvents" => self.clear_instance_events(query, request_id).await,
            "InjectFault" => self.inject_fault(query, request_id).await,
            "DescribeFaults" => Ok(self.describe_faults(request_id)),
            "ClearFaults" => self.clear_faults(query, request_id).await,
            other => Err(ControlError::InvalidAction(other.to_owned())),
        }
    }

    /// Applies `edit` to a copy of the running instance's configuration, validates it as a
    /// whole, makes it durable and swaps the new snapshot in; on any error nothing changes.
    async fn change(
        &self,
        what: Change,
        edit: impl FnOnce(&Instance, &mut InstanceConfig) -> Result<(), ControlError>,
    ) -> Result<Instance, ControlError> {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.state.current();
        let mut config = current.instance.config.clone();
        edit(&current.instance, &mut config)?;
        let instance = Instance::new(config)
            .map_err(|e| ControlError::InvalidParameterValue(e.to_string()))?;
        let mut changes = self.changes();
        match &what {
            Change::Options => changes.metadata_options = Some(instance.config.metadata_options),
            Change::Tags => changes.tags = Some(instance.config.tags.clone()),
            Change::Events => changes.events = Some(instance.config.events.clone()),
            Change::Role(association) => {
                changes.role = Some(RoleAssociation {
                    role: instance.config.iam.role.clone(),
                    association_id: association.clone(),
                })
            }
        }
        let (id, kept) = (instance.id().to_owned(), changes.clone());
        self.persist(move |store| store.save_instance_changes(&id, &kept))
            .await?;
        *self.changes.lock().unwrap_or_else(|e| e.into_inner()) = changes;
        if let Change::Options = what {
            let until = self.clock.now_millis() + APPLYING.as_millis() as u64;
            self.pending_until.store(until, Ordering::Relaxed);
        }
        self.state.replace(self.snapshots.build(instance.clone()));
        self.applied.send_modify(|count| *count += 1);
        tracing::info!(instance = instance.id(), change = ?what, "control change applied");
        Ok(instance)
    }

    /// Runs `write` on the store (off the runtime's threads), when there is one; returns once
    /// it is durable.
    async fn persist(
        &self,
        write: impl FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), ControlError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let written = tokio::task::spawn_blocking(move || write(&store)).await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(%error, "a control change could not be stored; nothing changed");
                Err(ControlError::InternalError)
            }
            Err(error) => {
                tracing::error!(%error, "storing a control change failed; nothing changed");
                Err(ControlError::InternalError)
            }
        }
    }

    /// Notified after each change applied to the instance.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// What the control plane changed on the instance so far.
    pub fn changes(&self) -> InstanceChanges {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `pending` shortly after an options change, `applied` after.
    fn options_state(&self) -> &'static str {
        match self.clock.now_millis() < self.pending_until.load(Ordering::Relaxed) {
            true => "pending",
            false => "applied",
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn failure(error: &ControlError, request_id: &str) -> Response<Full<Bytes>> {
    reply(
        error.status(),
        "text/xml;charset=UTF-8",
        error.xml(request_id).into(),
    )
}

/// A request id shaped like EC2's (a UUID).
fn request_id() -> String {
    let hex = hex(&rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `api` on `listener` until `shutdown` completes; connections in flight finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<ControlApi>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "control listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
