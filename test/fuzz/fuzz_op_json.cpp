// Fuzzes the op JSON parser: anything either parses or throws bitdex::Error;
// what parses survives JSON -> model -> JSON -> model and the binary codec,
// and dedup accepts it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/ops_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  bitdex::Batch batch;
  try {
    batch = bitdex::parse_batch(text);
  } catch (const bitdex::Error&) {
    return 0;
  }
  std::string once = bitdex::batch_to_json(batch);
  bitdex::Batch again = bitdex::parse_batch(once);
  if (!(again == batch) || bitdex::batch_to_json(again) != once) std::abort();
  for (const auto& r : batch) {
    std::string bin;
    bitdex::codec::encode_ops(bin, r.ops);
    if (bitdex::codec::decode_ops(reinterpret_cast<const uint8_t*>(bin.data()), bin.size()) != r.ops) std::abort();
  }
  bitdex::dedup(std::move(batch));
  return 0;
}
