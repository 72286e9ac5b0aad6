//! accel-bench's pieces: tool-output parsers ([`parse`]), the workloads on a throwaway
//! topology ([`workloads`]), the results table and JSON ([`report`]) and the latency plot
//! ([`plot`]).

pub mod parse;
pub mod plot;
pub mod report;
pub mod workloads;
