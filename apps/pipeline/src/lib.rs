//! Seed 000 rebuilt on spindle-sdk: a market-data pipeline traced end to end.
//!
//! ```text
//! ingestion-service ──market-data──► processor-service ──enriched-data──► storage-service ──► PostgreSQL
//!   (simulator)          Kafka            (BSM, IV)           Kafka          (batched, idempotent)
//!                                  └─────────────── dead-letter ◄──────────────┘
//! ```
//!
//! Trace context travels in Kafka record headers, so one snapshot is one trace:
//! `fetch_instrument_data` → `enrich_context`, `send_to_kafka` → `process_message` →
//! `clean_data`, `calculate_bsm`, `send_enriched` → `store_data` → `prepare_records`,
//! `db_write`. The span names are the seed's, exactly.
//!
//! Modules: [`bsm`] and [`record`] are the pure core (valuation, records, validation — no
//! IO); [`market`] is the data source; [`messaging`] and [`db`] the Kafka and PostgreSQL
//! plumbing; [`reference`] the Redis cache of reference data in front of the source;
//! [`ingestion`], [`processor`] and [`storage`] the three services, each with its
//! configuration; [`metrics`], [`process`], [`shutdown`], [`flush`] and [`service`] what
//! every binary shares.

pub mod bsm;
pub mod db;
pub mod error;
pub mod flush;
pub mod ingestion;
pub mod market;
pub mod messaging;
pub mod metrics;
pub mod processor;
pub mod record;
pub mod reference;
pub mod service;
pub mod shutdown;
pub mod storage;

pub use error::Error;
