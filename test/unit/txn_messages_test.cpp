// Messages of transactions in progress: WAL order across subtransactions,
// aborts and crashed transactions dropped, spilling under a memory bound,
// spill files cleaned up; a property test against a plain model.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/txn_messages.hpp"
#include "support/temp_dir.hpp"

using bitdex::pipeline::TxnMessages;
using bitdex::test::TempDir;

namespace {

void add(TxnMessages& m, uint32_t xid, uint64_t lsn, const std::string& s) {
  m.add(xid, lsn, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// "lsn:text" for each message of the committed transaction, in order.
std::vector<std::string> commit(TxnMessages& m, uint32_t top, std::vector<uint32_t> subs = {}) {
  std::vector<std::string> out;
  m.open(top, subs.data(), subs.size());
  uint64_t lsn;
  const uint8_t* data;
  size_t size;
  while (m.next(&lsn, &data, &size))
    out.push_back(std::to_string(lsn) + ":" + std::string(reinterpret_cast<const char*>(data), size));
  m.close();
  return out;
}

size_t spill_files(const std::string& dir) {
  size_t n = 0;
  for (const std::string& name : bitdex::fileio::list_dir(dir)) n += name.find(".spill") != std::string::npos;
  return n;
}

TEST(TxnMessages, CommitReadsTheTransactionAndItsSubtransactionsInWalOrder) {
  TempDir dir;
  TxnMessages m(dir.path(), 1 << 20);
  add(m, 10, 100, "a");
  add(m, 11, 110, "other");
  add(m, 12, 120, "sub-b");
  add(m, 10, 130, "c");
  add(m, 12, 140, "sub-d");
  add(m, 13, 150, "aborted sub");
  m.forget(13, nullptr, 0);  // ROLLBACK TO SAVEPOINT
  EXPECT_EQ(commit(m, 10, {12, 13}), (std::vector<std::string>{"100:a", "120:sub-b", "130:c", "140:sub-d"}));
  EXPECT_EQ(m.transactions(), 1u);
  EXPECT_EQ(commit(m, 11), (std::vector<std::string>{"110:other"}));
  EXPECT_EQ(m.transactions(), 0u);
  EXPECT_EQ(m.memory(), 0u);
  EXPECT_TRUE(commit(m, 99).empty()) << "a transaction without messages";
}

TEST(TxnMessages, AbortDropsTheTransactionWithItsSubtransactions) {
  TempDir dir;
  TxnMessages m(dir.path(), 1 << 20);
  add(m, 20, 1, "x");
  add(m, 21, 2, "y");
  add(m, 22, 3, "z");
  uint32_t subs[] = {21};
  m.forget(20, subs, 1);
  EXPECT_EQ(m.transactions(), 1u);
  EXPECT_EQ(commit(m, 22), (std::vector<std::string>{"3:z"}));
}

TEST(TxnMessages, TransactionsOlderThanTheOldestRunningAreDropped) {
  TempDir dir;
  TxnMessages m(dir.path(), 1 << 20);
  // Across the wrap of the 32-bit counter: 0xFFFFFFF0 precedes 5.
  add(m, 0xFFFFFFF0u, 1, "crashed before the wrap");
  add(m, 3, 2, "crashed");
  add(m, 7, 3, "running");
  m.forget_older_than(5);
  EXPECT_EQ(m.transactions(), 1u);
  EXPECT_EQ(commit(m, 7), (std::vector<std::string>{"3:running"}));
}

TEST(TxnMessages, ALargeTransactionSpillsAndIsReadBackWhole) {
  TempDir dir;
  TxnMessages m(dir.path(), 4096);
  std::vector<std::string> want;
  for (int i = 0; i < 5000; i++) {
    std::string s = "message " + std::to_string(i) + std::string(i % 50, 'x');
    add(m, 30, 1000 + i, s);
    want.push_back(std::to_string(1000 + i) + ":" + s);
    if (i % 1000 == 0) add(m, 31, 1000 + i, "small");  // a second one, smaller
    EXPECT_LE(m.memory(), 4096u);
  }
  EXPECT_GT(m.spills(), 10u);
  EXPECT_EQ(spill_files(dir.path()), 1u) << "only the largest spilled";
  EXPECT_EQ(commit(m, 30), want);
  EXPECT_EQ(spill_files(dir.path()), 0u) << "its file goes with it";
  EXPECT_EQ(commit(m, 31).size(), 5u);
}

TEST(TxnMessages, SpillFilesGoWithAbortsAndTheObjectAndLeftoversAtStart) {
  TempDir dir;
  {
    TxnMessages m(dir.path(), 64);
    for (int i = 0; i < 100; i++) add(m, 40, i, "0123456789");
    for (int i = 0; i < 100; i++) add(m, 41, 100 + i, "0123456789");
    EXPECT_EQ(spill_files(dir.path()), 2u);
    m.forget(40, nullptr, 0);
    EXPECT_EQ(spill_files(dir.path()), 1u);
  }
  EXPECT_EQ(spill_files(dir.path()), 0u);
  bitdex::fileio::write_file_atomic(dir.path(), "bitdex-77.spill", "left by a crash");
  bitdex::fileio::write_file_atomic(dir.path(), "state", "not ours");
  TxnMessages again(dir.path(), 64);
  EXPECT_EQ(spill_files(dir.path()), 0u);
  EXPECT_TRUE(bitdex::fileio::exists(dir.path() + "/state"));
}

// Random interleavings of transactions with subtransactions, aborts and
// commits, under memory bounds small enough to spill often: every commit
// reads exactly what a plain model says, in LSN order.
TEST(TxnMessages, PropertyMatchesAModel) {
  std::mt19937 rng(20261122);
  for (int round = 0; round < 200; round++) {
    TempDir dir;
    const size_t bound = std::uniform_int_distribution<size_t>(0, 2000)(rng);
    TxnMessages m(dir.path(), bound);
    std::map<uint32_t, std::vector<std::string>> model;  // xid -> "lsn:text"
    std::map<uint32_t, std::vector<uint32_t>> subs;      // top -> subtransactions
    uint32_t next_xid = 100;
    uint64_t lsn = 1;
    std::vector<uint32_t> tops;
    for (int step = 0; step < 300; step++) {
      const int what = std::uniform_int_distribution<int>(0, 9)(rng);
      if (tops.empty() || what < 2) {
        tops.push_back(next_xid++);
        continue;
      }
      const uint32_t top = tops[std::uniform_int_distribution<size_t>(0, tops.size() - 1)(rng)];
      if (what < 7) {  // a message, in the transaction or a new or existing subtransaction
        uint32_t xid = top;
        if (what == 6) {
          if (subs[top].empty() || rng() % 2) subs[top].push_back(next_xid++);
          xid = subs[top][rng() % subs[top].size()];
        }
        std::string s(std::uniform_int_distribution<int>(0, 40)(rng), char('a' + rng() % 26));
        add(m, xid, lsn, s);
        model[xid].push_back(std::to_string(lsn) + ":" + s);
        lsn++;
      } else if (what == 7 && !subs[top].empty()) {  // a subtransaction rolls back
        const uint32_t sub = subs[top].back();
        subs[top].pop_back();
        m.forget(sub, nullptr, 0);
        model.erase(sub);
      } else {  // commit or abort
        std::vector<std::string> want = model[top];
        for (uint32_t s : subs[top]) want.insert(want.end(), model[s].begin(), model[s].end());
        std::sort(want.begin(), want.end(), [](const std::string& a, const std::string& b) {
          return std::stoull(a.substr(0, a.find(':'))) < std::stoull(b.substr(0, b.find(':')));
        });
        if (what == 8) {
          ASSERT_EQ(commit(m, top, subs[top]), want) << "round " << round << " step " << step;
        } else {
          m.forget(top, subs[top].data(), subs[top].size());
        }
        model.erase(top);
        for (uint32_t s : subs[top]) model.erase(s);
        subs.erase(top);
        tops.erase(std::find(tops.begin(), tops.end(), top));
      }
      ASSERT_LE(m.memory(), bound) << "bounded";
    }
    for (uint32_t top : tops) m.forget(top, subs[top].data(), subs[top].size());
    EXPECT_EQ(m.transactions(), 0u);
    EXPECT_EQ(m.memory(), 0u);
  }
}

}  // namespace
