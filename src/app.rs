//! The edges: configuration ([`config`], or amazon-ec2-metadata-mock's flags, environment and
//! file: [`aemm`]), the command line ([`cli`], and the control API's thin client [`ctl`]),
//! running the service ([`serve`]: start, SIGHUP reload, stop) and the link-local addresses it
//! can put on the host ([`link_local`]).

pub mod aemm;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod link_local;
pub mod serve;
