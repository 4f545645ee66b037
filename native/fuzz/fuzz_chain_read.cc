// SPDX-License-Identifier: MIT
//
// A VHD chain read from hostile numbers and bytes: whatever shape passes ValidateChainShape, and
// whatever the files hold (BAT entries past the end, bitmaps of any bits, container records that
// do not decode), ReadCore::Read of a chain extent answers exactly once, with an errno or with
// exactly min(length, size - offset) bytes, never reading outside what it owns (ASan), and every
// byte it gives equals a sector-by-sector oracle of urBackup's rule when the chain is plain.
//
// Input: u8 block-size shift (block = 512 << (shift % 6)), u8 level count (1 + n % 3), u8 flags
// (bit k: level k is "compressed": its bytes become one stored record per container block, a
// record header of mode 0, so that the decoder has something to refuse or accept); per level u16le
// size in blocks (1 + n % 64), u16le size trim in sectors, u16le file bytes (n * 16), then the BAT
// (u16le entries scaled to sectors, 0xffff unused), then the file bytes; then reads, each u32le
// offset and u32le length, until the input ends.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../src/chain_shape.h"
#include "../src/extent_table.h"
#include "../src/read_core.h"
#include "fuzz_check.h"
#include "fuzz_input.h"

using namespace synthvhd;

