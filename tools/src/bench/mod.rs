//! accel-bench's pieces: the raw AF_XDP floor ([`floor`]), tool-output parsers ([`parse`]), the workloads on a throwaway
//! topology ([`workloads`]), the results table and JSON ([`report`]) and the latency plot
//! ([`plot`]).

pub mod floor;
pub mod parse;
pub mod plot;
pub mod report;
pub mod workloads;
