//! The control surface, on its own listener (never the guest one): the subset of the EC2 Query
//! API that the unmodified AWS CLI (`aws ec2 ... --endpoint-url`) and boto3 speak, so a running
//! instance is changed the way EC2 instances are. Form-encoded POSTs with `Action` and
//! `Version=2016-11-15`, XML answers in the EC2 namespace with a `requestId`, errors as
//! `<Response><Errors><Error>` with EC2's codes.
//!
//! Actions (each Describe action takes its filters by the names EC2 documents, legacy camelCase
//! spellings too, and refuses a name it does not know with EC2's `InvalidParameterValue`):
//! - instances: `RunInstances` (also from a launch template), `DescribeInstances`,
//!   `StartInstances`, `StopInstances`, `RebootInstances`, `TerminateInstances`,
//!   `ModifyInstanceMetadataOptions`, `DescribeInstanceAttribute`, `ModifyInstanceAttribute`,
//!   `GetConsoleOutput`, `DescribeInstanceStatus` (see `instance_status`)
//! - tags on every resource kind: `CreateTags` (at most 50, as on EC2), `DeleteTags`,
//!   `DescribeTags`; EC2's own `aws:` tags are neither created nor deleted by users
//! - `AssociateIamInstanceProfile`, `ReplaceIamInstanceProfileAssociation`,
//!   `DisassociateIamInstanceProfile`, `DescribeIamInstanceProfileAssociations`
//! - `GetInstanceMetadataDefaults`, `ModifyInstanceMetadataDefaults` (with `HttpTokensEnforced`,
//!   which makes `ModifyInstanceMetadataOptions` refuse `HttpTokens=optional`)
//! - `ModifyInstanceEventStartTime`, and imds' own event actions
//!   `SendSpotInstanceInterruptions`, `ScheduleInstanceEvent`, `CompleteInstanceEvent`,
//!   `CancelInstanceEvent`, `SetTargetLifecycleState`, `ClearInstanceEvents` (see `events`)
//! - imds' fault actions `InjectFault`, `DescribeFaults`, `ClearFaults` (see `faults`)
//! - `DescribeVpcs`, `CreateSubnet`, `DeleteSubnet`, `DescribeSubnets`, `CreateSecurityGroup`,
//!   `DeleteSecurityGroup`, `DescribeSecurityGroups` (see `vpc`), `ImportKeyPair`,
//!   `CreateKeyPair`, `DescribeKeyPairs`, `DeleteKeyPair` (see `key_pairs`)
//! - `CreateLaunchTemplate`, `CreateLaunchTemplateVersion`, `ModifyLaunchTemplate`,
//!   `DescribeLaunchTemplates`, `DescribeLaunchTemplateVersions`,
//!   `DeleteLaunchTemplateVersions`, `DeleteLaunchTemplate` (see `launch_templates`)
//! - the catalog tools ask for first: `DescribeRegions`, `DescribeAvailabilityZones`,
//!   `DescribeAccountAttributes`, `DescribeInstanceTypes`, `DescribeImages` (see `catalog`)
//!
//! EC2's limits on one request hold: at most 200 filter values (255 characters each) and 200
//! filters (`FilterLimitExceeded`), 1000 instance or resource ids (100 for
//! `DescribeInstanceStatus`; `InvalidRequest`); a request is indexed once when it is parsed (see
//! `query`), a large one beside the runtime's threads, so no body keeps guests waiting.
//!
//! With `[control]` keys configured, every Query request must carry a valid SigV4 signature
//! made with them (`AuthFailure` otherwise); without them the listener is loopback-only.
//!
//! Plus CloudWatch's `ListMetrics`, `GetMetricStatistics` and `GetMetricData` for the
//! instances' `MetadataNoToken` and `MetadataNoTokenRejected` history, in the JSON protocol
//! botocore speaks to CloudWatch, told apart by their `X-Amz-Target` (see `cloudwatch`).
//!
//! Plus `GET /healthz` and `GET /metrics` (Prometheus text, see [`crate::metrics`]), and the
//! web console under `/console` (see `console`), which has its own sign-in and CSRF protection.
//!
//! Plus imds' `RotateKeys`: a new session token key generation (see `rotation`).
//!
//! A change is validated whole, made durable first (with a store, in the
//! [`crate::store::Store`]; it is acknowledged only after that), then built into a new snapshot
//! swapped in whole, so the guest API follows it atomically. What the control plane changed
//! ([`InstanceChanges`]) stays layered over the config file, part by part, at restart and at
//! SIGHUP (see `reload`). With a shared store, changes other hosts made are learned through the
//! same path (see `sync`), and a change that raced another host's is retried on the newer state.
//!
//! Who owns what: `inventory` (the instances, their addresses through the fleet index, the
//! network registry, `ClientToken`s), `account` (defaults, guardrail policies, key
//! generations, and the account's lock), each instance's slot (its changes, under its lock),
//! `console` (its sessions). Every task that changes anything holds a
//! [`crate::fleet::lock_order::Unlocked`] and takes its locks through it, account first.

