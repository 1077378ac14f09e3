// From a parsed source to what gets installed: the capture spec (the one
// argument of the generic C trigger function), a stable trigger name, and the
// DDL. Pure text generation; the catalog checks are in src/pg.
#pragma once

#include <string>
#include <vector>

#include "bitdex_sync/core/config.hpp"

namespace bitdex::trigger_gen {

// The compact JSON the capture trigger compiles at first use:
// {"v":1,"source":..,"kind":..,"sink":..,"slot":<sql>,"alive":b,"delete":b,
//  "fields":[{"f":target,"sql":<sql>}],           direct, fan-outs
//  "value":{"f":field,"sql":<sql>},"filter":<sql>, join
//  "computed":[{"f":target,"cond":<sql>,"sql":<sql>}],  join (conditional)
//  "query":<template>,"query_cols":[..]}           query fan-out
// SQL is rendered with quoted identifiers and no row prefix.
std::string capture_spec(const config::Source& s);

// The events the trigger fires on, as the "AFTER ..." clause.
std::string trigger_events(const config::Source& s);

// bitdex_<table>_<first 8 hex of SHA-256 over the qualified table, the events
// and the spec>: a changed definition gives a new name, an unchanged one the
// same name on every run and every machine. At most 63 bytes.
std::string trigger_name(const std::string& qualified_table, const config::Source& s);

// CREATE TRIGGER ... EXECUTE FUNCTION bitdex_sync.capture('<spec>'); plus
// ALTER TABLE ... ENABLE ALWAYS TRIGGER (fires under session_replication_role
// = replica too).
std::string create_sql(const std::string& qualified_table, const config::Source& s);
std::string drop_sql(const std::string& qualified_table, const std::string& trigger);

}  // namespace bitdex::trigger_gen
