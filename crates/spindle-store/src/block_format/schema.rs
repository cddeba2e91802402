//! The Parquet schema of a block: its message type, and the fixed names and types of the
//! dedicated and promoted attribute columns. Names and layout only; which key a promoted
//! column holds is [`super::promotion`]'s, how spans fill the columns is [`super::encode`]'s.

use super::AttributeColumns;

/// Attributes promoted to their own column, with the one value type the column holds.
/// A span attribute lands here only when it is the first with its key and has that type;
/// anything else stays in the generic list, so nothing is lost.
pub(super) const DEDICATED: [(&str, &str, DedicatedType); 10] = [
    ("http.request.method", "http_request_method", DedicatedType::Str),
    ("http.route", "http_route", DedicatedType::Str),
    ("http.response.status_code", "http_response_status_code", DedicatedType::Int),
    ("url.full", "url_full", DedicatedType::Str),
    ("db.system", "db_system", DedicatedType::Str),
    ("db.system.name", "db_system_name", DedicatedType::Str),
    ("messaging.system", "messaging_system", DedicatedType::Str),
    ("messaging.destination.name", "messaging_destination_name", DedicatedType::Str),
    ("peer.service", "peer_service", DedicatedType::Str),
    ("error.type", "error_type", DedicatedType::Str),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DedicatedType {
    Str,
    Int,
}

/// The leaves of the span attribute list: key, then the string value, then the other
/// value types.
pub(crate) const ATTRIBUTE_LIST_LEAVES: [&str; 7] = [
    "attributes.key_value.key",
    "attributes.key_value.str",
    "attributes.key_value.int",
    "attributes.key_value.double",
    "attributes.key_value.bool",
    "attributes.key_value.bytes",
    "attributes.key_value.complex",
];

/// Columns of each block for the string attributes most of its spans carry, beyond
/// [`DEDICATED`]: which key each holds is chosen per block when it is written
/// ([`AttributeColumns`]), kept in the block's meta and in its Parquet footer under
/// [`PROMOTED_KEYS_KEY`]. A key promoted in a block never appears in its generic lists
/// with a string value as its first entry, exactly as for the dedicated columns.
pub(crate) const PROMOTED: [&str; 8] = [
    "promoted_str_1",
    "promoted_str_2",
    "promoted_str_3",
    "promoted_str_4",
    "promoted_str_5",
    "promoted_str_6",
    "promoted_str_7",
    "promoted_str_8",
];

/// Footer key of a block's promoted attribute keys: a JSON array, `PROMOTED[i]` holding
/// the i-th key.
pub(crate) const PROMOTED_KEYS_KEY: &str = "spindle.promoted_attributes";

/// Every attribute column of a block: the dedicated ones, then the promoted ones.
pub(super) const ATTRIBUTE_COLUMNS: usize = DEDICATED.len() + PROMOTED.len();

fn kv_list_schema(name: &str) -> String {
    format!(
        "required group {name} (LIST) {{ repeated group key_value {{ required binary key (UTF8); \
         optional binary str (UTF8); optional int64 int; optional double double; optional boolean bool; \
         optional binary bytes; optional binary complex; }} }}"
    )
}

/// The message type of every block, in Parquet's schema language.
pub(crate) fn schema_text() -> String {
    let mut s = String::from(
        "message spindle_span {
        required fixed_len_byte_array(16) trace_id;
        required int64 span_id;
        required int64 parent_span_id;
        required binary service_name (UTF8);
        required binary name (UTF8);
        required int32 kind;
        required int64 start_time_unix_nano (TIMESTAMP(NANOS,true));
        required int64 duration_nanos;
        required int32 status_code;
        optional binary status_message (UTF8);
        optional binary trace_state (UTF8);
        required int32 flags;
        required int32 resource_ref;
        required int32 scope_ref;
        ",
    );
    for i in 0..ATTRIBUTE_COLUMNS {
        let column = AttributeColumns::column(i);
        match AttributeColumns::ty(i) {
            DedicatedType::Str => s.push_str(&format!("optional binary {column} (UTF8);\n")),
            DedicatedType::Int => s.push_str(&format!("optional int64 {column};\n")),
        }
    }
    s.push_str("optional binary attribute_layout;\n");
    s.push_str(&kv_list_schema("attributes"));
    s.push_str(&format!(
        "required group events (LIST) {{ repeated group event {{ required int64 time_unix_nano; \
         required binary name (UTF8); {} required int32 dropped_attributes_count; }} }}",
        kv_list_schema("attributes")
    ));
    s.push_str(&format!(
        "required group links (LIST) {{ repeated group link {{ required fixed_len_byte_array(16) trace_id; \
         required int64 span_id; optional binary trace_state (UTF8); required int32 flags; {} \
         required int32 dropped_attributes_count; }} }}",
        kv_list_schema("attributes")
    ));
    s.push_str(
        "required int32 dropped_attributes_count;
        required int32 dropped_events_count;
        required int32 dropped_links_count;
        }",
    );
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::block_format::SpanColumns;

    #[test]
    fn leaf_names_follow_the_schema() {
        let schema = parquet::schema::parser::parse_message_type(&schema_text()).unwrap();
        let descr = parquet::schema::types::SchemaDescriptor::new(Arc::new(schema));
        let columns = SpanColumns::new();
        let leaves = columns.leaves();
        assert_eq!(descr.num_columns(), leaves.len());
        for (i, (name, _)) in leaves.iter().enumerate() {
            assert_eq!(&descr.column(i).path().string(), name);
        }
    }
}
