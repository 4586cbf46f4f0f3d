//! An instance's EC2 lifecycle: the last transition the control plane made (launch, start, stop,
//! terminate) and when; the state at any moment follows from it, as on EC2 (pending → running,
//! stopping → stopped, shutting-down → terminated). Instances from the config file have none:
//! they are running.

use serde::{Deserialize, Serialize};

/// How long an instance stays `pending`, `stopping` or `shutting-down`.
pub const SETTLING_MILLIS: u64 = 500;
/// How long a terminated instance stays visible in `DescribeInstances` (EC2: about an hour).
pub const TERMINATED_VISIBLE_MILLIS: u64 = 60 * 60_000;

/// A transition the control plane made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    /// `RunInstances`.
    Launch,
    /// `StartInstances`.
    Start,
    /// `StopInstances`.
    Stop,
    /// `TerminateInstances`.
    Terminate,
}

/// The last transition and when it was made (clock milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// What happened last.
    pub last: Transition,
    /// When (clock milliseconds).
    pub at_millis: u64,
}

/// EC2's instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Launching or starting.
    Pending,
    /// Running.
    Running,
    /// Terminating.
    ShuttingDown,
    /// Terminated.
    Terminated,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
}

impl InstanceState {
    /// EC2's state code.
    pub fn code(self) -> u16 {
        match self {
            InstanceState::Pending => 0,
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
            InstanceState::Stopping => 64,
            InstanceState::Stopped => 80,
        }
    }

    /// EC2's state name.
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }
}

impl Lifecycle {
    /// `transition` made at `at_millis`.
    pub fn new(last: Transition, at_millis: u64) -> Lifecycle {
        Lifecycle { last, at_millis }
    }

    /// The state at `now` (clock milliseconds).
    pub fn state(&self, now: u64) -> InstanceState {
        let settled = now >= self.at_millis + SETTLING_MILLIS;
        match (self.last, settled) {
            (Transition::Launch | Transition::Start, false) => InstanceState::Pending,
            (Transition::Launch | Transition::Start, true) => InstanceState::Running,
            (Transition::Stop, false) => InstanceState::Stopping,
            (Transition::Stop, true) => InstanceState::Stopped,
            (Transition::Terminate, false) => InstanceState::ShuttingDown,
            (Transition::Terminate, true) => InstanceState::Terminated,
        }
    }

    /// Whether guests are answered as this instance (it is, or is becoming, running).
    pub fn serves_guests(&self) -> bool {
        matches!(self.last, Transition::Launch | Transition::Start)
    }

    /// Whether the instance still holds its private addresses: every state but terminated (a
    /// stopped instance keeps them, as on EC2).
    pub fn holds_addresses(&self) -> bool {
        self.last != Transition::Terminate
    }

    /// Whether the instance was terminated long enough ago to disappear.
    pub fn is_gone(&self, now: u64) -> bool {
        self.last == Transition::Terminate
            && now >= self.at_millis + SETTLING_MILLIS + TERMINATED_VISIBLE_MILLIS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_ec2s_machine_on_the_clock() {
        let launched = Lifecycle::new(Transition::Launch, 1_000);
        assert_eq!(launched.state(1_000), InstanceState::Pending);
        assert_eq!(launched.state(1_500), InstanceState::Running);
        let stopped = Lifecycle::new(Transition::Stop, 2_000);
        assert_eq!(stopped.state(2_499).name(), "stopping");
        assert_eq!(stopped.state(2_500).code(), 80);
        let terminated = Lifecycle::new(Transition::Terminate, 3_000);
        assert_eq!(terminated.state(3_000), InstanceState::ShuttingDown);
        assert_eq!(terminated.state(3_500), InstanceState::Terminated);
        assert!(!terminated.is_gone(3_500));
        assert!(terminated.is_gone(3_500 + TERMINATED_VISIBLE_MILLIS));
        assert!(launched.serves_guests() && !stopped.serves_guests());
    }
}