mod account;
mod attributes;
mod catalog;
mod client_tokens;
mod cloudwatch;
mod connection;
mod console;
mod defaults;
mod error;
mod events;
mod faults;
mod forget;
mod guardrails;
mod iam;
mod instance_status;
mod instance_xml;
mod instances;
mod inventory;
mod kept_history;
mod key_pairs;
mod launch;
mod launch_templates;
mod lifecycle;
mod paging;
pub mod policy;
mod query;
mod reload;
mod rotation;
mod sigv4;
mod store_stats;
mod sync;
mod tags;
mod vpc;
mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

pub use self::defaults::MetadataDefaults;
pub use self::error::ControlError;
use self::query::QueryRequest;
pub use self::sigv4::ControlKeys;
use crate::clock::Clock;
use crate::fleet::changes::{InstanceChanges, OptionFields, RoleAssociation};
use crate::fleet::instance::{Instance, InstanceConfig};
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lifecycle::Transition;
use crate::fleet::lock_order::{BeforeInstances, Unlocked};
use crate::fleet::state::{InstanceSlot, SnapshotBuilder, State};
use crate::fleet::token::{TokenGeneration, TokenSealer};
use crate::metrics::Metrics;
use crate::store::{Changed, Store, StoreError};

/// Largest request body read.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest body parsed on the runtime's threads; larger ones are parsed on the blocking pool.
const PARSED_INLINE: usize = 64 * 1024;
/// How long a metadata options change reads `pending` before `applied`.
const APPLYING: Duration = Duration::from_millis(500);

/// What a control change touched.
#[derive(Debug, Clone)]
enum Change {
    /// The metadata options the request named.
    Options(OptionFields),
    Tags,
    Events,
    /// A new association (its id and when it was made), or none.
    Role(Option<(String, time::OffsetDateTime)>),
    /// The instance's attributes as they are after the change.
    Attributes(crate::fleet::changes::InstanceAttributes),
}

impl Change {
    /// The part changed, as the log names it.
    fn label(&self) -> &'static str {
        match self {
            Change::Options(_) => "metadata_options",
            Change::Tags => "tags",
            Change::Events => "events",
            Change::Role(_) => "role",
            Change::Attributes(_) => "attributes",
        }
    }
}

/// The account defaults' name in the store.
const DEFAULTS: &str = "instance-metadata-defaults";

/// What the control plane changed before this start, and where changes are kept.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Where changes are kept; `None` keeps them in memory.
    pub store: Option<Arc<Store>>,
    /// Each instance's changes (by instance id), to layer over its config file.
    pub changes: BTreeMap<String, InstanceChanges>,
    /// The revision of each instance's stored row.
    pub revisions: BTreeMap<String, i64>,
    /// The instances launched with `RunInstances` (fleet mode), still visible.
    pub launched: Vec<crate::fleet::instance::InstanceConfig>,
    /// The account's instance metadata defaults.
    pub defaults: MetadataDefaults,
    /// The region's VPCs, subnets, security groups and key pairs, when stored.
    pub network: Option<crate::fleet::network::Network>,
    /// The account's launch templates.
    pub templates: crate::fleet::launch_templates::LaunchTemplates,
    /// The addresses in use, as stored.
    pub addresses: Vec<crate::store::StoredAddress>,
    /// Stored rows that do not parse, reported and skipped.
    pub corrupt: u64,
    /// The revision of each stored account value.
    pub account_revisions: BTreeMap<String, i64>,
    /// The newest revision read.
    pub seen: i64,
    /// The generation of the stored signing key in use (0: the first).
    pub signing_generation: u32,
    /// Whether the signing key comes from files (`--signing-key`), which imds does not rotate.
    pub signing_key_from_files: bool,
}

