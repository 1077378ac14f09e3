// The background workers' entry points: the per-database capture worker
// (worker.cpp: one per database where the extension is created, started by
// the launcher, or per database named in bitdex_sync.databases) and the
// launcher (launcher.cpp). What they share with backends is in
// shared_state.hpp, their settings in settings.hpp, what a transaction tells
// them in txn_hooks.hpp.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
PGDLLEXPORT void bitdex_sync_worker_main(Datum arg);
PGDLLEXPORT void bitdex_sync_launcher_main(Datum arg);
}
