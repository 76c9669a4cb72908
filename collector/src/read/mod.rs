//! The read side: what people and scripts see, always scoped by who
//! asks (`access.rs`): the HTTP API (`api.rs`), the gRPC query service
//! (`grpc_query.rs`), the web UI (`ui.rs`), and the views they share over
//! the analysis' state and the store (`query.rs`, `live.rs`, `availability.rs`).

pub mod access;
pub mod api;
pub mod availability;
pub mod grpc_query;
pub mod live;
pub mod query;
pub mod ui;
