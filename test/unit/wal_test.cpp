// Ops WAL: round trip, recovery at every truncation point, bit flips,
// rotation, retention, a concurrent follower.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "support/temp_dir.hpp"

using namespace bitdex;
using namespace bitdex::wal;

namespace {

using test::TempDir;

// A batch of n records at outbox positions from, from+1, ...
Batch make_batch(uint64_t from, size_t n) {
  Batch b;
  for (size_t i = 0; i < n; i++) {
    EntityRecord r;
    r.entity_id = static_cast<int64_t>(from + i);
    r.pos = SourcePos{Stream::Outbox, from + i, 0};
    r.creates_slot = i % 2 == 0;
    r.ops = {Op::remove("nsfwLevel", OpValue::int64(4)), Op::set("nsfwLevel", OpValue::int64(8)),
             Op::set("name", OpValue::string("img" + std::to_string(from + i)))};
    b.push_back(std::move(r));
  }
  return b;
}

std::vector<SourcePos> covered_by(const Batch& b) {
  return {b.back().pos};
}

// Appends n batches of `size` records each, positions continuing from 1.
void append_batches(WalWriter& w, uint64_t n, size_t size) {
  for (uint64_t i = 0; i < n; i++) {
    Batch b = make_batch(1 + i * size, size);
    w.append(b, covered_by(b));
  }
}

// Reads every complete batch from the start; stops at Wait.
std::vector<WalBatch> read_all(const std::string& dir) {
  WalReader rd(dir, Cursor{});
  std::vector<WalBatch> out;
  WalBatch b;
  while (rd.next(&b) == ReadStatus::Batch) out.push_back(b);
  return out;
}

void copy_dir(const std::string& from, const std::string& to) {
  ASSERT_EQ(std::system(("rm -rf '" + to + "' && cp -a '" + from + "' '" + to + "'").c_str()), 0);
}

}  // namespace

TEST(Wal, RoundTripAndReopen) {
  TempDir d;
  std::vector<Batch> written;
  {
    auto w = WalWriter::open({d.path()});
    for (uint64_t i = 0; i < 5; i++) {
      Batch b = make_batch(1 + i * 10, 1 + i);
      AppendResult res = w->append(b, covered_by(b));
      EXPECT_EQ(res.batch_seq, i + 1);
      written.push_back(b);
    }
    // An empty batch still advances the mark (its ops were all deduped away).
    w->append({}, {SourcePos{Stream::Outbox, 100, 0}});
    EXPECT_EQ(w->mark(Stream::Outbox).major, 100u);
  }
  auto batches = read_all(d.path());
  ASSERT_EQ(batches.size(), 6u);
  for (size_t i = 0; i < 5; i++) {
    EXPECT_EQ(batches[i].seq, i + 1);
    EXPECT_EQ(batches[i].records, written[i]);
  }
  EXPECT_TRUE(batches[5].records.empty());
  EXPECT_EQ(find_mark(batches[5].marks, Stream::Outbox).major, 100u);

  OpenReport rep;
  auto w = WalWriter::open({d.path()}, &rep);
  EXPECT_FALSE(rep.created);
  EXPECT_EQ(rep.truncated_bytes, 0u);
  EXPECT_EQ(w->mark(Stream::Outbox).major, 100u);
  EXPECT_EQ(w->next_batch_seq(), 7u);
  EXPECT_EQ(w->mark(Stream::Slot).major, 0u);
}

TEST(Wal, RejectsPositionsAtOrBelowTheMark) {
  TempDir d;
  auto w = WalWriter::open({d.path()});
  Batch b = make_batch(1, 3);
  w->append(b, covered_by(b));
  EXPECT_THROW(w->append(make_batch(3, 1), {SourcePos{Stream::Outbox, 3, 0}}), Error);  // replayed position
  EXPECT_THROW(w->append(make_batch(9, 1), {SourcePos{Stream::Outbox, 5, 0}}), Error);  // above what it covers
  EXPECT_THROW(w->append({}, {SourcePos{Stream::Outbox, 2, 0}}), Error);                // mark going back
  Batch ok = make_batch(4, 1);
  EXPECT_NO_THROW(w->append(ok, covered_by(ok)));
}

