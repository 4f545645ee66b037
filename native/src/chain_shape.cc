// SPDX-License-Identifier: MIT
#include "chain_shape.h"

#include <cmath>

#include "extent_table.h"
#include "record_codec.h"

namespace synthvhd {

namespace {

bool SafeInteger(double value) { return value >= 0 && value <= kMaxSafeInteger && value == std::floor(value); }

bool Fail(std::string* why, std::string reason) {
  *why = std::move(reason);
  return false;
}

inline bool Bit(const uint8_t* bitmap, uint64_t bitmap_size, uint64_t sector) {
  uint64_t byte = sector >> 3;
  if (byte >= bitmap_size) return false;
  return ((bitmap[byte] >> (7 - (sector & 7))) & 1) != 0;
}

}  // namespace

bool ValidateChainShape(const double* numbers, size_t count, const std::vector<std::pair<const uint32_t*, size_t>>& bats,
                        const std::vector<std::pair<const double*, size_t>>& records, ChainShape* out, std::string* why) {
  *out = ChainShape{};
  if (count < kChainHeadNumbers) return Fail(why, "chain: too few numbers");
  for (size_t i = 0; i < count; i++) {
    if (!SafeInteger(numbers[i])) return Fail(why, "chain: numbers must be safe integers >= 0");
  }
  uint64_t size = static_cast<uint64_t>(numbers[0]);
  uint64_t block_size = static_cast<uint64_t>(numbers[1]);
  uint64_t levels = static_cast<uint64_t>(numbers[2]);
  if (size == 0 || size % kSector != 0) return Fail(why, "chain: bad disk size");
  if (block_size < kSector || block_size % kSector != 0 || block_size > kMaxVhdBlockSize) return Fail(why, "chain: bad block size");
  if (levels == 0 || levels > kMaxChainLevels) return Fail(why, "chain: 1 to 1024 files");
  if (count != kChainHeadNumbers + levels * kChainLevelNumbers || bats.size() != levels || records.size() != levels) {
    return Fail(why, "chain: one BAT, one record list and 5 numbers per file");
  }
  out->size = size;
  out->block_size = block_size;
  out->levels.resize(levels);
  // The bitmap holds one bit per sector of a block, rounded up to whole sectors ("Virtual Hard
  // Disk Image Format Specification", Block Bitmap): exactly that, so no hostile size can make a
  // cached bitmap larger than 64 KiB (for 256 MiB blocks).
  uint64_t bitmap_bytes = ((block_size / kSector + 7) / 8 + kSector - 1) / kSector * kSector;
  for (size_t i = 0; i < levels; i++) {
    const double* v = numbers + kChainHeadNumbers + i * kChainLevelNumbers;
    ChainLevelShape& level = out->levels[i];
    level.size = static_cast<uint64_t>(v[0]);
    level.bitmap_size = static_cast<uint64_t>(v[1]);
    level.container_block = static_cast<uint64_t>(v[2]);
    level.logical_size = static_cast<uint64_t>(v[3]);
    level.last_block_length = static_cast<uint64_t>(v[4]);
    std::string at = "chain file " + std::to_string(i) + ": ";
    if (level.size == 0) return Fail(why, at + "empty disk");
    if (level.bitmap_size != bitmap_bytes) return Fail(why, at + "bad bitmap size");
    // At most one BAT entry per block of the disk, and the disk fits the entries (< 2^32 blocks).
    uint64_t blocks = (level.size + block_size - 1) / block_size;
    if (bats[i].second > blocks) return Fail(why, at + "more BAT entries than blocks");
    level.bat.assign(bats[i].first, bats[i].first + bats[i].second);
    if (level.container_block == 0) {
      if (records[i].second != 0) return Fail(why, at + "a plain file with a record list");
      continue;
    }
    if (level.container_block % kSector != 0 || level.container_block > codec::kMaxDecodedBytes) return Fail(why, at + "bad container block size");
    if (level.logical_size == 0) return Fail(why, at + "empty container");
    uint64_t container_blocks = level.logical_size / level.container_block + (level.logical_size % level.container_block != 0 ? 1 : 0);
    if (records[i].second != container_blocks) return Fail(why, at + "one record per container block");
    if (level.last_block_length == 0 || level.last_block_length > level.container_block) return Fail(why, at + "bad last block length");
    level.records.reserve(container_blocks);
    for (size_t k = 0; k < container_blocks; k++) {
      double record = records[i].first[k];
      if (record == -1) {
        level.records.push_back(-1);
        continue;
      }
      if (!SafeInteger(record)) return Fail(why, at + "bad record offset");
      level.records.push_back(static_cast<int64_t>(record));
    }
  }
  return true;
}

void SectorRuns(const uint8_t* bitmap, uint64_t bitmap_size, uint64_t from, uint64_t to, std::vector<BitRun>* out) {
  out->clear();
  uint64_t at = from;
  while (at < to) {
    uint64_t sector = at / kSector;
    bool present = Bit(bitmap, bitmap_size, sector);
    uint64_t next = sector + 1;
    // Whole bytes of equal bits at once (a bitmap is mostly all ones or all zeros).
    while (next * kSector < to) {
      if ((next & 7) == 0 && (next >> 3) < bitmap_size) {
        uint8_t byte = bitmap[next >> 3];
        if (byte == (present ? 0xff : 0x00) && (next + 8) * kSector <= to) {
          next += 8;
          continue;
        }
      }
      if (Bit(bitmap, bitmap_size, next) != present) break;
      next++;
    }
    uint64_t end = next * kSector < to ? next * kSector : to;
    out->push_back(BitRun{at, end, present});
    at = end;
  }
}

}  // namespace synthvhd
