// SPDX-License-Identifier: MIT
//
// The shape of a urBackup VHD chain (an image and its parents, child first): each file's BAT,
// bitmap size, disk size and, for a .vhdz, its container index. No fds and no data: one shape
// per composed disk, built once from JavaScript (napi_bridge.cc makeChainShape) and shared by
// every open handle of that disk, which supplies its own dup()ed sources.
// docs/urbackup-image-formats.md §9; the TypeScript twin is src/extents/vhd-chain.ts.
//
// A sector comes from the first file whose block is allocated and whose bitmap bit (MSB first)
// is set, else from the next file down; past a file's disk size it reads zeros from there down;
// with no file left, zeros (uroni/urbackup_backend fsimageplugin/vhdfile.cpp VHDFile::Read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace synthvhd {

constexpr uint32_t kBatUnused = 0xffffffffu;
constexpr uint64_t kSector = 512;
// A chain longer than this is refused (src/urbackup/images/open-image-backup.ts MAX_CHAIN_DEPTH).
constexpr size_t kMaxChainLevels = 1024;
// VHD block sizes read (urBackup writes 512 KiB; src/urbackup/images/urbackup-vhd.ts bound).
constexpr uint64_t kMaxVhdBlockSize = 256ull * 1024 * 1024;

struct ChainLevelShape {
  uint64_t size = 0;         // the disk size this file stores
  uint64_t bitmap_size = 0;  // bytes of each block's sector bitmap, before its data
  std::vector<uint32_t> bat;
  // A compressed (.vhdz) file: its container's block size (0 for a plain file), the logical size
  // of the wrapped VHD, what its last block decodes to, and one record offset per block (-1: zeros).
  uint64_t container_block = 0;
  uint64_t logical_size = 0;
  uint64_t last_block_length = 0;
  std::vector<int64_t> records;
};

struct ChainShape {
  uint64_t size = 0;
  uint64_t block_size = 0;
  std::vector<ChainLevelShape> levels;
};

// JavaScript packs a shape as numbers (src/fuse/native-session.ts packChainShape):
//   size, block size, level count, then 5 per level: size, bitmap size, container block size
//   (0: plain), logical size, last block length
// with one BAT (uint32) and one record list (float64; empty for plain) per level. Every number is
// checked here; true with the shape in *out, or false with a one-line reason in *why.
constexpr size_t kChainHeadNumbers = 3;
constexpr size_t kChainLevelNumbers = 5;
bool ValidateChainShape(const double* numbers, size_t count, const std::vector<std::pair<const uint32_t*, size_t>>& bats,
                        const std::vector<std::pair<const double*, size_t>>& records, ChainShape* out, std::string* why);

// One run of a block's byte range [from, to) whose sectors all have the same bitmap bit.
struct BitRun {
  uint64_t from;
  uint64_t to;
  bool present;
};

// Splits [from, to) (byte offsets inside a block) into runs of equal bits of `bitmap`
// (`bitmap_size` bytes, MSB first, one bit per 512-byte sector); a bit past the bitmap reads 0.
void SectorRuns(const uint8_t* bitmap, uint64_t bitmap_size, uint64_t from, uint64_t to, std::vector<BitRun>* out);

}  // namespace synthvhd