TEST(Wal, EveryTruncationPointRecovers) {
  TempDir d;
  std::vector<uint64_t> batch_ends;
  {
    auto w = WalWriter::open({d.path()});
    batch_ends.push_back(w->end().offset);
    for (uint64_t i = 0; i < 3; i++) {
      Batch b = make_batch(1 + i * 10, 2);
      batch_ends.push_back(w->append(b, covered_by(b)).end.offset);
    }
  }
  const std::string seg = segment_path(d.path(), 1);
  const std::string full = fileio::read_file(seg);
  TempDir scratch;
  const std::string work = scratch.path() + "/w";
  for (size_t len = batch_ends[0]; len <= full.size(); len++) {
    ASSERT_EQ(std::system(("rm -rf '" + work + "'").c_str()), 0);
    fileio::make_dirs(work);
    {
      std::string path = segment_path(work, 1);
      fileio::Fd fd = fileio::open_file(path, O_WRONLY | O_CREAT, 0600);
      fileio::write_all(fd.get(), full.data(), len, path);
    }
    // The last complete batch at or before len survives; everything after goes.
    size_t complete = 0;
    while (complete + 1 < batch_ends.size() && batch_ends[complete + 1] <= len) complete++;
    OpenReport rep;
    auto w = WalWriter::open({work}, &rep);
    ASSERT_EQ(rep.truncated_bytes, len - batch_ends[complete]) << len;
    ASSERT_EQ(w->end().offset, batch_ends[complete]);
    ASSERT_EQ(w->next_batch_seq(), complete + 1);
    ASSERT_EQ(w->mark(Stream::Outbox).major, complete == 0 ? 0 : (complete - 1) * 10 + 2);
    // The reader sees exactly those batches, and appending goes on cleanly.
    ASSERT_EQ(read_all(work).size(), complete);
    Batch b = make_batch(1000, 2);
    w->append(b, covered_by(b));
    auto all = read_all(work);
    ASSERT_EQ(all.size(), complete + 1);
    ASSERT_EQ(all.back().records, b);
  }
}

TEST(Wal, ReaderWaitsAtAnIncompleteTail) {
  TempDir d;
  auto w = WalWriter::open({d.path()});
  Batch b1 = make_batch(1, 2);
  w->append(b1, covered_by(b1));
  std::string seg = segment_path(d.path(), 1);
  uint64_t end = w->end().offset;
  // Simulate the next batch half-written.
  std::string next;
  append_entity_record(next, make_batch(3, 1)[0]);
  {
    fileio::Fd fd = fileio::open_file(seg, O_WRONLY);
    fileio::pwrite_all(fd.get(), next.data(), next.size() / 2, end, seg);
  }
  WalReader rd(d.path(), Cursor{});
  WalBatch out;
  ASSERT_EQ(rd.next(&out), ReadStatus::Batch);
  EXPECT_EQ(rd.next(&out), ReadStatus::Wait);
  EXPECT_NE(rd.tail_note().find("incomplete batch"), std::string::npos) << rd.tail_note();
  EXPECT_EQ(rd.cursor().offset, end);
  // The writer restarts, cuts the torn bytes and appends: the reader goes on.
  w.reset();
  OpenReport rep;
  w = WalWriter::open({d.path()}, &rep);
  EXPECT_EQ(rep.truncated_bytes, next.size() / 2);
  Batch b2 = make_batch(3, 2);
  w->append(b2, covered_by(b2));
  ASSERT_EQ(rd.next(&out), ReadStatus::Batch);
  EXPECT_EQ(out.records, b2);
}

