//! `StopInstances`, `StartInstances`, `RebootInstances` and `TerminateInstances` (fleet mode),
//! with EC2's state machine ([`crate::fleet::lifecycle`]): a stopped or terminated instance
//! answers no guest but keeps its private addresses (as on EC2: nobody else gets them), a
//! terminated one gives its addresses back to its subnet (their rows deleted) and stays visible
//! for an hour. Every change of one request is stored in one transaction before the answer.

use std::sync::Arc;

use super::error::ControlError;
use super::instances::instance_state;
use super::query::{QueryRequest, MAX_IDS};
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::lifecycle::{Lifecycle, Transition};
use crate::fleet::lock_order::{lock_instances, Unlocked};
use crate::fleet::state::InstanceSlot;

impl ControlApi {
    /// Makes `transition` on every instance `InstanceId.N` names, answering `root` with each
    /// one's previous and current state.
    pub(super) async fn change_lifecycle(
        &self,
        query: &QueryRequest,
        request_id: &str,
        root: &'static str,
        transition: Transition,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        if self.inventory.state.is_single() {
            return Err(ControlError::Unsupported(
                "instance lifecycle actions need fleet mode (imds serve --fleet)".into(),
            ));
        }
        let ids = query.list_at_most("InstanceId", MAX_IDS, "instance IDs")?;
        if ids.is_empty() {
            return Err(ControlError::MissingParameter("InstanceId".into()));
        }
        let mut slots = ids
            .into_iter()
            .map(|id| self.slot(id))
            .collect::<Result<Vec<_>, _>>()?;
        slots.sort_by(|a, b| a.id().cmp(b.id()));
        slots.dedup_by(|a, b| a.id() == b.id());
        let mut account = self.account.lock(order).await;
        let locks = lock_instances(
            slots.iter().map(|slot| (slot.id(), slot.instance_lock())),
            &mut account,
        )
        .await;
        for slot in &slots {
            self.still_served(slot)?;
        }
        let now = self.clock.now_millis();
        let mut network = (*self.inventory.network()).clone();
        let mut answer = Vec::with_capacity(slots.len());
        let mut changed = Vec::new();
        let mut commit = crate::store::Commit::default();
        for slot in &slots {
            let snapshot = slot.current();
            let before = instance_state(slot, &snapshot, now);
            let lifecycle = slot.changes().lifecycle;
            let terminated = lifecycle.is_some_and(|l| l.last == Transition::Terminate);
            let stopped = lifecycle.is_some_and(|l| l.last == Transition::Stop);
            let protected = slot
                .changes()
                .attributes
                .is_some_and(|a| a.disable_api_termination);
            if transition == Transition::Terminate && protected && !terminated {
                return Err(ControlError::OperationNotPermitted(format!(
                    "The instance '{}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.",
                    slot.id()
                )));
            }
            let effect = match (transition, terminated, stopped) {
                (Transition::Terminate, true, _) => None,
                (_, true, _) => {
                    return Err(ControlError::IncorrectInstanceState(format!(
                        "The instance '{}' is not in a state from which it can be {}.",
                        slot.id(),
                        past_tense(transition)
                    )))
                }
                (Transition::Stop, _, true) | (Transition::Start, _, false) => None,
                (Transition::Launch, _, _) => None,
                _ => Some(transition),
            };
            if let Some(transition) = effect {
                let mut changes = slot.changes();
                changes.lifecycle = Some(Lifecycle::new(transition, now));
                if transition == Transition::Terminate {
                    for (subnet, ip) in super::launch::addresses(&snapshot.instance) {
                        network.release(&subnet, ip);
                        commit = commit.release(&subnet, ip, slot.id().as_str());
                    }
                }
                changed.push((slot.clone(), changes));
            }
            answer.push((slot.clone(), before));
        }
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        for (slot, changes) in &changed {
            commit = commit.instance(super::sync::instance_write(slot, changes));
        }
        let revision = self.persist(commit).await?;
        for (slot, changes) in changed {
            let held = slot.guard_in(&locks).expect("every slot changed is locked");
            slot.set_changes(changes, held);
            slot.set_revision(revision, held);
        }
        // A state change gives no address a new owner: stopped instances keep theirs.
        if let Err(conflict) = self.inventory.state.reindex() {
            tracing::error!(%conflict, "the fleet index kept its previous state");
        }
        drop(locks);
        self.inventory.set_network(network, &account);
        let action = match transition {
            Transition::Launch => "RunInstances",
            Transition::Start => "StartInstances",
            Transition::Stop => "StopInstances",
            Transition::Terminate => "TerminateInstances",
        };
        tracing::info!(
            action,
            instances = answer.len(),
            "instance lifecycle changed"
        );
        Ok(state_changes_xml(root, request_id, &answer, now))
    }

    /// `RebootInstances`: running instances stay running (nothing a guest can see changes).
    pub(super) fn reboot_instances(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let ids = query.list_at_most("InstanceId", MAX_IDS, "instance IDs")?;
        if ids.is_empty() {
            return Err(ControlError::MissingParameter("InstanceId".into()));
        }
        for id in ids {
            let slot = self.slot(id)?;
            let lifecycle = slot.changes().lifecycle;
            if lifecycle.is_some_and(|l| l.last == Transition::Terminate) {
                return Err(ControlError::IncorrectInstanceState(format!(
                    "The instance '{id}' is not in a state from which it can be rebooted."
                )));
            }
        }
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        let mut xml = Xml::response("RebootInstancesResponse", request_id);
        xml.leaf("return", true);
        Ok(xml.finish())
    }
}

fn past_tense(transition: Transition) -> &'static str {
    match transition {
        Transition::Launch => "launched",
        Transition::Start => "started",
        Transition::Stop => "stopped",
        Transition::Terminate => "terminated",
    }
}

/// `instancesSet` of `InstanceStateChange`s: each instance's previous state and the state the
/// transition puts it in now.
fn state_changes_xml(
    root: &'static str,
    request_id: &str,
    answer: &[(Arc<InstanceSlot>, (u16, &'static str))],
    now: u64,
) -> String {
    let mut xml = Xml::response(root, request_id);
    xml.open("instancesSet");
    for (slot, before) in answer {
        let current = slot
            .changes()
            .lifecycle
            .map(|l| (l.state(now).code(), l.state(now).name()))
            .unwrap_or(*before);
        xml.open("item")
            .leaf("instanceId", slot.id().as_str())
            .open("currentState")
            .leaf("code", current.0)
            .leaf("name", current.1)
            .close()
            .open("previousState")
            .leaf("code", before.0)
            .leaf("name", before.1)
            .close()
            .close();
    }
    xml.close();
    xml.finish()
}
