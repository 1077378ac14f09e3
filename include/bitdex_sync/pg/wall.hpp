// The wall between C++ and PostgreSQL (STYLE.md rules 1-2).
//
// PostgreSQL reports errors with longjmp; C++ with exceptions. Neither may
// cross the other: a longjmp over a C++ frame skips its destructors, and an
// exception unwinding through PostgreSQL frames corrupts its error state. So:
//   * every SQL-callable function is a C-linkage shim whose body runs inside
//     cpp_call(), which catches every C++ exception and raises the PostgreSQL
//     error only after leaving the catch block, from a frame without C++
//     objects;
//   * every PostgreSQL call made from C++ code that holds C++ objects goes
//     through pg_guard(), which catches the PostgreSQL error (PG_TRY) and
//     rethrows it as a PgError exception, so C++ unwinding runs as usual; the
//     PG error is re-raised unchanged by cpp_call.
#pragma once

#include <cstring>
#include <exception>
#include <new>
#include <type_traits>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/pg/postgres.hpp"

namespace bitdex::pg {

// A PostgreSQL error caught by pg_guard, carried through C++ frames.
class PgError : public std::exception {
 public:
  explicit PgError(ErrorData* e) : edata_(e) {}
  ErrorData* data() const { return edata_; }
  const char* what() const noexcept override {
    return edata_ && edata_->message ? edata_->message : "PostgreSQL error";
  }

 private:
  ErrorData* edata_;
};

// Runs fn (PostgreSQL calls only; fn must not own C++ objects with
// destructors, since a PostgreSQL error longjmps out of it) and turns a
// PostgreSQL error into a PgError.
template <typename Fn>
auto pg_guard(Fn&& fn) -> decltype(fn()) {
  using R = decltype(fn());
  if constexpr (std::is_void_v<R>) {
    pg_guard([&] {
      fn();
      return 0;
    });
  } else {
    static_assert(std::is_trivially_copyable_v<R>, "pg_guard returns plain values (Datum, pointers)");
    MemoryContext ctx = CurrentMemoryContext;
    // Written after the longjmp back into this frame: volatile, as setjmp asks.
    ErrorData* volatile edata = nullptr;
    volatile R result{};
    PG_TRY();
    { result = fn(); }
    PG_CATCH();
    {
      MemoryContextSwitchTo(ctx);
      edata = CopyErrorData();
      FlushErrorState();
    }
    PG_END_TRY();
    if (edata) throw PgError(edata);
    return result;
  }
}

// Runs fn — C++ that calls no PostgreSQL function and returns bool — from a
// frame PostgreSQL may longjmp out of (triggers, output plugin callbacks):
// any exception becomes false with its message in err, for the caller to
// ereport. Results must live in static storage, never on this stack.
template <typename Fn>
bool run_cpp(Fn&& fn, char* err, size_t errlen) noexcept {
  try {
    return fn();
  } catch (const std::exception& e) {
    strlcpy(err, e.what(), errlen);
  } catch (...) {
    strlcpy(err, "unknown C++ exception", errlen);
  }
  return false;
}

// What cpp_call copied out of a C++ exception; static storage so nothing
// needs freeing when ereport longjmps away.
struct CaughtError {
  int sqlstate;
  char message[1024];
  char detail[1024];
  char hint[512];
};

CaughtError& caught_error();
// Fills caught_error() from the exception being handled; returns the PG error
// to rethrow unchanged, or nullptr.
ErrorData* capture_current_exception() noexcept;
// Raises caught_error() as an ERROR. Never returns.
[[noreturn]] void raise_caught_error();

// Runs the C++ body of a SQL-callable function; see the comment at the top.
template <typename Fn>
Datum cpp_call(Fn&& fn) {
  ErrorData* pg_error = nullptr;
  bool failed = false;
  Datum result = (Datum)0;
  try {
    result = fn();
  } catch (...) {
    pg_error = capture_current_exception();
    failed = true;
  }
  // Outside the catch block: the exception object is gone, only PODs remain.
  if (pg_error) ReThrowError(pg_error);
  if (failed) raise_caught_error();
  return result;
}

}  // namespace bitdex::pg