TEST(Wal, BitFlipsAreDetectedNeverReturned) {
  TempDir d;
  std::vector<Batch> written;
  {
    // Small segments: the flips land in sealed and in active segments.
    auto w = WalWriter::open({d.path(), 4096});
    for (uint64_t i = 0; i < 120; i++) {
      Batch b = make_batch(1 + i * 10, 1 + i % 4);
      w->append(b, covered_by(b));
      written.push_back(b);
    }
  }
  std::vector<uint64_t> gens = list_segments(d.path());
  ASSERT_GT(gens.size(), 3u);
  std::mt19937_64 rng(99);
  TempDir scratch;
  const std::string work = scratch.path() + "/w";
  int detected_by_reader = 0, refused_by_writer = 0;
  for (int trial = 0; trial < 300; trial++) {
    copy_dir(d.path(), work);
    uint64_t g = gens[rng() % gens.size()];
    std::string seg = segment_path(work, g);
    std::string bytes = fileio::read_file(seg);
    size_t at = rng() % bytes.size();
    bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
    {
      fileio::Fd fd = fileio::open_file(seg, O_WRONLY);
      fileio::pwrite_all(fd.get(), bytes.data(), bytes.size(), 0, seg);
    }
    // Whatever the reader returns must be exactly what was written, in order.
    size_t got = 0;
    bool threw = false;
    try {
      WalReader rd(work, Cursor{});
      WalBatch b;
      while (rd.next(&b) == ReadStatus::Batch) {
        ASSERT_LT(got, written.size());
        ASSERT_EQ(b.records, written[got]) << "trial " << trial;
        got++;
      }
    } catch (const Error& e) {
      threw = true;
    }
    ASSERT_TRUE(threw || got < written.size()) << "flip at " << at << " of segment " << g << " went unnoticed";
    detected_by_reader++;
    // The writer either refuses (damage before complete batches) or cuts a
    // damaged last batch of the last segment; it never opens silently intact.
    try {
      OpenReport rep;
      WalWriter::open({work, 4096}, &rep);
      if (g == gens.back()) {
        EXPECT_GT(rep.truncated_bytes, 0u);
      }
    } catch (const Error& e) {
      refused_by_writer++;
    }
  }
  EXPECT_EQ(detected_by_reader, 300);
  EXPECT_GT(refused_by_writer, 0);
}