impl Persisted {
    /// What `store` held at the start (`changed`: every row); nothing without a store. A row
    /// that does not parse is reported (a warning, and `imds_store_corrupt_rows_total`) and
    /// skipped, never a reason not to start; its revision is kept, so that a later change of
    /// the same instance or value replaces it.
    pub fn from_store(
        store: Option<Arc<Store>>,
        changed: Changed,
    ) -> Result<Persisted, StoreError> {
        let Some(store) = store else {
            return Ok(Persisted::default());
        };
        let location = store.describe();
        let signing = crate::fleet::keys::rotated_signer(&changed.keys)
            .ok()
            .flatten()
            .map_or(0, |(generation, _)| generation);
        let mut persisted = Persisted {
            seen: changed.revision,
            signing_generation: signing,
            addresses: changed.addresses,
            ..Persisted::default()
        };
        let corrupt = |persisted: &mut Persisted, what: String, error: serde_json::Error| {
            tracing::warn!(store = location, what, %error, "a stored row is unreadable: skipped (a later change replaces it)");
            persisted.corrupt += 1;
        };
        for row in changed.instances {
            let id = row.instance_id;
            persisted.revisions.insert(id.clone(), row.revision);
            let changes: InstanceChanges = match serde_json::from_str(&row.changes) {
                Ok(changes) => changes,
                Err(error) => {
                    corrupt(&mut persisted, format!("changes of {id}"), error);
                    continue;
                }
            };
            if let Some(config) = row.config {
                match serde_json::from_str::<InstanceConfig>(&config) {
                    Ok(config) => persisted.launched.push(config),
                    Err(error) => {
                        corrupt(&mut persisted, format!("launched instance {id}"), error);
                        continue;
                    }
                }
            }
            persisted.changes.insert(id, changes);
        }
        persisted
            .launched
            .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        for value in changed.account {
            let parsed = match value.name.as_str() {
                DEFAULTS => serde_json::from_str(&value.value).map(|d| persisted.defaults = d),
                vpc::NETWORK => {
                    serde_json::from_str(&value.value).map(|n| persisted.network = Some(n))
                }
                launch_templates::TEMPLATES => {
                    serde_json::from_str(&value.value).map(|t| persisted.templates = t)
                }
                _ => continue,
            };
            if let Err(error) = parsed {
                corrupt(&mut persisted, value.name.clone(), error);
            }
            persisted
                .account_revisions
                .insert(value.name, value.revision);
        }
        persisted.store = Some(store);
        Ok(persisted)
    }

    /// What the control plane changed on the instance `id` before this start.
    pub fn changes_of(&self, id: &str) -> InstanceChanges {
        self.changes.get(id).cloned().unwrap_or_default()
    }

    /// The revision of the instance `id`'s stored row (0: none).
    pub fn revision_of(&self, id: &str) -> i64 {
        self.revisions.get(id).copied().unwrap_or(0)
    }

    /// The stored changes and revisions of config-file instances `state` does not serve.
    fn unplaced(&self, state: &State) -> BTreeMap<String, (InstanceChanges, i64)> {
        let launched: std::collections::BTreeSet<&str> = self
            .launched
            .iter()
            .map(|config| config.instance_id.as_str())
            .collect();
        self.changes
            .iter()
            .filter(|(id, _)| !launched.contains(id.as_str()))
            .filter(|(id, _)| {
                id.parse::<InstanceId>()
                    .map_or(true, |id| state.instance(&id).is_none())
            })
            .map(|(id, changes)| (id.clone(), (changes.clone(), self.revision_of(id))))
            .collect()
    }
}

/// Answers control requests and applies their changes. Each fact has one owner: the
/// [`inventory::Inventory`] owns the instances and their addresses, the [`account::Account`]
/// its defaults, policies and keys, the console its sessions; the store (with the newest
/// revision learned from it) is where every change is made durable first. Locks are taken in
/// the order [`crate::fleet::lock_order`] makes the compiler keep.
#[derive(Debug)]
pub struct ControlApi {
    /// The instances served, their addresses and what binds them.
    inventory: inventory::Inventory,
    /// The account's values and its lock.
    account: account::Account,
    /// Where changes are made durable, with `--state-dir` or `--store`.
    store: Option<Arc<Store>>,
    /// The newest store revision loaded: what changed after it is not known yet.
    seen: std::sync::atomic::AtomicI64,
    clock: Arc<dyn Clock>,
    /// Keys every request must be signed with, when configured.
    keys: Option<ControlKeys>,
    /// Counted here, rendered at `GET /metrics`.
    metrics: Arc<Metrics>,
    /// The web console's sessions and live streams.
    console: console::Console,
    /// Refused signatures are logged at most once a minute (anyone can send them; each is
    /// counted in `/metrics`).
    refused_signatures: crate::log_limit::LogLimit,
    /// What the store's upkeep counts.
    store_stats: store_stats::StoreStats,
}

