// SPDX-License-Identifier: MIT
//
// The read walk over any valid table and any reads: every piece lies inside its extent and inside
// the file, pieces follow each other without gap or overlap, they sum to exactly what the read may
// return (min(length, size - offset), 0 past the end), CountPieces says how many there are, and a
// compressed piece is found inside its block only when the block really holds it.
//
// Input: u16le extent count, then per extent u8 kind and u32le length (0 counts as 1; compressed
// extents get skip = u8 and a block length of skip + length + u8 slack); then reads, each u64le
// offset and u32le length, until the input ends. Seeds: the extent lengths of fixture images'
// tables (fixtures/fuzz-seeds.ts) with reads at their boundaries.
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/read_walk.h"
#include "fuzz_check.h"
#include "fuzz_input.h"

using synthvhd::Extent;
using synthvhd::ExtentKind;
using synthvhd::Piece;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in{data, size};
  uint16_t count = 0;
  if (!in.Take(&count, 2) || count == 0) return 0;
  std::vector<Extent> extents;
  extents.reserve(count);
  uint64_t position = 0;
  for (uint16_t i = 0; i < count; i++) {
    uint8_t kind = 0;
    uint32_t length = 0;
    if (!in.Take(&kind, 1) || !in.Take(&length, 4)) break;
    Extent extent{};
    extent.start = position;
    extent.length = length == 0 ? 1 : length;
    extent.kind = static_cast<ExtentKind>(kind % 4);
    if (extent.kind == ExtentKind::kCompressed) {
      extent.skip = kind >> 2;
      extent.block_length = extent.skip + extent.length + (kind & 3);
    }
    position += extent.length;
    extents.push_back(extent);
  }
  if (extents.empty()) return 0;
  uint64_t file_size = position;
  for (;;) {
    uint64_t offset = 0;
    uint32_t length = 0;
    if (!in.Take(&offset, 8) || !in.Take(&length, 4)) break;
    // Most reads land inside the file; some past its end.
    if (offset > file_size + 4096) offset %= file_size + 4096;
    synthvhd::ReadWalk walk(extents, file_size, offset, length);
    uint64_t expected = offset >= file_size ? 0 : (file_size - offset < length ? file_size - offset : length);
    FUZZ_CHECK(walk.total() == expected);
    size_t promised = walk.CountPieces();
    size_t pieces = 0;
    uint64_t sum = 0;
    Piece piece;
    while (walk.Next(&piece)) {
      FUZZ_CHECK(piece.extent < extents.size());
      const Extent& extent = extents[piece.extent];
      FUZZ_CHECK(piece.length > 0);
      FUZZ_CHECK(piece.at == sum);
      FUZZ_CHECK(piece.skip < extent.length && piece.length <= extent.length - piece.skip);
      FUZZ_CHECK(extent.start + piece.skip == offset + piece.at);
      if (extent.kind == ExtentKind::kCompressed) {
        uint64_t from = 0;
        FUZZ_CHECK(synthvhd::PieceInBlock(extent, piece, extent.block_length, &from));
        FUZZ_CHECK(from + piece.length <= extent.block_length);
        // A block shorter than the extent claims (a damaged index) must never be read past.
        uint64_t short_block = from + piece.length - 1;
        FUZZ_CHECK(!synthvhd::PieceInBlock(extent, piece, short_block, &from));
      }
      sum += piece.length;
      pieces++;
    }
    FUZZ_CHECK(sum == expected);
    FUZZ_CHECK(pieces == promised);
  }
  return 0;
}