TEST(Wal, RotationCarriesMarksAndReaderFollows) {
  TempDir d;
  size_t total = 0;
  {
    auto w = WalWriter::open({d.path(), 8192});
    for (uint64_t i = 0; i < 200; i++) {
      Batch b = make_batch(1 + i * 5, 5);
      w->append(b, covered_by(b));
      total += 5;
    }
    EXPECT_GT(w->generation(), 5u);
  }
  std::vector<uint64_t> gens = list_segments(d.path());
  for (size_t i = 0; i < gens.size(); i++) EXPECT_EQ(gens[i], i + 1);
  size_t got = 0;
  uint64_t seq = 0;
  for (const WalBatch& b : read_all(d.path())) {
    EXPECT_EQ(b.seq, ++seq);
    got += b.records.size();
  }
  EXPECT_EQ(got, total);
  // A writer reopened on a just-rotated WAL knows every mark from the header.
  auto w = WalWriter::open({d.path(), 8192});
  EXPECT_EQ(w->mark(Stream::Outbox).major, 1000u);
  // Directory and files are private to the server user.
  struct stat st;
  ASSERT_EQ(::stat(d.path().c_str(), &st), 0);
  ASSERT_EQ(::stat(segment_path(d.path(), 1).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Wal, RetentionWaitsForEveryConsumer) {
  TempDir d;
  auto w = WalWriter::open({d.path(), 4096});
  append_batches(*w, 100, 5);
  std::vector<uint64_t> gens = list_segments(d.path());
  ASSERT_GE(gens.size(), 5u);
  EXPECT_TRUE(remove_consumed_segments(d.path()).removed.empty());  // nobody registered: keep all
  register_consumer(d.path(), "index-a", Cursor{});
  register_consumer(d.path(), "index-b", Cursor{});
  EXPECT_TRUE(remove_consumed_segments(d.path()).removed.empty());
  save_cursor(d.path(), "index-a", Cursor{w->wal_id(), 4, 100});
  save_cursor(d.path(), "index-b", Cursor{w->wal_id(), 2, 100});
  EXPECT_EQ(remove_consumed_segments(d.path()).removed, std::vector<uint64_t>{1});
  save_cursor(d.path(), "index-b", Cursor{w->wal_id(), 5, 0});
  EXPECT_EQ(remove_consumed_segments(d.path()).removed, (std::vector<uint64_t>{2, 3}));
  // Both past everything: the newest segment still stays.
  save_cursor(d.path(), "index-a", Cursor{w->wal_id(), gens.back() + 1, 0});
  save_cursor(d.path(), "index-b", Cursor{w->wal_id(), gens.back() + 1, 0});
  remove_consumed_segments(d.path());
  EXPECT_EQ(list_segments(d.path()), std::vector<uint64_t>{gens.back()});
  // A reader whose segment is gone is told so.
  WalReader late(d.path(), Cursor{w->wal_id(), 1, 0});
  WalBatch b;
  EXPECT_THROW(late.next(&b), Error);
  EXPECT_EQ(list_consumers(d.path()).size(), 2u);
  unregister_consumer(d.path(), "index-a");
  EXPECT_EQ(list_consumers(d.path()).size(), 1u);
  EXPECT_THROW(register_consumer(d.path(), "../evil", Cursor{}), Error);
  EXPECT_FALSE(load_cursor(d.path(), "index-a").has_value());
}

TEST(Wal, SizeLimitMarksAStuckConsumerLaggingInsteadOfKeepingEverything) {
  TempDir d;
  auto w = WalWriter::open({d.path(), 4096});
  append_batches(*w, 100, 5);
  std::vector<uint64_t> gens = list_segments(d.path());
  ASSERT_GE(gens.size(), 6u);
  register_consumer(d.path(), "stuck", Cursor{});                               // needs segment 1
  register_consumer(d.path(), "current", Cursor{w->wal_id(), gens.back(), 0});  // up to date
  // Without a limit the stuck consumer holds every segment.
  EXPECT_TRUE(remove_consumed_segments(d.path()).removed.empty());
  // With room for about two segments, the old ones go and "stuck" is marked.
  RetentionResult r = remove_consumed_segments(d.path(), RetentionLimits{2 * 4096 + 2000});
  EXPECT_EQ(r.now_lagging, std::vector<std::string>{"stuck"});
  std::vector<uint64_t> left = list_segments(d.path());
  EXPECT_LE(left.size(), 3u);
  EXPECT_EQ(left.back(), gens.back());
  for (const ConsumerInfo& c : list_consumers(d.path())) EXPECT_EQ(c.lagging, c.name == "stuck") << c.name;
  // A lagging consumer no longer holds anything back, and is told when it reads.
  EXPECT_TRUE(remove_consumed_segments(d.path(), RetentionLimits{2 * 4096 + 2000}).now_lagging.empty());
  EXPECT_THROW(open_consumer(d.path(), "stuck"), Error);
  WalReader rd(d.path(), *load_cursor(d.path(), "stuck"));
  WalBatch b;
  EXPECT_THROW(rd.next(&b), Error);  // its segment is gone, and a plain reader says so too
  EXPECT_THROW(open_consumer(d.path(), "nobody"), Error);
  WalReader current = open_consumer(d.path(), "current");
  EXPECT_EQ(current.next(&b), ReadStatus::Batch);
  // Re-registering after a rebuild clears the mark.
  unregister_consumer(d.path(), "stuck");
  register_consumer(d.path(), "stuck", Cursor{w->wal_id(), gens.back(), 0});
  for (const ConsumerInfo& c : list_consumers(d.path())) EXPECT_FALSE(c.lagging) << c.name;
}

TEST(Wal, CursorResumesExactlyWhereItStopped) {
  TempDir d;
  auto w = WalWriter::open({d.path(), 4096});
  append_batches(*w, 60, 3);
  WalReader rd(d.path(), Cursor{});
  WalBatch b;
  for (int i = 0; i < 7; i++) ASSERT_EQ(rd.next(&b), ReadStatus::Batch);
  save_cursor(d.path(), "c", rd.cursor());
  WalReader resumed(d.path(), *load_cursor(d.path(), "c"));
  ASSERT_EQ(resumed.next(&b), ReadStatus::Batch);
  EXPECT_EQ(b.seq, 8u);
  // A cursor of another WAL is refused.
  WalReader other(d.path(), Cursor{w->wal_id() + 1, 0, 0});
  EXPECT_THROW(other.next(&b), Error);
}

TEST(Wal, ConcurrentFollowerSeesEveryBatchOnce) {
  TempDir d;
  const int kBatches = 400;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    auto w = WalWriter::open({d.path(), 16384});
    for (int i = 0; i < kBatches; i++) {
      Batch b = make_batch(1 + static_cast<uint64_t>(i) * 4, 4);
      w->append(b, covered_by(b));
    }
    done = true;
  });
  uint64_t seq = 0;
  size_t records = 0;
  WalReader rd(d.path(), Cursor{});
  WalBatch b;
  while (seq < static_cast<uint64_t>(kBatches)) {
    if (rd.next(&b) == ReadStatus::Batch) {
      ASSERT_EQ(b.seq, seq + 1);
      ASSERT_EQ(b.records.front().pos.major, seq * 4 + 1);
      seq = b.seq;
      records += b.records.size();
    } else {
      ASSERT_TRUE(!done || seq < static_cast<uint64_t>(kBatches));
      std::this_thread::yield();
    }
  }
  writer.join();
  EXPECT_EQ(records, static_cast<size_t>(kBatches) * 4);
  EXPECT_EQ(rd.next(&b), ReadStatus::Wait);
}

