//! The agent's connection state, for logs, `STATUS=` and tests.

use std::fmt;
use std::time::Duration;

/// Where the agent is in its connection lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentStatus {
    Starting,
    Connecting {
        collector: String,
    },
    Connected {
        collector: String,
        heartbeat: Duration,
    },
    Waiting {
        retry_in: Duration,
        error: String,
    },
    Stopped,
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentStatus::Starting => f.write_str("starting"),
            AgentStatus::Connecting { collector } => write!(f, "connecting to {collector}"),
            AgentStatus::Connected {
                collector,
                heartbeat,
            } => {
                write!(
                    f,
                    "connected to {collector}, heartbeat every {}",
                    humantime::format_duration(*heartbeat)
                )
            }
            AgentStatus::Waiting { retry_in, error } => {
                write!(
                    f,
                    "disconnected ({error}); retrying in {}",
                    humantime::format_duration(*retry_in)
                )
            }
            AgentStatus::Stopped => f.write_str("stopped"),
        }
    }
}
