// What the command-line tools share: the JSON form of a WAL cursor and the
// error reporting of main().
#pragma once

#include <cstdio>
#include <exception>
#include <string>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/wal_dir.hpp"

namespace bitdex::tool {

inline std::string cursor_json(const wal::Cursor& c) {
  return "{\"wal_id\":\"" + std::to_string(c.wal_id) + "\",\"segment\":" + std::to_string(c.generation) +
         ",\"offset\":" + std::to_string(c.offset) + "}";
}

// Runs `run`, printing an error with its detail and hint on stderr. Exit
// status: what run returned; 1 for damaged data (Corrupt); 2 for any other error.
template <typename Run>
int main_guard(const char* tool, Run run) {
  try {
    return run();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    if (!e.detail().empty()) std::fprintf(stderr, "detail: %s\n", e.detail().c_str());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return e.kind() == ErrorKind::Corrupt ? 1 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return 2;
  }
}

}  // namespace bitdex::tool