impl ControlApi {
    /// A control API changing the instances in `state` with snapshots from `snapshots`, keeping
    /// its changes where `persisted` says (and starting from the ones kept there), launching new
    /// instances from `template`, rotating the keys of `tokens` (which has `generations`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: Arc<State>,
        snapshots: Arc<SnapshotBuilder>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        keys: Option<ControlKeys>,
        persisted: Persisted,
        template: crate::fleet::instance::InstanceConfig,
        tokens: Arc<TokenSealer>,
        generations: Vec<TokenGeneration>,
    ) -> ControlApi {
        let unplaced = persisted.unplaced(&state);
        let from_file = state
            .instances()
            .into_iter()
            .map(|slot| slot.id().clone())
            .filter(|id| {
                !persisted
                    .launched
                    .iter()
                    .any(|l| l.instance_id == id.as_str())
            })
            .collect();
        let now = clock.now_millis();
        let gone: Vec<(String, i64)> = persisted
            .launched
            .iter()
            .filter(|config| {
                let lifecycle = persisted.changes_of(&config.instance_id).lifecycle;
                lifecycle.is_some_and(|l| l.is_gone(now))
            })
            .map(|config| {
                let id = config.instance_id.clone();
                let revision = persisted.revision_of(&id);
                (id, revision)
            })
            .collect();
        let shared = persisted
            .store
            .as_ref()
            .is_some_and(|store| store.is_shared());
        let network = vpc::initial_network(
            persisted.network,
            &persisted.addresses,
            shared,
            &state,
            &template,
        );
        let store_stats = store_stats::StoreStats::default();
        store_stats.corrupt_rows(persisted.corrupt);
        let signing_generation =
            (!persisted.signing_key_from_files).then_some(persisted.signing_generation);
        let api = ControlApi {
            inventory: inventory::Inventory::new(
                state, snapshots, template, network, unplaced, from_file,
            ),
            account: account::Account::new(
                (persisted.defaults, persisted.templates),
                persisted.account_revisions,
                tokens,
                (generations, clock.now_millis()),
                signing_generation,
            ),
            store: persisted.store,
            seen: std::sync::atomic::AtomicI64::new(persisted.seen),
            clock,
            keys,
            metrics,
            console: console::Console::default(),
            refused_signatures: crate::log_limit::LogLimit::new(Duration::from_secs(60)),
            store_stats,
        };
        // Launched instances gone before this start: not served, their rows deleted at the
        // first sweep.
        for (id, revision) in gone {
            api.inventory.keep_gone_unserved(id, revision);
        }
        api
    }

    /// Answers one request (from a socket, or in-process: any body will do).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = request_id();
        if request.method() == Method::GET && request.uri().path() == "/healthz" {
            return reply(StatusCode::OK, "text/plain", self.health().into());
        }
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            let mut text = self.metrics.render(&self.inventory.state.instances());
            text.push_str(&self.store_metrics());
            return reply(StatusCode::OK, "text/plain; version=0.0.4", text.into());
        }
        if console::is_console(request.uri().path()) {
            return self.console(request).await;
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
                if let Some(held_back) = self.refused_signatures.allow() {
                    tracing::warn!(reason = %why, held_back, "control request refused: bad signature");
                }
                self.metrics
                    .control_action("(unauthenticated)", "AuthFailure");
                if cloudwatch::operation(&parts).is_some() {
                    return cloudwatch::refused(why, &request_id);
                }
                return failure(&ControlError::AuthFailure, &request_id);
            }
        }
        if let Some(operation) = cloudwatch::operation(&parts) {
            return self.cloudwatch(operation, &body, &request_id);
        }
        // A request signed for another region is not answered with this region's instances.
        if let Some(region) = sigv4::scope_region(&parts) {
            let served = self.inventory.network().region.clone();
            if region != served {
                let error = ControlError::RegionScope(region.to_owned(), served);
                self.metrics.control_action("(wrong region)", error.code());
                return failure(&error, &request_id);
            }
        }
        let query = match parts.method {
            Method::GET => QueryRequest::parse(parts.uri.query().unwrap_or("").as_bytes()),
            _ if body.len() <= PARSED_INLINE => QueryRequest::parse(&body),
            // Indexing up to 1 MiB of parameters takes long enough to hold up the guests this
            // runtime's threads also answer: it is done beside them.
            _ => match tokio::task::spawn_blocking(move || QueryRequest::parse(&body)).await {
                Ok(query) => query,
                Err(error) => {
                    tracing::error!(%error, "indexing a control request failed");
                    return failure(&ControlError::InternalError, &request_id);
                }
            },
        };
        let result = self.dispatch_retrying(&query, &request_id).await;
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
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        query.each_once()?;
        let action = query.action()?;
        // Every change is decided by the guardrails; these two in detail, by their own code.
        if let Some(iam_action) = guardrails::iam_action(action) {
            if !matches!(action, "RunInstances" | "ModifyInstanceMetadataOptions") {
                let network = self.inventory.network();
                let place = guardrails::Place {
                    partition: &network.partition,
                    region: &network.region,
                    account: &network.owner_id,
                };
                // A launch template named by name is decided on its ARN, as one named by id.
                let templates = self.account.templates();
                let named_template = query
                    .get("LaunchTemplateName")
                    .and_then(|name| templates.by_name(name).ok())
                    .map(|template| template.id.as_str());
                self.check_policies(&guardrails::other_change(
                    query,
                    place,
                    &iam_action,
                    named_template,
                )?)?;
            }
        }
        match action {
            "DescribeInstances" => self.describe_instances(query, request_id),
            "RunInstances" => self.run_instances(query, request_id, order).await,
            "TerminateInstances" => {
                self.change_lifecycle(
                    query,
                    request_id,
                    "TerminateInstancesResponse",
                    Transition::Terminate,
                    order,
                )
                .await
            }
            "StopInstances" => {
                self.change_lifecycle(
                    query,
                    request_id,
                    "StopInstancesResponse",
                    Transition::Stop,
                    order,
                )
                .await
            }
            "StartInstances" => {
                self.change_lifecycle(
                    query,
                    request_id,
                    "StartInstancesResponse",
                    Transition::Start,
                    order,
                )
                .await
            }
            "RebootInstances" => self.reboot_instances(query, request_id),
            "ModifyInstanceMetadataOptions" => {
                self.modify_instance_metadata_options(query, request_id, order)
                    .await
            }
            "CreateTags" => self.create_tags(query, request_id, order).await,
            "DeleteTags" => self.delete_tags(query, request_id, order).await,
            "DescribeTags" => self.describe_tags(query, request_id),
            "AssociateIamInstanceProfile" => {
                self.associate_iam_instance_profile(query, request_id, order)
                    .await
            }
            "ReplaceIamInstanceProfileAssociation" => {
                self.replace_iam_instance_profile_association(query, request_id, order)
                    .await
            }
            "DisassociateIamInstanceProfile" => {
                self.disassociate_iam_instance_profile(query, request_id, order)
                    .await
            }
            "DescribeIamInstanceProfileAssociations" => {
                self.describe_iam_instance_profile_associations(query, request_id)
            }
            "GetInstanceMetadataDefaults" => Ok(self.get_instance_metadata_defaults(request_id)),
            "ModifyInstanceMetadataDefaults" => {
                self.modify_instance_metadata_defaults(query, request_id, order)
                    .await
            }
            "DescribeInstanceStatus" => self.describe_instance_status(query, request_id),
            "ModifyInstanceEventStartTime" => {
                self.modify_instance_event_start_time(query, request_id, order)
                    .await
            }
            "SendSpotInstanceInterruptions" => {
                self.send_spot_instance_interruptions(query, request_id, order)
                    .await
            }
            "ScheduleInstanceEvent" => self.schedule_instance_event(query, request_id, order).await,
            "CompleteInstanceEvent" => {
                self.end_instance_event(
                    query,
                    request_id,
                    crate::fleet::events::Outcome::Completed,
                    order,
                )
                .await
            }
            "CancelInstanceEvent" => {
                self.end_instance_event(
                    query,
                    request_id,
                    crate::fleet::events::Outcome::Canceled,
                    order,
                )
                .await
            }
            "SetTargetLifecycleState" => {
                self.set_target_lifecycle_state(query, request_id, order)
                    .await
            }
            "ClearInstanceEvents" => self.clear_instance_events(query, request_id, order).await,
            "InjectFault" => self.inject_fault(query, request_id, order).await,
            "DescribeFaults" => self.describe_faults(query, request_id),
            "ClearFaults" => self.clear_faults(query, request_id, order).await,
            "DescribeVpcs" => self.describe_vpcs(query, request_id),
            "CreateSubnet" => self.create_subnet(query, request_id, order).await,
            "DeleteSubnet" => self.delete_subnet(query, request_id, order).await,
            "DescribeSubnets" => self.describe_subnets(query, request_id),
            "CreateSecurityGroup" => self.create_security_group(query, request_id, order).await,
            "DeleteSecurityGroup" => self.delete_security_group(query, request_id, order).await,
            "DescribeSecurityGroups" => self.describe_security_groups(query, request_id),
            "ImportKeyPair" => self.import_key_pair(query, request_id, order).await,
            "CreateKeyPair" => self.create_key_pair(query, request_id, order).await,
            "RotateKeys" => self.rotate_keys(query, request_id, order).await,
            "DescribeKeyPairs" => self.describe_key_pairs(query, request_id),
            "DeleteKeyPair" => self.delete_key_pair(query, request_id, order).await,
            "CreateLaunchTemplate" => self.create_launch_template(query, request_id, order).await,
            "CreateLaunchTemplateVersion" => {
                self.create_launch_template_version(query, request_id, order)
                    .await
            }
            "ModifyLaunchTemplate" => self.modify_launch_template(query, request_id, order).await,
            "DeleteLaunchTemplate" => self.delete_launch_template(query, request_id, order).await,
            "DeleteLaunchTemplateVersions" => {
                self.delete_launch_template_versions(query, request_id, order)
                    .await
            }
            "DescribeInstanceAttribute" => self.describe_instance_attribute(query, request_id),
            "ModifyInstanceAttribute" => {
                self.modify_instance_attribute(query, request_id, order)
                    .await
            }
            "GetConsoleOutput" => self.get_console_output(query, request_id),
            "DescribeRegions" => self.describe_regions(query, request_id),
            "DescribeAvailabilityZones" => self.describe_availability_zones(query, request_id),
            "DescribeAccountAttributes" => self.describe_account_attributes(query, request_id),
            "DescribeInstanceTypes" => self.describe_instance_types(query, request_id),
            "DescribeImages" => self.describe_images(query, request_id),
            "DescribeLaunchTemplates" => self.describe_launch_templates(query, request_id),
            "DescribeLaunchTemplateVersions" => {
                self.describe_launch_template_versions(query, request_id)
            }
            other => Err(ControlError::InvalidAction(other.to_owned())),
        }
    }

    /// The instance `id` names (`InvalidInstanceID.Malformed` or `.NotFound` as EC2 says).
    pub(super) fn slot(&self, id: &str) -> Result<Arc<InstanceSlot>, ControlError> {
        let parsed: InstanceId = id
            .parse()
            .map_err(|_| ControlError::InstanceIdMalformed(id.to_owned()))?;
        self.inventory
            .state
            .instance(&parsed)
            .ok_or_else(|| ControlError::InstanceNotFound(id.to_owned()))
    }

    /// `InvalidInstanceID.NotFound` unless `slot` is still the one served for its id: a request
    /// looks its instance up before it waits for the locks, and a reload may drop the instance
    /// meanwhile (a change to the dropped record would be acknowledged, then lost).
    pub(super) fn still_served(&self, slot: &InstanceSlot) -> Result<(), ControlError> {
        match self.inventory.state.instance(slot.id()) {
            Some(served) if std::ptr::eq(&*served, slot) => Ok(()),
            _ => Err(ControlError::InstanceNotFound(slot.id().to_string())),
        }
    }

    /// The instance imds' own actions are about: their `InstanceId`, which single-instance
    /// mode lets them leave out.
    pub(super) fn target(&self, query: &QueryRequest) -> Result<Arc<InstanceSlot>, ControlError> {
        match query.get("InstanceId") {
            Some(id) => self.slot(id),
            None if self.inventory.state.is_single() => self
                .inventory
                .state
                .first()
                .ok_or_else(|| ControlError::MissingParameter("InstanceId".into())),
            None => Err(ControlError::MissingParameter("InstanceId".into())),
        }
    }

    /// Applies `edit` to a copy of `slot`'s running configuration, validates it as a whole,
    /// makes it durable and swaps the new snapshot in; on any error nothing changes.
    async fn change(
        &self,
        before: &mut impl BeforeInstances,
        slot: &InstanceSlot,
        what: Change,
        edit: impl FnOnce(&Instance, &mut InstanceConfig) -> Result<(), ControlError>,
    ) -> Result<Instance, ControlError> {
        self.change_checked(before, slot, what, crate::store::Commit::default(), edit)
            .await
    }

    /// [`ControlApi::change`], stored in one commit with `checks` (the account values the
    /// change was decided on, which must not have changed since).
    async fn change_checked(
        &self,
        before: &mut impl BeforeInstances,
        slot: &InstanceSlot,
        what: Change,
        checks: crate::store::Commit,
        edit: impl FnOnce(&Instance, &mut InstanceConfig) -> Result<(), ControlError>,
    ) -> Result<Instance, ControlError> {
        let held = slot.lock(before).await;
        self.still_served(slot)?;
        // A terminated instance keeps only its tags changeable, as on EC2.
        if !matches!(what, Change::Tags) {
            not_terminated(slot)?;
        }
        let current = slot.current();
        let mut config = current.instance.config.clone();
        edit(&current.instance, &mut config)?;
        let instance = Instance::new(config)
            .map_err(|e| ControlError::InvalidParameterValue(e.to_string()))?;
        let mut changes = slot.changes();
        match &what {
            Change::Options(named) => {
                changes.metadata_options = Some(instance.config.metadata_options);
                let before = changes.metadata_options_set.unwrap_or_default();
                changes.metadata_options_set = Some(before.union(*named));
            }
            Change::Tags => changes.tags = Some(instance.config.tags.clone()),
            Change::Events => changes.events = Some(instance.config.events.clone()),
            Change::Attributes(attributes) => changes.attributes = Some(attributes.clone()),
            Change::Role(association) => {
                changes.role = Some(RoleAssociation {
                    role: instance.config.iam.role.clone(),
                    association_id: association.as_ref().map(|(id, _)| id.clone()),
                    associated_at: association.as_ref().map(|(_, at)| *at),
                })
            }
        }
        let commit = checks.instance(sync::instance_write(slot, &changes));
        let revision = self.persist(commit).await?;
        slot.set_changes(changes, &held);
        slot.set_revision(revision, &held);
        if let Change::Options(_) = what {
            let until = self.clock.now_millis() + APPLYING.as_millis() as u64;
            slot.set_pending_until(until);
        }
        let built = self
            .inventory
            .snapshots
            .build_after(Some(&current), instance.clone());
        self.inventory.state.replace(built)?;
        self.inventory.notify_applied();
        tracing::info!(
            instance = instance.id(),
            change = what.label(),
            "control change applied"
        );
        Ok(instance)
    }

    /// Notified after each change applied to the instance.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inventory.subscribe()
    }

    /// `base` with `changes` layered over it; the parts that no longer fit are logged and
    /// counted (`imds_changes_skipped_total`).
    pub(super) fn layer(&self, changes: &InstanceChanges, base: Instance) -> Instance {
        let layered = changes.layered(base).logged();
        self.metrics.changes_skipped(&layered.skipped);
        layered.instance
    }

    /// `pending` shortly after an options change of `slot`, `applied` after.
    fn options_state(&self, slot: &InstanceSlot) -> &'static str {
        match self.clock.now_millis() < slot.pending_until() {
            true => "pending",
            false => "applied",
        }
    }
}

/// `IncorrectInstanceState` when `slot` is terminated (or shutting down).
fn not_terminated(slot: &InstanceSlot) -> Result<(), ControlError> {
    let lifecycle = slot.changes().lifecycle;
    match lifecycle.map(|l| l.last) {
        Some(Transition::Terminate) => Err(ControlError::IncorrectInstanceState(format!(
            "The instance '{}' is not in a state from which it can be modified: it is terminated.",
            slot.id()
        ))),
        _ => Ok(()),
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

/// Hexadecimal back to bytes (`None` for an odd length or a non-hex digit).
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
