//! The consumers: what follows the ingest log (`crate::log`) on the one
//! consumer driver, each with its own durable cursor. Analysis turns
//! results into series, windows, outages and route changes; host facts
//! keep what agents report about their hosts; export writes every point
//! to InfluxDB; alerting follows the events the others record.

pub mod alert;
pub mod analysis;
pub mod export;
pub mod facts;
