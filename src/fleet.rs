//! The domain core: plain data and pure functions. The instance model ([`instance`],
//! [`options`]) and what the control plane changed on it ([`changes`]); the metadata tree with
//! bodies prebuilt per instance ([`metadata`]); sealed stateless session tokens ([`token`]);
//! rotating credentials per delivery ([`credentials`]); the signed identity document
//! ([`identity`]) and the keys behind both ([`keys`], [`secret`]); what EC2 announces as a
//! schedule ([`events`]); injected [`faults`]; the VPCs, subnets, security groups, key pairs
//! and address pools instances launch into ([`network`]); the instance types imds knows
//! ([`instance_types`]); each instance's id ([`instance_id`]),
//! EC2 lifecycle ([`lifecycle`]), throttle ([`throttle`]), token-less request history
//! ([`history`]) and recent IMDSv1 callers ([`callers`]); role credentials from STS
//! ([`sts`]); and the fleet index of instance slots whose snapshots the guest API reads
//! lock-free ([`state`]).

pub mod callers;
pub mod changes;
pub mod credentials;
pub mod events;
pub mod faults;
pub mod history;
pub mod identity;
pub mod instance;
pub mod instance_id;
pub mod instance_types;
pub mod key_material;
pub mod keys;
pub mod launch_templates;
pub mod lifecycle;
pub mod lock_order;
pub mod metadata;
pub mod network;
pub mod options;
pub mod secret;
pub mod state;
pub mod sts;
pub mod throttle;
pub mod token;
