// SPDX-License-Identifier: MIT
//
// ValidateExtents on any numbers: it accepts or refuses with a reason, never crashes, and what it
// accepts is a table the read walk may trust (contiguous from 0 to the size, no empty extent,
// bytes inside the blob, sources that exist, compressed pieces inside their bounded block).
//
// Input: f64le size, u32le blob size, u32le source count, then f64le numbers (7 per extent), as
// JavaScript's packLayout hands them over (src/fuse/native-session.ts). Seeds: real tables of
// fixture images (fixtures/fuzz-seeds.ts).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../src/extent_table.h"
#include "../src/record_codec.h"
#include "fuzz_check.h"

using synthvhd::Extent;
using synthvhd::ExtentKind;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 16) return 0;
  double file_size;
  uint32_t blob_size;
  uint32_t source_count;
  std::memcpy(&file_size, data, 8);
  std::memcpy(&blob_size, data + 8, 4);
  std::memcpy(&source_count, data + 12, 4);
  size_t count = (size - 16) / 8;
  std::vector<double> numbers(count);
  if (count > 0) std::memcpy(numbers.data(), data + 16, count * 8);
  std::vector<Extent> extents;
  std::string why;
  bool ok = synthvhd::ValidateExtents(numbers.data(), numbers.size(), file_size, blob_size, source_count, &extents, &why);
  if (!ok) {
    FUZZ_CHECK(!why.empty());
    return 0;
  }
  FUZZ_CHECK(!extents.empty());
  uint64_t total = static_cast<uint64_t>(file_size);
  uint64_t position = 0;
  for (const Extent& extent : extents) {
    FUZZ_CHECK(extent.start == position);
    FUZZ_CHECK(extent.length > 0 && extent.length <= total - position);
    switch (extent.kind) {
      case ExtentKind::kZero:
        break;
      case ExtentKind::kBytes:
        FUZZ_CHECK(extent.offset <= blob_size && extent.length <= blob_size - extent.offset);
        break;
      case ExtentKind::kFile:
        FUZZ_CHECK(extent.source < source_count);
        FUZZ_CHECK(extent.offset < (1ull << 53));
        break;
      case ExtentKind::kCompressed:
        FUZZ_CHECK(extent.source < source_count);
        FUZZ_CHECK(extent.block_length <= synthvhd::codec::kMaxDecodedBytes);
        FUZZ_CHECK(extent.skip <= extent.block_length && extent.length <= extent.block_length - extent.skip);
        break;
      default:
        FUZZ_CHECK(false);
    }
    position += extent.length;
  }
  FUZZ_CHECK(position == total);
  return 0;
}
