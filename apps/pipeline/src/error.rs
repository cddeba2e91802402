//! Errors the services stop on. Per-record problems are not here: a bad record is
//! dead-lettered and the service goes on (see [`crate::record::RecordError`]).

use std::net::SocketAddr;

use spindle_sdk::rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: cannot {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("postgresql: cannot create the schema: {0}")]
    Schema(String),
    #[error("postgresql: invalid database url: {0}")]
    DatabaseUrl(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid setting {name}: {reason}")]
    Config { name: &'static str, reason: String },
}

impl Error {
    pub(crate) fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> Self {
        move |source| Self::Kafka { what, source }
    }
}