TEST(Wal, DamageBeforeCompleteBatchesIsRefusedNotTruncated) {
  TempDir d;
  {
    auto w = WalWriter::open({d.path()});
    for (uint64_t i = 0; i < 3; i++) {
      Batch b = make_batch(1 + i * 10, 2);
      w->append(b, covered_by(b));
    }
  }
  std::string seg = segment_path(d.path(), 1);
  std::string bytes = fileio::read_file(seg);
  SegmentHeader h;
  size_t hlen;
  std::string why;
  ASSERT_EQ(decode_segment_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &h, &hlen, &why),
            Parse::Ok);
  bytes[hlen + 40] ^= 0x10;  // inside the first record's payload
  {
    fileio::Fd fd = fileio::open_file(seg, O_WRONLY);
    fileio::pwrite_all(fd.get(), bytes.data(), bytes.size(), 0, seg);
  }
  try {
    WalWriter::open({d.path()});
    FAIL() << "opened a WAL damaged before complete batches";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Corrupt);
    EXPECT_NE(std::string(e.what()).find("complete batches follow"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fileio::read_file(seg).size(), bytes.size());  // nothing cut
  // The reader reports it too, even in the active segment.
  WalReader rd(d.path(), Cursor{});
  WalBatch b;
  EXPECT_THROW(rd.next(&b), Error);
}