namespace {

class Collect : public ReplySink {
 public:
  int answers = 0;
  int error = 0;
  std::vector<uint8_t> bytes;
  void Error(int e) override {
    answers++;
    error = e;
  }
  void Iov(const struct iovec* iov, int count) override {
    answers++;
    for (int i = 0; i < count; i++) {
      const uint8_t* base = static_cast<const uint8_t*>(iov[i].iov_base);
      bytes.insert(bytes.end(), base, base + iov[i].iov_len);
    }
  }
  void Buffer(const char* data, size_t length) override {
    answers++;
    if (length > 0) bytes.insert(bytes.end(), data, data + length);
  }
};

std::unique_ptr<Source> MemorySource(const std::vector<uint8_t>& content, ino_t ino) {
  auto source = std::make_unique<Source>();
  source->fd = memfd_create("fuzz", 0);
  if (!content.empty()) {
    ssize_t n = pwrite(source->fd, content.data(), content.size(), 0);
    (void)n;
  }
  source->ino = ino;
  source->path = "memfd";
  return source;
}

struct Level {
  std::vector<uint8_t> vhd;  // the VHD's bytes as the shape sees them
  std::vector<uint32_t> bat;
  uint64_t size = 0;
  bool compressed = false;
};

// urBackup's rule, one byte at a time, for a chain of plain files (pread past the end: EIO).
int OracleByte(const std::vector<Level>& levels, uint64_t block_size, uint64_t bitmap_size, uint64_t position, uint8_t* out) {
  for (const Level& level : levels) {
    if (position >= level.size) {
      *out = 0;
      return 0;
    }
    uint64_t block = position / block_size;
    if (block >= level.bat.size() || level.bat[block] == kBatUnused) continue;
    uint64_t base = static_cast<uint64_t>(level.bat[block]) * kSector;
    uint64_t in_block = position - block * block_size;
    uint64_t sector = in_block / kSector;
    if (base + bitmap_size > level.vhd.size()) return EIO;
    bool set = (level.vhd[base + sector / 8] >> (7 - sector % 8)) & 1;
    if (!set) continue;
    if (base + bitmap_size + in_block >= level.vhd.size()) return EIO;
    *out = level.vhd[base + bitmap_size + in_block];
    return 0;
  }
  *out = 0;
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in{data, size};
  uint8_t shift = 0, count = 0, flags = 0;
  if (!in.Take(&shift, 1) || !in.Take(&count, 1) || !in.Take(&flags, 1)) return 0;
  const uint64_t block_size = 512ull << (shift % 6);
  const uint64_t bitmap_size = ((block_size / kSector + 7) / 8 + kSector - 1) / kSector * kSector;
  const size_t levels_count = 1 + count % 3;
  std::vector<Level> levels(levels_count);
  uint64_t disk_size = 0;
  for (size_t i = 0; i < levels_count; i++) {
    uint16_t blocks = 0, trim = 0, bytes = 0;
    if (!in.Take(&blocks, 2) || !in.Take(&trim, 2) || !in.Take(&bytes, 2)) return 0;
    Level& level = levels[i];
    uint64_t whole = (1 + blocks % 64) * block_size;
    uint64_t cut = (trim % (block_size / kSector)) * kSector;
    level.size = whole - cut;
    if (i == 0) disk_size = level.size;
    level.compressed = (flags >> i) & 1;
    uint64_t entries = (level.size + block_size - 1) / block_size;
    for (uint64_t b = 0; b < entries; b++) {
      uint16_t entry = 0xffff;
      in.Take(&entry, 2);
      level.bat.push_back(entry == 0xffff ? kBatUnused : static_cast<uint32_t>(entry) * 3);
    }
    size_t length = std::min<size_t>(static_cast<size_t>(bytes) * 16, in.size - in.at);
    level.vhd.assign(data + in.at, data + in.at + length);
    in.at += length;
  }

  // Files and the shape: a compressed level's bytes go into 4 KiB container blocks, each a stored
  // record (mode 0) of exactly its bytes, so decoding gives them back; a short last block.
  constexpr uint64_t kContainerBlock = 4096;
  std::vector<double> numbers = {static_cast<double>(disk_size), static_cast<double>(block_size), static_cast<double>(levels_count)};
  std::vector<std::pair<const uint32_t*, size_t>> bats;
  std::vector<std::vector<double>> record_lists(levels_count);
  std::vector<std::pair<const double*, size_t>> records;
  std::vector<std::vector<uint8_t>> files(levels_count);
  for (size_t i = 0; i < levels_count; i++) {
    Level& level = levels[i];
    bats.emplace_back(level.bat.data(), level.bat.size());
    if (!level.compressed || level.vhd.empty()) {
      level.compressed = false;
      files[i] = level.vhd;
      numbers.insert(numbers.end(), {static_cast<double>(level.size), static_cast<double>(bitmap_size), 0, 0, 0});
      records.emplace_back(nullptr, 0);
      continue;
    }
    std::vector<uint8_t>& file = files[i];
    file.assign(64, 'h');
    uint64_t last = 0;
    for (uint64_t at = 0; at < level.vhd.size(); at += kContainerBlock) {
      uint64_t length = std::min<uint64_t>(kContainerBlock, level.vhd.size() - at);
      record_lists[i].push_back(static_cast<double>(file.size()));
      uint32_t stored = static_cast<uint32_t>(length), mode = 0;
      file.insert(file.end(), reinterpret_cast<uint8_t*>(&stored), reinterpret_cast<uint8_t*>(&stored) + 4);
      file.insert(file.end(), reinterpret_cast<uint8_t*>(&mode), reinterpret_cast<uint8_t*>(&mode) + 4);
      file.insert(file.end(), level.vhd.begin() + at, level.vhd.begin() + at + length);
      last = length;
    }
    numbers.insert(numbers.end(), {static_cast<double>(level.size), static_cast<double>(bitmap_size), static_cast<double>(kContainerBlock),
                                   static_cast<double>(level.vhd.size()), static_cast<double>(last)});
    records.emplace_back(record_lists[i].data(), record_lists[i].size());
  }
  auto shape = std::make_shared<ChainShape>();
  std::string why;
  if (!ValidateChainShape(numbers.data(), numbers.size(), bats, records, shape.get(), &why)) return 0;

  auto table = std::make_unique<Table>();
  TableChain chain{shape, {}};
  for (size_t i = 0; i < levels_count; i++) {
    table->sources.push_back(MemorySource(files[i], static_cast<ino_t>(i + 1)));
    chain.sources.push_back(static_cast<uint32_t>(i));
  }
  table->chains.push_back(std::move(chain));
  Extent extent{};
  extent.kind = ExtentKind::kChain;
  extent.length = disk_size;
  table->extents.push_back(extent);
  table->size = disk_size;
  auto handle = std::make_shared<Handle>();
  handle->table = std::move(table);
  ReadCore core(nullptr, nullptr);
  bool plain = std::none_of(levels.begin(), levels.end(), [](const Level& level) { return level.compressed; });
  for (int reads = 0; reads < 8; reads++) {
    uint32_t offset = 0, length = 0;
    if (!in.Take(&offset, 4) || !in.Take(&length, 4)) break;
    uint64_t at = offset % (disk_size + 64);
    size_t want_length = length % (3 * block_size + 1);
    Collect reply;
    core.Read(handle, want_length, at, &reply);
    FUZZ_CHECK(reply.answers == 1);
    if (reply.error != 0) {
      FUZZ_CHECK(reply.error == EIO);
      continue;
    }
    uint64_t want = at >= disk_size ? 0 : std::min<uint64_t>(std::min<uint64_t>(want_length, kMaxReply), disk_size - at);
    FUZZ_CHECK(reply.bytes.size() == want);
    if (!plain) continue;
    for (uint64_t k = 0; k < want; k++) {
      uint8_t expected = 0;
      int error = OracleByte(levels, block_size, bitmap_size, at + k, &expected);
      FUZZ_CHECK(error == 0);  // a read the oracle cannot answer must have failed as a whole
      FUZZ_CHECK(reply.bytes[k] == expected);
    }
  }
  return 0;
}
