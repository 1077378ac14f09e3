// Segment listing, durable consumer cursors and cursor-driven retention.
#include "bitdex_sync/core/wal_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_format.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::wal {
namespace {

constexpr char kCursorMagic[8] = {'B', 'D', 'X', 'C', 'U', 'R', '0', '1'};
constexpr size_t kCursorSize = 36;
const char* const kConsumersDir = "consumers";
const char* const kCursorSuffix = ".cursor";
const char* const kLaggingSuffix = ".lagging";
// A consumer registered at the WAL's end that no index has saved a cursor
// for yet: a new index starts at its cursor, not at batch 1.
const char* const kAtEndSuffix = ".at_end";

std::string consumers_dir(const std::string& dir) {
  return dir + "/" + kConsumersDir;
}

std::string encode_cursor(const Cursor& c) {
  std::string out(kCursorMagic, 8);
  for (uint64_t v : {c.wal_id, c.generation, c.offset})
    for (int i = 0; i < 8; i++) out += static_cast<char>(v >> (8 * i));
  uint32_t crc = crc32c(out.data(), out.size());
  for (int i = 0; i < 4; i++) out += static_cast<char>(crc >> (8 * i));
  return out;
}

Cursor decode_cursor(const std::string& bytes, const std::string& path) {
  auto u = [&](size_t at, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
    return v;
  };
  if (bytes.size() != kCursorSize || std::memcmp(bytes.data(), kCursorMagic, 8) != 0 ||
      u(32, 4) != crc32c(bytes.data(), 32))
    throw Error(ErrorKind::Corrupt, "consumer cursor file \"" + path + "\" is corrupt");
  return Cursor{u(8, 8), u(16, 8), u(24, 8)};
}

}  // namespace

std::string wal_id_hex(uint64_t wal_id) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(wal_id));
  return hex;
}

std::string format_cursor(const Cursor& c) {
  return wal_id_hex(c.wal_id) + "/" + std::to_string(c.generation) + "/" + std::to_string(c.offset);
}

std::optional<Cursor> parse_cursor(const std::string& text) {
  // Strictly digits where digits belong: strtoull alone would take signs and spaces.
  auto field = [&](size_t from, size_t to, int base, uint64_t* out) {
    if (to <= from || to - from > (base == 16 ? 16u : 20u)) return false;
    for (size_t i = from; i < to; i++)
      if (!(std::isdigit(static_cast<unsigned char>(text[i])) ||
            (base == 16 && std::isxdigit(static_cast<unsigned char>(text[i])))))
        return false;
    errno = 0;
    *out = std::strtoull(text.substr(from, to - from).c_str(), nullptr, base);
    return errno == 0;
  };
  const size_t a = text.find('/'), b = a == std::string::npos ? a : text.find('/', a + 1);
  Cursor c;
  if (b == std::string::npos || !field(0, a, 16, &c.wal_id) || !field(a + 1, b, 10, &c.generation) ||
      !field(b + 1, text.size(), 10, &c.offset))
    return std::nullopt;
  return c;
}

std::string segment_path(const std::string& dir, uint64_t generation) {
  return dir + "/" + segment_file_name(generation);
}

std::vector<uint64_t> list_segments(const std::string& dir) {
  std::vector<uint64_t> gens;
  for (const std::string& n : fileio::list_dir(dir))
    if (uint64_t g = parse_segment_file_name(n)) gens.push_back(g);
  std::sort(gens.begin(), gens.end());
  return gens;
}

SegmentHeader segment_header(const std::string& dir, uint64_t generation) {
  const std::string path = segment_path(dir, generation);
  fileio::Fd fd = fileio::open_file(path, O_RDONLY);
  std::string head(kSegmentHeaderFixed + kMarkSize * kMaxMarks + 4, '\0');
  head.resize(fileio::pread_full(fd.get(), head.data(), head.size(), 0, path));
  SegmentHeader h;
  size_t hlen = 0;
  std::string why;
  if (decode_segment_header(reinterpret_cast<const uint8_t*>(head.data()), head.size(), &h, &hlen, &why) != Parse::Ok)
    throw Error(ErrorKind::Corrupt,
                "ops WAL segment \"" + path + "\" has a bad header" + (why.empty() ? "" : ": " + why));
  return h;
}