// The header and record layouts of docs/wal-format.md at fixed offsets.
TEST(Wal, DocumentedLayout) {
  SegmentHeader h;
  h.wal_id = 0x1122334455667788ull;
  h.generation = 3;
  h.next_batch_seq = 9;
  h.marks = {SourcePos{Stream::Slot, 0x0000000100000028ull, 7}};
  h.database = 16384;
  h.instance = 0xA1B2C3D4E5F60718ull;
  std::string hdr;
  encode_segment_header(hdr, h);
  ASSERT_EQ(hdr.size(), 68u + 16u);
  EXPECT_EQ(hdr.substr(0, 8), "BDXOPWAL");
  EXPECT_EQ(static_cast<uint8_t>(hdr[8]), 3);      // version
  EXPECT_EQ(static_cast<uint8_t>(hdr[12]), 84);    // header length
  EXPECT_EQ(static_cast<uint8_t>(hdr[16]), 0x88);  // WAL id, little-endian
  EXPECT_EQ(static_cast<uint8_t>(hdr[24]), 3);     // generation
  EXPECT_EQ(static_cast<uint8_t>(hdr[32]), 9);     // first batch
  EXPECT_EQ(static_cast<uint8_t>(hdr[40]), 1);     // marks
  EXPECT_EQ(static_cast<uint8_t>(hdr[44]), 0x00);  // database 16384 = 0x4000
  EXPECT_EQ(static_cast<uint8_t>(hdr[45]), 0x40);
  EXPECT_EQ(static_cast<uint8_t>(hdr[48]), 0x18);  // instance, little-endian
  EXPECT_EQ(static_cast<uint8_t>(hdr[55]), 0xA1);
  EXPECT_EQ(hdr.substr(56, 8), std::string(8, '\0'));  // reserved
  EXPECT_EQ(static_cast<uint8_t>(hdr[64]), 1);         // mark stream: slot
  EXPECT_EQ(static_cast<uint8_t>(hdr[68]), 7);         // mark minor
  EXPECT_EQ(static_cast<uint8_t>(hdr[72]), 0x28);      // mark major low byte
  EXPECT_EQ(static_cast<uint8_t>(hdr[76]), 0x01);      // mark major byte 4
  SegmentHeader back;
  size_t hlen = 0;
  std::string why;
  ASSERT_EQ(decode_segment_header(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size(), &back, &hlen, &why),
            Parse::Ok);
  EXPECT_EQ(back.database, 16384u);
  EXPECT_EQ(back.instance, h.instance);
  EXPECT_EQ(hlen, hdr.size());

  // Version 1 (no database, no instance; marks at 48) is still read.
  std::string v1 = hdr.substr(0, 48) + hdr.substr(64, 16);
  v1[8] = 1;
  v1[12] = 68;
  v1.replace(44, 4, std::string(4, '\0'));
  uint32_t c1 = crc32c(v1.data(), v1.size());
  for (int i = 0; i < 4; i++) v1 += static_cast<char>(c1 >> (8 * i));
  ASSERT_EQ(decode_segment_header(reinterpret_cast<const uint8_t*>(v1.data()), v1.size(), &back, &hlen, &why),
            Parse::Ok)
      << why;
  EXPECT_EQ(back.instance, 0u);
  EXPECT_EQ(back.database, 0u);
  EXPECT_EQ(back.wal_id, h.wal_id);
  EXPECT_EQ(back.marks.at(0), h.marks.at(0));

  EntityRecord r;
  r.entity_id = -2;
  r.creates_slot = true;
  r.pos = SourcePos{Stream::Outbox, 300, 0};
  r.ops = {Op::del()};
  std::string rec;
  append_entity_record(rec, r);
  ASSERT_EQ(rec.size(), 32u + 2u);               // header + payload [count 1, kind 4]
  EXPECT_EQ(static_cast<uint8_t>(rec[0]), 34);   // length
  EXPECT_EQ(static_cast<uint8_t>(rec[8]), 1);    // type entity
  EXPECT_EQ(static_cast<uint8_t>(rec[9]), 1);    // creates_slot
  EXPECT_EQ(static_cast<uint8_t>(rec[10]), 2);   // outbox
  EXPECT_EQ(static_cast<uint8_t>(rec[16]), 44);  // 300 = 0x012C
  EXPECT_EQ(static_cast<uint8_t>(rec[17]), 1);
  EXPECT_EQ(static_cast<uint8_t>(rec[24]), 0xFE);  // -2
  EXPECT_EQ(static_cast<uint8_t>(rec[31]), 0xFF);
  EXPECT_EQ(rec.substr(32), std::string("\x01\x04", 2));
  uint32_t crc = 0;
  for (int i = 3; i >= 0; i--) crc = (crc << 8) | static_cast<uint8_t>(rec[4 + i]);
  EXPECT_EQ(crc, crc32c(rec.data() + 8, rec.size() - 8));
}

TEST(Wal, OneWriterPerDirectory) {
  TempDir d;
  auto w = WalWriter::open({d.path()});
  try {
    WalWriter::open({d.path()});
    FAIL() << "a second writer opened the same directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another writer"), std::string::npos) << e.what();
  }
  w.reset();  // released: the next writer gets it
  EXPECT_NO_THROW(WalWriter::open({d.path()}));
}
