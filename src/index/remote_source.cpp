// A follower's batches over libpq: bitdex_sync.read_wal() on the primary,
// as a role granted bitdex_sync_reader. Transport, TLS and authentication
// are libpq's. Lost connections (a server restart, a network error) are
// reopened with backoff and the read resumes after the last batch received;
// errors the server means (a lagging consumer, another WAL's cursor, no
// permission) end the follower.
#include <libpq-fe.h>

#include <chrono>
#include <deque>
#include <thread>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/index/follower.hpp"

namespace bitdex::index {
namespace {

// A connection or server state that goes away by itself: try again.
struct Transient {
  std::string why;
};

uint64_t be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Messages of a failed connection attempt that no retry mends.
bool permanent_connect_failure(const std::string& msg) {
  for (const char* s : {"authentication", "password", "does not exist", "permission denied", "no pg_hba.conf entry",
                        "invalid connection option", "invalid sslmode", "missing \"=\""})
    if (msg.find(s) != std::string::npos) return true;
  return false;
}

class RemoteSource : public BatchSource {
 public:
  explicit RemoteSource(RemoteOptions o) : o_(std::move(o)) { wal::validate_consumer_name(o_.consumer); }
  ~RemoteSource() override { close(); }

  bool start(const std::optional<wal::Cursor>& after) override {
    after_ = after;
    // Registering is idempotent: a consumer registered at the end (by an
    // operator, before a load) keeps its cursor.
    retrying([&] { exec("SELECT bitdex_sync.register_consumer($1)", {o_.consumer}, false); });
    return !after;
  }

  bool next(wal::WalBatch* out) override {
    if (buffered_.empty()) retrying([&] { fetch(); });
    if (buffered_.empty()) return false;
    *out = std::move(buffered_.front());
    buffered_.pop_front();
    return true;
  }

  void acknowledge(const wal::Cursor& c) override {
    const std::string text = wal::format_cursor(c);
    retrying([&] { exec("SELECT bitdex_sync.ack_consumer($1, $2)", {o_.consumer, text}, false); });
  }

  std::string where() const override { return "the ops WAL read over libpq (consumer \"" + o_.consumer + "\")"; }

 private:
  void fetch() {
    const std::string after = after_ ? wal::format_cursor(*after_) : std::string();
    PGresult* r =
        exec("SELECT batch_seq, next, bytes FROM bitdex_sync.read_wal($1, $2, $3, $4)",
             {o_.consumer, after, std::to_string(o_.max_bytes), std::to_string(o_.wait_ms)}, true, after_.has_value());
    const int rows = PQntuples(r);
    try {
      for (int i = 0; i < rows; i++) {
        if (PQgetlength(r, i, 0) != 8) throw Error(ErrorKind::Corrupt, "read_wal() returned a bad batch_seq");
        const uint64_t seq = be64(PQgetvalue(r, i, 0));
        const std::string next(PQgetvalue(r, i, 1), static_cast<size_t>(PQgetlength(r, i, 1)));
        std::optional<wal::Cursor> end = wal::parse_cursor(next);
        if (!end) throw Error(ErrorKind::Corrupt, "read_wal() returned a bad cursor \"" + next + "\"");
        wal::WalBatch b =
            wal::decode_batch_bytes(std::string(PQgetvalue(r, i, 2), static_cast<size_t>(PQgetlength(r, i, 2))), seq);
        b.end = *end;
        after_ = *end;
        buffered_.push_back(std::move(b));
      }
    } catch (...) {
      PQclear(r);
      throw;
    }
    PQclear(r);
  }

  // Runs a statement with text parameters ($2 NULL when !second_set) and
  // returns its result (binary columns when `binary`), or throws Transient
  // or Error.
  PGresult* exec(const char* sql, std::vector<std::string> params, bool binary, bool second_set = true) {
    connect();
    std::vector<const char*> values;
    for (size_t i = 0; i < params.size(); i++) values.push_back(i == 1 && !second_set ? nullptr : params[i].c_str());
    PGresult* r = PQexecParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr,
                               binary ? 1 : 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
      if (!binary) {
        PQclear(r);
        return nullptr;
      }
      return r;
    }
    std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = state ? state : "";
    const char* detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : nullptr;
    const char* hint = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) : nullptr;
    const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    const std::string text = primary ? primary : msg;
    const std::string d = detail ? detail : "", h = hint ? hint : "";
    PQclear(r);
    // Shutdown, crash, "cannot connect now", too many connections, a
    // cancelled statement, or the connection itself: try again.
    if (PQstatus(conn_) != CONNECTION_OK || sqlstate.empty() || sqlstate.rfind("08", 0) == 0 ||
        sqlstate.rfind("57P", 0) == 0 || sqlstate == "53300" || sqlstate == "57014")
      throw Transient{msg};
    throw Error(sqlstate == "42501" ? ErrorKind::InsufficientPrivilege : ErrorKind::InvalidInput, "server: " + text, d,
                h);
  }

  void connect() {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return;
    close();
    // Defaults first: the connection string given overrides them.
    const char* keys[] = {"connect_timeout",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "application_name",
                          "dbname",
                          nullptr};
    const char* vals[] = {"10", "10", "5", "3", "bitdex-index", o_.conninfo.c_str(), nullptr};
    conn_ = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn_) == CONNECTION_OK) return;
    std::string msg = conn_ ? PQerrorMessage(conn_) : "out of memory";
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    close();
    if (permanent_connect_failure(msg)) throw Error(ErrorKind::InvalidInput, "cannot connect: " + msg);
    throw Transient{msg};
  }

  void close() {
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
  }

  template <typename Fn>
  void retrying(Fn&& fn) {
    auto backoff = std::chrono::milliseconds(100);
    for (;;) {
      try {
        fn();
        return;
      } catch (const Transient& t) {
        close();
        if (o_.stopping && o_.stopping()) throw Error(ErrorKind::Cancelled, "stopped while reconnecting: " + t.why);
        if (o_.log)
          o_.log("connection lost (" + t.why + "); reconnecting in " + std::to_string(backoff.count()) + " ms");
        for (auto slept = std::chrono::milliseconds(0); slept < backoff; slept += std::chrono::milliseconds(50)) {
          if (o_.stopping && o_.stopping()) throw Error(ErrorKind::Cancelled, "stopped while reconnecting");
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      }
    }
  }

  RemoteOptions o_;
  PGconn* conn_ = nullptr;
  std::optional<wal::Cursor> after_;
  std::deque<wal::WalBatch> buffered_;
};

}  // namespace

std::unique_ptr<BatchSource> remote_source(RemoteOptions options) {
  return std::make_unique<RemoteSource>(std::move(options));
}

}  // namespace bitdex::index
