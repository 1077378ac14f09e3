// Library entry point: _PG_init in the canonical order (STYLE.md rule 4).
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/postgres.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"

extern "C" {
#include "access/xact.h"
}

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

// Refuses to load outside shared_preload_libraries: the capture worker and
// its shared state exist only when the postmaster loads the library. Then:
// settings, shared memory, the commit wake-up, the utility and executor
// hooks, and the workers last.
void _PG_init(void) {
  if (!process_shared_preload_libraries_in_progress)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("bitdex_sync must be loaded via shared_preload_libraries"),
                    errhint("Add bitdex_sync to shared_preload_libraries (and to output_plugin_libraries) in "
                            "postgresql.conf, then restart the server.")));
  bitdex::pg::define_settings();
  MarkGUCPrefixReserved("bitdex_sync");
  bitdex::pg::install_shared_memory_hooks();
  RegisterXactCallback(bitdex::pg::at_transaction_end, nullptr);
  bitdex::pg::install_utility_hook();
  bitdex::pg::install_executor_hook();
  bitdex::pg::register_workers();
}
