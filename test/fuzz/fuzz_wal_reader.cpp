// Fuzzes the ops WAL reader and the writer's recovery on arbitrary segment
// bytes. The first input byte picks the mode: even, the bytes follow a valid
// segment header (reaching the record parser); odd, they are the whole file.
// Properties: no crash or sanitizer report; only bitdex::Error escapes; after
// the writer's recovery the reader returns the same batches as before it, and
// a batch appended after recovery reads back.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/core/wal_writer.hpp"

using namespace bitdex;
using namespace bitdex::wal;

namespace {

const std::string& dir() {
  // tmpfs when there is one: fsync is nearly free there, so the fuzzer spends
  // its time in the parser rather than waiting on the disk.
  static std::string d = [] {
    char shm[] = "/dev/shm/bitdex_fuzz_wal_XXXXXX";
    char tmp[] = "/tmp/bitdex_fuzz_wal_XXXXXX";
    char* made = ::mkdtemp(shm);
    return std::string(made ? made : ::mkdtemp(tmp));
  }();
  return d;
}

std::vector<Batch> read_batches(bool* threw) {
  std::vector<Batch> out;
  *threw = false;
  try {
    WalReader rd(dir(), Cursor{});
    WalBatch b;
    while (rd.next(&b) == ReadStatus::Batch) out.push_back(b.records);
  } catch (const Error&) {
    *threw = true;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string file;
  if ((data[0] & 1) == 0) {
    SegmentHeader h;
    h.wal_id = 1;
    h.generation = 1;
    encode_segment_header(file, h);
  }
  file.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string path = segment_path(dir(), 1);
  for (const std::string& n : fileio::list_dir(dir())) ::unlink((dir() + "/" + n).c_str());
  {
    fileio::Fd fd = fileio::open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fileio::write_all(fd.get(), file.data(), file.size(), path);
  }
  bool threw_before = false, threw_after = false;
  std::vector<Batch> before = read_batches(&threw_before);
  try {
    auto w = WalWriter::open({dir(), 1 << 20});
    std::vector<Batch> after = read_batches(&threw_after);
    // Recovery cuts only what the reader could not return.
    if (threw_after || after.size() != before.size()) std::abort();
    for (size_t i = 0; i < after.size(); i++)
      if (!(after[i] == before[i])) std::abort();
    EntityRecord r;
    r.entity_id = 42;
    r.pos = SourcePos{Stream::Outbox, w->mark(Stream::Outbox).major + 1, 0};
    r.ops.push_back(Op::set("f", OpValue::int64(1)));
    w->append({r}, {r.pos});
    std::vector<Batch> appended = read_batches(&threw_after);
    if (threw_after || appended.size() != before.size() + 1 || !(appended.back()[0] == r)) std::abort();
  } catch (const Error&) {
    // The writer refused a damaged WAL: fine, as long as it said so.
  }
  return 0;
}
