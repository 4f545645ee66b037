// SPDX-License-Identifier: MIT
//
// The extent table of one open virtual file, and its validation. JavaScript packs a layout as a
// Float64Array of 7 numbers per extent (src/fuse/native-session.ts packLayout):
//   kind (0 zero, 1 bytes, 2 file, 3 compressed), start, length, a, b, c, d
//   bytes:      a = offset in the blob
//   file:       a = source index, b = offset in the source
//   compressed: a = source index, b = record offset, c = the block's decoded length, d = skip
//   chain:      a = chain index (Table::chains), b = offset in the chain's disk
// Every number is checked here, once per open, so the read walk may trust the table: extents are
// contiguous from 0 to the size, none is empty, bytes lie inside the blob, sources exist, a
// compressed extent lies inside its block and its block is within the codec's bound, and no sum
// of two checked numbers can overflow (all are safe integers, < 2^53).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace synthvhd {

constexpr size_t kNumbersPerExtent = 7;
// JavaScript's Number.MAX_SAFE_INTEGER: every offset and length is at most this.
constexpr double kMaxSafeInteger = 9007199254740991.0;

enum class ExtentKind : uint8_t { kZero = 0, kBytes = 1, kFile = 2, kCompressed = 3, kChain = 4 };

struct Extent {
  uint64_t start;
  uint64_t length;
  ExtentKind kind;
  uint32_t source;        // file, compressed: index into Table::sources; chain: into Table::chains
  uint64_t offset;        // bytes: offset in Table::blob; file: offset in the source; compressed: record;
                          // chain: offset in the chain's disk
  uint64_t block_length;  // compressed: decoded length of the block
  uint64_t skip;          // compressed: where this extent's bytes begin in the decoded block
};

// Checks `numbers` (count numbers, 7 per extent) against a file of `size` bytes, a blob of
// `blob_size` bytes, `source_count` sources and chains of the disk sizes `chain_sizes`. True with
// the extents in *out, or false with a one-line reason in *why (nothing is allocated beyond one
// Extent per 7 numbers given).
bool ValidateExtents(const double* numbers, size_t count, double size, size_t blob_size, size_t source_count, std::vector<Extent>* out,
                     std::string* why, const std::vector<uint64_t>& chain_sizes = {});

// A file an open virtual file reads (dup()ed: the handle keeps reading what it was opened on).
struct Source {
  int fd = -1;
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t mtime_ns = 0;
  Source() = default;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;
  ~Source();
};

struct ChainShape;

// A chain an open file reads: its shape (shared by every open of the disk) and, per file of the
// chain, the index of that file in Table::sources.
struct TableChain {
  std::shared_ptr<const ChainShape> shape;
  std::vector<uint32_t> sources;
};

// The extent table of one open virtual file. Immutable once built (validated by ValidateExtents).
struct Table {
  uint64_t size = 0;
  std::vector<Extent> extents;
  std::vector<std::unique_ptr<Source>> sources;
  std::vector<uint8_t> blob;
  std::vector<TableChain> chains;
};

}  // namespace synthvhd