std::optional<SegmentHeader> newest_header(const std::string& dir) {
  if (!fileio::exists(dir)) return std::nullopt;
  std::vector<uint64_t> gens = list_segments(dir);
  if (gens.empty()) return std::nullopt;
  return segment_header(dir, gens.back());
}

std::string retire_dir(const std::string& dir, uint64_t wal_id) {
  std::string base = dir + ".retired-" + wal_id_hex(wal_id), to = base;
  for (int n = 2; fileio::exists(to); n++) to = base + "-" + std::to_string(n);
  if (::rename(dir.c_str(), to.c_str()) != 0) throw_io_error("rename directory", dir, errno);
  const size_t slash = dir.find_last_of('/');
  fileio::fsync_dir(slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash)));
  return to;
}

void validate_consumer_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.';
  for (char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                c == '.');
  if (!ok)
    throw Error(ErrorKind::InvalidInput, "invalid consumer name \"" + name + "\"", {},
                "Use 1 to 64 characters from A-Z, a-z, 0-9, '_', '-' and '.', not starting with '.'.");
}

void register_consumer(const std::string& dir, const std::string& name, const Cursor& start) {
  validate_consumer_name(name);
  fileio::make_dirs(consumers_dir(dir));
  if (load_cursor(dir, name)) return;
  Cursor c = start;
  // "From the oldest" is bound to the oldest segment there is now, so later
  // retention can never make this consumer start further on without noticing.
  if (c.generation == 0 && fileio::exists(dir)) {
    std::vector<uint64_t> gens = list_segments(dir);
    if (!gens.empty()) c.generation = gens.front();
  }
  save_cursor(dir, name, c);
}

void save_cursor(const std::string& dir, const std::string& name, const Cursor& c) {
  validate_consumer_name(name);
  fileio::make_dirs(consumers_dir(dir));
  fileio::write_file_atomic(consumers_dir(dir), name + kCursorSuffix, encode_cursor(c));
  const std::string at_end = consumers_dir(dir) + "/" + name + kAtEndSuffix;
  if (::unlink(at_end.c_str()) == 0) fileio::fsync_dir(consumers_dir(dir));
}

void register_consumer_at(const std::string& dir, const std::string& name, const Cursor& at) {
  save_cursor(dir, name, at);
  fileio::write_file_atomic(consumers_dir(dir), name + kAtEndSuffix, "");
}

bool registered_at_end(const std::string& dir, const std::string& name) {
  validate_consumer_name(name);
  return fileio::exists(consumers_dir(dir) + "/" + name + kAtEndSuffix);
}

std::optional<Cursor> load_cursor(const std::string& dir, const std::string& name) {
  validate_consumer_name(name);
  std::string path = consumers_dir(dir) + "/" + name + kCursorSuffix;
  if (!fileio::exists(path)) return std::nullopt;
  return decode_cursor(fileio::read_file(path), path);
}

void unregister_consumer(const std::string& dir, const std::string& name) {
  validate_consumer_name(name);
  for (const char* suffix : {kCursorSuffix, kLaggingSuffix, kAtEndSuffix}) {
    std::string path = consumers_dir(dir) + "/" + name + suffix;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_io_error("remove file", path, errno);
  }
  if (fileio::exists(consumers_dir(dir))) fileio::fsync_dir(consumers_dir(dir));
}

