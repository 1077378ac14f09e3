// The one way C++ files of src/pg include PostgreSQL headers: with C linkage
// and the warnings C++17 gives on PG's C idioms silenced here only.
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
}
