// The one exception type of the core. The Postgres wall maps `kind` to a
// SQLSTATE; tools print `what()` plus detail and hint.
#pragma once

#include <stdexcept>
#include <string>

namespace bitdex {

enum class ErrorKind {
  InvalidInput,           // bad JSON, unknown op, bad argument: the caller can fix it
  Corrupt,                // on-disk data fails a CRC or length check
  Io,                     // an operating system call failed
  Internal,               // an invariant broke: a bug
  UndefinedTable,         // a config names a table that does not exist
  UndefinedColumn,        // ... or a column
  NotSupported,           // a key or feature this version rejects rather than ignores
  NotReady,               // something it depends on is not there yet: retry later
  InsufficientPrivilege,  // the caller (or an object's owner) lacks the rights it needs
  Cancelled,              // the caller asked to stop (a query cancel)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, std::string detail = {}, std::string hint = {})
      : std::runtime_error(std::move(message)), kind_(kind), detail_(std::move(detail)), hint_(std::move(hint)) {}

  ErrorKind kind() const { return kind_; }
  const std::string& detail() const { return detail_; }
  const std::string& hint() const { return hint_; }

 private:
  ErrorKind kind_;
  std::string detail_;
  std::string hint_;
};

// Throws an Io error naming the failed call, the path and strerror(errno).
[[noreturn]] void throw_io_error(const std::string& what, const std::string& path, int err);

}  // namespace bitdex
