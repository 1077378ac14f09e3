// Transaction and utility hooks (txn_hooks.cpp): what a backend tells its
// database's worker and the launcher when a transaction ends, and the
// capture guard's checks before utility commands.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "access/xact.h"
}

namespace bitdex::pg {

// True when the worker of this database has not created its slot yet, or
// does not write the ops WAL of this installation of the extension
// (`instance`) yet (automatic mode: also while no worker has started):
// messages captured now would precede the slot, or go to an earlier
// installation's slot and WAL.
bool worker_not_ready(uint64 instance);
// Asks the launcher to start this database's worker once the current
// transaction commits (automatic mode; bitdex_sync.start_worker()).
void start_worker_at_commit();
// The extension is being created or dropped: at commit, the database's
// worker looks at the catalog at once instead of at its next naptime.
void extension_change_at_commit();

// Commit hook: a transaction that emitted capture messages wakes its
// database's worker once it has committed.
void note_captured(bool outbox);
void at_transaction_end(XactEvent event, void* arg);
// ... and so does COMMIT PREPARED (a ProcessUtility hook notes it; the same
// hook runs the capture guard's checks of TRUNCATE and partitions).
void install_utility_hook();

}  // namespace bitdex::pg