std::vector<ConsumerInfo> list_consumers(const std::string& dir) {
  std::vector<ConsumerInfo> out;
  std::string cdir = consumers_dir(dir);
  if (!fileio::exists(cdir)) return out;
  const size_t slen = std::strlen(kCursorSuffix);
  for (const std::string& n : fileio::list_dir(cdir)) {
    if (n.size() <= slen || n.compare(n.size() - slen, slen, kCursorSuffix) != 0) continue;
    ConsumerInfo c;
    c.name = n.substr(0, n.size() - slen);
    c.cursor = decode_cursor(fileio::read_file(cdir + "/" + n), cdir + "/" + n);
    c.lagging = fileio::exists(cdir + "/" + c.name + kLaggingSuffix);
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

RetentionResult remove_consumed_segments(const std::string& dir, const RetentionLimits& limits,
                                         const std::vector<ConsumerInfo>& others) {
  RetentionResult res;
  std::vector<uint64_t> gens = list_segments(dir);
  struct Seg {
    uint64_t gen, bytes;
    int64_t mtime;
  };
  std::vector<Seg> segs;
  for (uint64_t g : gens) {
    struct stat st;
    const std::string path = segment_path(dir, g);
    if (::stat(path.c_str(), &st) != 0) throw_io_error("stat", path, errno);
    segs.push_back(Seg{g, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)});
  }
  if (segs.size() < 2) return res;
  std::vector<ConsumerInfo> consumers = list_consumers(dir);
  const size_t local = consumers.size();
  consumers.insert(consumers.end(), others.begin(), others.end());
  // The oldest segment each live consumer needs; generation 0 means "not
  // started", which needs the oldest segment.
  auto needs = [&](const ConsumerInfo& c) { return c.cursor.generation == 0 ? gens.front() : c.cursor.generation; };
  uint64_t keep_from = gens.back();  // the newest segment always stays
  bool any_live = false;
  for (const ConsumerInfo& c : consumers) {
    if (c.lagging) continue;
    any_live = true;
    keep_from = std::min(keep_from, needs(c));
  }
  // The oldest generation the limits let stay: the newest segments that fit
  // max_bytes, and none last written before now - max_age.
  uint64_t limit_from = gens.front();
  std::string why;
  if (limits.max_bytes > 0) {
    uint64_t total = 0;
    for (size_t i = segs.size(); i-- > 0;) {
      total += segs[i].bytes;
      if (total > limits.max_bytes && i + 1 < segs.size()) {
        limit_from = segs[i + 1].gen;
        why = "removed by the size limit (" + std::to_string(limits.max_bytes) + " bytes)";
        break;
      }
    }
  }
  if (limits.max_age_seconds > 0) {
    for (size_t i = 0; i + 1 < segs.size(); i++) {
      if (segs[i].mtime + static_cast<int64_t>(limits.max_age_seconds) >= limits.now) break;
      if (segs[i + 1].gen > limit_from) {
        limit_from = segs[i + 1].gen;
        why = "removed by the age limit (" + std::to_string(limits.max_age_seconds) + " s)";
      }
    }
  }
  if (!any_live) keep_from = limit_from;
  if (keep_from < limit_from) {
    for (size_t i = 0; i < consumers.size(); i++) {
      const ConsumerInfo& c = consumers[i];
      if (c.lagging || needs(c) >= limit_from) continue;
      const std::string reason = "segment " + std::to_string(needs(c)) + " " + why;
      if (i < local) {
        fileio::write_file_atomic(consumers_dir(dir), c.name + kLaggingSuffix, reason + "\n");
        res.now_lagging.push_back(c.name);
      } else {
        res.others_lagging.emplace_back(c.name, reason);
      }
    }
    keep_from = limit_from;
  }
  for (uint64_t g : gens) {
    if (g >= keep_from) break;
    std::string path = segment_path(dir, g);
    if (::unlink(path.c_str()) != 0) throw_io_error("remove segment", path, errno);
    res.removed.push_back(g);
  }
  if (!res.removed.empty()) fileio::fsync_dir(dir);
  return res;
}

}  // namespace bitdex::wal
