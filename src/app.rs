//! The edges: configuration ([`config`], or amazon-ec2-metadata-mock's flags, environment and
//! file: [`aemm`]), the command line ([`cli`], and the control API's thin client [`ctl`]),
//! running the service ([`serve`]: start, SIGHUP reload, stop), the link-local addresses
//! ([`link_local`]) and the STS client that fetches real role credentials ([`sts`]).

pub mod aemm;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod link_local;
pub mod serve;
