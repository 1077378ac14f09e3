// Copies C++ exceptions into static storage and raises them as PG errors.
#include "bitdex_sync/pg/wall.hpp"

namespace bitdex::pg {
namespace {

void copy(char* dst, size_t cap, const char* src) {
  if (!src) src = "";
  strlcpy(dst, src, cap);
}

int sqlstate_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidInput: return ERRCODE_INVALID_PARAMETER_VALUE;
    case ErrorKind::Corrupt: return ERRCODE_DATA_CORRUPTED;
    case ErrorKind::Io: return ERRCODE_IO_ERROR;
    case ErrorKind::Internal: return ERRCODE_INTERNAL_ERROR;
    case ErrorKind::UndefinedTable: return ERRCODE_UNDEFINED_TABLE;
    case ErrorKind::UndefinedColumn: return ERRCODE_UNDEFINED_COLUMN;
    case ErrorKind::NotSupported: return ERRCODE_FEATURE_NOT_SUPPORTED;
    case ErrorKind::NotReady: return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
    case ErrorKind::InsufficientPrivilege: return ERRCODE_INSUFFICIENT_PRIVILEGE;
    case ErrorKind::Cancelled: return ERRCODE_QUERY_CANCELED;
  }
  return ERRCODE_INTERNAL_ERROR;
}

}  // namespace

CaughtError& caught_error() {
  static CaughtError e;
  return e;
}

ErrorData* capture_current_exception() noexcept {
  CaughtError& ce = caught_error();
  ce.detail[0] = ce.hint[0] = '\0';
  try {
    throw;
  } catch (const PgError& e) {
    return e.data();
  } catch (const Error& e) {
    ce.sqlstate = sqlstate_for(e.kind());
    copy(ce.message, sizeof ce.message, e.what());
    copy(ce.detail, sizeof ce.detail, e.detail().c_str());
    copy(ce.hint, sizeof ce.hint, e.hint().c_str());
  } catch (const std::bad_alloc&) {
    ce.sqlstate = ERRCODE_OUT_OF_MEMORY;
    copy(ce.message, sizeof ce.message, "out of memory in bitdex_sync");
  } catch (const std::exception& e) {
    ce.sqlstate = ERRCODE_INTERNAL_ERROR;
    copy(ce.message, sizeof ce.message, e.what());
  } catch (...) {
    ce.sqlstate = ERRCODE_INTERNAL_ERROR;
    copy(ce.message, sizeof ce.message, "unknown C++ exception in bitdex_sync");
  }
  return nullptr;
}

void raise_caught_error() {
  const CaughtError& ce = caught_error();
  ereport(ERROR, (errcode(ce.sqlstate), errmsg("%s", ce.message), ce.detail[0] ? errdetail("%s", ce.detail) : 0,
                  ce.hint[0] ? errhint("%s", ce.hint) : 0));
  pg_unreachable();
}

}  // namespace bitdex::pg
