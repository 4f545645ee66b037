// SPDX-License-Identifier: MIT
//
// Unit tests of the read core without FUSE or N-API, built with AddressSanitizer and UBSan
// (native/fuzz/Makefile, run by test/native-fuzz.test.ts). Each test prints "ok <name>" or
// "FAIL <name>: <why>" and the binary exits 1 on any failure; a sanitizer report aborts it.
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../src/block_cache.h"
#include "../src/extent_table.h"
#include "../src/read_core.h"
#include "../src/read_walk.h"
#include "../src/record_codec.h"

using namespace synthvhd;

namespace {

int g_failures = 0;

#define EXPECT(condition, name)                                                      \
  do {                                                                               \
    if (!(condition)) {                                                              \
      std::printf("FAIL %s: %s (line %d)\n", name, #condition, __LINE__);            \
      g_failures++;                                                                  \
      return;                                                                        \
    }                                                                                \
  } while (0)

// The bytes of a reply, copied out of the iovec or buffer it was given as.
class Collect : public ReplySink {
 public:
  int error = 0;
  std::vector<uint8_t> bytes;
  bool answered = false;
  void Error(int e) override {
    answered = true;
    error = e;
  }
  void Iov(const struct iovec* iov, int count) override {
    answered = true;
    for (int i = 0; i < count; i++) {
      const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
      bytes.insert(bytes.end(), p, p + iov[i].iov_len);
    }
  }
  void Buffer(const char* data, size_t length) override {
    answered = true;
    if (length > 0) bytes.insert(bytes.end(), data, data + length);
  }
};

struct Reported {
  std::atomic<int> count{0};
  std::string last;
  ReadCore::Fault last_fault = ReadCore::Fault::kRecord;
};

void Report(void* context, ReadCore::Fault fault, const std::string& /*path*/, uint64_t /*offset*/, const std::string& why) {
  auto* reported = static_cast<Reported*>(context);
  reported->count++;
  reported->last = why;
  reported->last_fault = fault;
}

std::vector<uint8_t> Record(uint32_t mode, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> record(8 + payload.size());
  uint32_t stored = static_cast<uint32_t>(payload.size());
  std::memcpy(record.data(), &stored, 4);
  std::memcpy(record.data() + 4, &mode, 4);
  if (!payload.empty()) std::memcpy(record.data() + 8, payload.data(), payload.size());
  return record;
}

std::vector<uint8_t> Zstd(const std::vector<uint8_t>& block) {
  std::vector<uint8_t> out(ZSTD_compressBound(block.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), block.data(), block.size(), 3);
  out.resize(n);
  return out;
}

std::vector<uint8_t> Zlib(const std::vector<uint8_t>& block) {
  uLongf n = compressBound(block.size());
  std::vector<uint8_t> out(n);
  compress2(out.data(), &n, block.data(), block.size(), 6);
  out.resize(n);
  return out;
}

std::vector<uint8_t> Pattern(size_t length, uint32_t seed) {
  std::vector<uint8_t> bytes(length);
  std::mt19937 random(seed);
  for (size_t i = 0; i < length; i++) bytes[i] = static_cast<uint8_t>(i % 251 < 100 ? 'a' + (i % 7) : random());
  return bytes;
}

// A source file in memory holding `content`.
std::unique_ptr<Source> MemorySource(const std::vector<uint8_t>& content) {
  auto source = std::make_unique<Source>();
  source->fd = memfd_create("source", 0);
  if (!content.empty()) {
    ssize_t n = pwrite(source->fd, content.data(), content.size(), 0);
    (void)n;
  }
  static ino_t next = 1;
  source->ino = next++;  // memfds are all one device; a distinct identity per test source
  source->path = "memfd";
  return source;
}

Extent Compressed(uint64_t start, uint64_t length, uint64_t record, uint64_t block_length, uint64_t skip) {
  Extent extent{};
  extent.start = start;
  extent.length = length;
  extent.kind = ExtentKind::kCompressed;
  extent.source = 0;
  extent.offset = record;
  extent.block_length = block_length;
  extent.skip = skip;
  return extent;
}

// Issue 19, finding 1: a damaged index maps a full block and the short last block to ONE record.
// Read the short one first (its decode succeeds and is cached), then the full one: the full one
// must answer EIO, never bytes from past the short block's buffer (ASan would abort here if the
// cache handed back the short block and the read copied 64 KiB from it).
void TestSharedRecordDifferentLengths() {
  const char* name = "a record shared by a full and a short block: EIO, no over-read";
  constexpr uint64_t kFull = 64 * 1024;
  constexpr uint64_t kShort = 4096;
  std::vector<uint8_t> short_block = Pattern(kShort, 7);
  for (uint32_t mode : {0u, 2u}) {
    std::vector<uint8_t> record = Record(mode, mode == 0 ? short_block : Zstd(short_block));
    auto table = std::make_unique<Table>();
    table->sources.push_back(MemorySource(record));
    table->extents.push_back(Compressed(0, kFull, 0, kFull, 0));       // block i
    table->extents.push_back(Compressed(kFull, kShort, 0, kShort, 0));  // the last, short block
    table->size = kFull + kShort;
    auto handle = std::make_shared<Handle>();
    handle->table = std::move(table);
    Reported reported;
    ReadCore core(&Report, &reported);
    Collect footer;
    core.Read(handle, kShort, kFull, &footer);
    EXPECT(footer.answered && footer.error == 0, name);
    EXPECT(footer.bytes == short_block, name);
    Collect first;
    core.Read(handle, kFull, 0, &first);
    EXPECT(first.answered, name);
    EXPECT(first.error == EIO, name);
    EXPECT(first.bytes.empty(), name);
    EXPECT(reported.count.load() == 1, name);
  }
  std::printf("ok %s\n", name);
}

// The cache never hands out a block whose size differs from the length its key names.
void TestCacheRefusesWrongSize() {
  const char* name = "the block cache refuses a block of the wrong size";
  BlockCache cache;
  BlockKey key{1, 2, 3, 4, 8192};
  auto block = cache.Get(key, [] { return std::make_shared<const Block>(4096); });
  EXPECT(block == nullptr, name);
  size_t bytes = 0, blocks = 0;
  cache.Stats(&bytes, &blocks);
  EXPECT(blocks == 0 && bytes == 0, name);
  int decodes = 0;
  auto right = cache.Get(key, [&] {
    decodes++;
    return std::make_shared<const Block>(8192);
  });
  EXPECT(right != nullptr && right->size() == 8192 && decodes == 1, name);
  BlockKey other_length = key;
  other_length.length = 4096;
  EXPECT(!cache.Has(other_length), name);
  std::printf("ok %s\n", name);
}

void TestCacheBoundAndSingleFlight() {
  const char* name = "the block cache stays within its bytes and decodes a block once";
  BlockCache cache;
  cache.SetLimit(3 * 4096);
  for (uint64_t record = 0; record < 10; record++) {
    BlockKey key{1, 1, 0, record, 4096};
    EXPECT(cache.Get(key, [] { return std::make_shared<const Block>(4096); }) != nullptr, name);
    size_t bytes = 0, blocks = 0;
    cache.Stats(&bytes, &blocks);
    EXPECT(bytes <= 3 * 4096 && blocks <= 3, name);
  }
  std::atomic<int> decodes{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  std::atomic<int> got{0};
  for (int i = 0; i < 8; i++) {
    threads.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      auto block = cache.Get(BlockKey{9, 9, 9, 9, 4096}, [&] {
        decodes++;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return std::make_shared<const Block>(4096);
      });
      if (block != nullptr) got++;
    });
  }
  go.store(true);
  for (auto& thread : threads) thread.join();
  EXPECT(decodes.load() == 1 && got.load() == 8, name);
  std::printf("ok %s\n", name);
}

// Every extent kind, stored/zlib/zstd blocks, read whole and at many offsets, through the iovec
// path (few pieces) and the one-buffer path (more than kMaxIov pieces).
void TestReadsMatchTheTruth() {
  const char* name = "reads of every extent kind give the expected bytes";
  constexpr uint64_t kBlock = 32 * 1024;
  std::vector<uint8_t> blocks[3] = {Pattern(kBlock, 1), Pattern(kBlock, 2), Pattern(kBlock, 3)};
  std::vector<uint8_t> container(13, 'h');
  uint64_t records[3];
  for (uint32_t mode = 0; mode < 3; mode++) {
    records[mode] = container.size();
    std::vector<uint8_t> payload = mode == 0 ? blocks[0] : mode == 1 ? Zlib(blocks[1]) : Zstd(blocks[2]);
    std::vector<uint8_t> record = Record(mode, payload);
    container.insert(container.end(), record.begin(), record.end());
  }
  std::vector<uint8_t> plain = Pattern(200 * 1024, 9);
  auto table = std::make_unique<Table>();
  table->sources.push_back(MemorySource(container));
  table->sources.push_back(MemorySource(plain));
  table->blob = Pattern(5000, 11);
  std::vector<uint8_t> truth;
  std::mt19937 random(42);
  uint64_t position = 0;
  for (int i = 0; i < 300; i++) {
    Extent extent{};
    extent.start = position;
    extent.kind = static_cast<ExtentKind>(random() % 4);
    extent.length = 1 + random() % 3000;
    switch (extent.kind) {
      case ExtentKind::kZero:
        truth.insert(truth.end(), extent.length, 0);
        break;
      case ExtentKind::kBytes:
        extent.offset = random() % (table->blob.size() - extent.length);
        truth.insert(truth.end(), table->blob.begin() + extent.offset, table->blob.begin() + extent.offset + extent.length);
        break;
      case ExtentKind::kFile:
        extent.source = 1;
        extent.offset = random() % (plain.size() - extent.length);
        truth.insert(truth.end(), plain.begin() + extent.offset, plain.begin() + extent.offset + extent.length);
        break;
      case ExtentKind::kCompressed: {
        uint32_t mode = random() % 3;
        extent.source = 0;
        extent.offset = records[mode];
        extent.block_length = kBlock;
        extent.skip = random() % (kBlock - extent.length);
        truth.insert(truth.end(), blocks[mode].begin() + extent.skip, blocks[mode].begin() + extent.skip + extent.length);
        break;
      }
      case ExtentKind::kChain:  // not drawn here (random() % 4): TestChainReadsMatchTheOracle
        break;
    }
    position += extent.length;
    table->extents.push_back(extent);
  }
  table->size = position;
  auto handle = std::make_shared<Handle>();
  handle->table = std::move(table);
  ReadCore core(nullptr, nullptr);
  core.StartDecodeAhead(nullptr);
  for (int i = 0; i < 400; i++) {
    uint64_t offset = i == 0 ? 0 : random() % (position + 100);
    size_t length = i == 0 ? kMaxReply : 1 + random() % (i % 2 == 0 ? 300000 : 5000);
    Collect reply;
    core.Read(handle, length, offset, &reply);
    EXPECT(reply.answered && reply.error == 0, name);
    uint64_t want = offset >= position ? 0 : std::min<uint64_t>(std::min<uint64_t>(length, kMaxReply), position - offset);
    EXPECT(reply.bytes.size() == want, name);
    EXPECT(want == 0 || std::memcmp(reply.bytes.data(), truth.data() + offset, want) == 0, name);
  }
  core.StopDecodeAhead(false);
  std::printf("ok %s\n", name);
}

void TestCorruptRecordsAnswerEio() {
  const char* name = "corrupt records answer EIO with a reason";
  constexpr uint64_t kBlock = 16 * 1024;
  std::vector<uint8_t> block = Pattern(kBlock, 5);
  std::vector<uint8_t> zstd = Zstd(block);
  std::vector<std::vector<uint8_t>> bad = {
      Record(1, Pattern(300, 1)),                                   // not a zlib stream
      Record(2, std::vector<uint8_t>(zstd.begin(), zstd.end() - 9)),  // a truncated zstd frame
      Record(7, zstd),                                               // unknown mode
      Record(0, Pattern(kBlock - 1, 2)),                             // stored, one byte short
      Record(2, Zstd(Pattern(kBlock + 1, 3))),                       // decodes one byte long
      Record(1, Zlib(Pattern(kBlock - 1, 4))),                       // decodes one byte short
  };
  std::vector<uint8_t> huge = Record(2, zstd);
  uint32_t stored = 0xfffffff0u;  // a corrupt stored size: refused before anything is allocated
  std::memcpy(huge.data(), &stored, 4);
  bad.push_back(huge);
  codec::Decoder decoder;
  for (size_t i = 0; i < bad.size(); i++) {
    std::vector<uint8_t> out(kBlock);
    std::string why;
    EXPECT(decoder.DecodeFromBytes(bad[i].data(), bad[i].size(), out.data(), kBlock, &why) == -EIO, name);
    EXPECT(!why.empty(), name);
  }
  // And the decoder still decodes a good record after all that.
  std::vector<uint8_t> good = Record(2, zstd);
  std::vector<uint8_t> out(kBlock);
  std::string why;
  EXPECT(decoder.DecodeFromBytes(good.data(), good.size(), out.data(), kBlock, &why) == 0 && out == block, name);
  std::printf("ok %s\n", name);
}

void TestValidation() {
  const char* name = "extent tables are validated";
  std::vector<Extent> extents;
  std::string why;
  // kind, start, length, a, b, c, d
  double good[] = {1, 0, 10, 0, 0, 0, 0, 3, 10, 5, 0, 100, 8, 3, 0, 15, 5, 0, 0, 0, 0};
  EXPECT(ValidateExtents(good, 21, 20, 10, 1, &extents, &why), name);
  double outside_block[] = {3, 0, 10, 0, 100, 8, 0};
  EXPECT(!ValidateExtents(outside_block, 7, 10, 0, 1, &extents, &why), name);
  double huge_block[] = {3, 0, 10, 0, 100, 1e15, 0};
  EXPECT(!ValidateExtents(huge_block, 7, 10, 0, 1, &extents, &why), name);
  double outside_blob[] = {1, 0, 10, 5, 0, 0, 0};
  EXPECT(!ValidateExtents(outside_blob, 7, 10, 12, 0, &extents, &why), name);
  double no_source[] = {2, 0, 10, 1, 0, 0, 0};
  EXPECT(!ValidateExtents(no_source, 7, 10, 0, 1, &extents, &why), name);
  double gap[] = {0, 0, 5, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0};
  EXPECT(!ValidateExtents(gap, 14, 10, 0, 0, &extents, &why), name);
  double nan_number[] = {0, 0, 10, 0, 0, 0, __builtin_nan("")};
  EXPECT(!ValidateExtents(nan_number, 7, 10, 0, 0, &extents, &why), name);
  double past_size[] = {0, 0, 11, 0, 0, 0, 0};
  EXPECT(!ValidateExtents(past_size, 7, 10, 0, 0, &extents, &why), name);
  std::printf("ok %s\n", name);
}

// A VHD chain of three files, the middle one compressed, with random bitmaps and a parent smaller
// than its child: every read equals a sector-by-sector oracle of urBackup's VHDFile::Read (the
// first file whose block is allocated and whose bit is set; zeros past a file's disk size; zeros
// when no file holds the sector). Then the compressed file's record holding a bitmap is damaged:
// reads of that block answer EIO and the report names the VHD block.
struct FakeVhd {
  std::vector<uint8_t> bytes;  // the VHD's bytes (bitmaps and data where the BAT says)
  ChainLevelShape shape;
};

FakeVhd MakeFakeVhd(uint64_t size, uint64_t block, std::mt19937* random, uint32_t seed) {
  FakeVhd vhd;
  vhd.shape.size = size;
  vhd.shape.bitmap_size = 512;
  vhd.bytes.assign(1536, 0);  // stands for the footer copy, header and BAT
  uint64_t blocks = (size + block - 1) / block;
  for (uint64_t b = 0; b < blocks; b++) {
    if ((*random)() % 10 < 4) {
      vhd.shape.bat.push_back(kBatUnused);
      continue;
    }
    vhd.shape.bat.push_back(static_cast<uint32_t>(vhd.bytes.size() / 512));
    std::vector<uint8_t> bitmap(512, 0);
    // Runs of set and clear bits, some whole bytes, some not.
    for (uint64_t sector = 0; sector < block / 512;) {
      bool set = (*random)() % 2 == 0;
      uint64_t run = 1 + (*random)() % 9;
      for (uint64_t k = 0; k < run && sector < block / 512; k++, sector++) {
        if (set) bitmap[sector / 8] |= static_cast<uint8_t>(0x80 >> (sector % 8));
      }
    }
    vhd.bytes.insert(vhd.bytes.end(), bitmap.begin(), bitmap.end());
    std::vector<uint8_t> data = Pattern(block, seed * 1000 + static_cast<uint32_t>(b));
    vhd.bytes.insert(vhd.bytes.end(), data.begin(), data.end());
  }
  vhd.bytes.resize(vhd.bytes.size() + 512, 0);  // the footer
  return vhd;
}

// urBackup's rule, one sector at a time.
uint8_t OracleByte(const std::vector<FakeVhd>& levels, uint64_t block, uint64_t position) {
  for (const FakeVhd& level : levels) {
    if (position >= level.shape.size) return 0;
    uint64_t b = position / block;
    if (b >= level.shape.bat.size() || level.shape.bat[b] == kBatUnused) continue;
    uint64_t base = static_cast<uint64_t>(level.shape.bat[b]) * 512;
    uint64_t in_block = position - b * block;
    uint64_t sector = in_block / 512;
    bool set = (level.bytes[base + sector / 8] >> (7 - sector % 8)) & 1;
    if (set) return level.bytes[base + 512 + in_block];
  }
  return 0;
}

// Compresses `vhd` into a urBackup container of `container_block` blocks (zstd records); the
// record offsets go into the shape, the container bytes are returned.
std::vector<uint8_t> Containerize(FakeVhd* vhd, uint64_t container_block) {
  std::vector<uint8_t> file(64, 'h');
  uint64_t logical = vhd->bytes.size();
  vhd->shape.container_block = container_block;
  vhd->shape.logical_size = logical;
  for (uint64_t at = 0; at < logical; at += container_block) {
    uint64_t length = std::min(container_block, logical - at);
    std::vector<uint8_t> block(vhd->bytes.begin() + at, vhd->bytes.begin() + at + length);
    vhd->shape.records.push_back(static_cast<int64_t>(file.size()));
    std::vector<uint8_t> record = Record(2, Zstd(block));
    file.insert(file.end(), record.begin(), record.end());
    vhd->shape.last_block_length = length;
  }
  return file;
}

void TestChainReadsMatchTheOracle() {
  const char* name = "VHD chains: reads equal urBackup's sector rule; a damaged bitmap is EIO naming the block";
  constexpr uint64_t kVhdBlock = 8 * 1024;
  constexpr uint64_t kSize = 40 * kVhdBlock;
  std::mt19937 random(7);
  std::vector<FakeVhd> levels;
  levels.push_back(MakeFakeVhd(kSize, kVhdBlock, &random, 1));
  levels.push_back(MakeFakeVhd(kSize, kVhdBlock, &random, 2));
  levels.push_back(MakeFakeVhd(30 * kVhdBlock - 3 * 512, kVhdBlock, &random, 3));  // a smaller parent
  std::vector<uint8_t> middle = Containerize(&levels[1], 16 * 1024);
  auto shape = std::make_shared<ChainShape>();
  shape->size = kSize;
  shape->block_size = kVhdBlock;
  for (const FakeVhd& level : levels) shape->levels.push_back(level.shape);

  constexpr uint64_t kPrefix = 1000;  // a bytes extent first, so that chain offsets are not file offsets
  constexpr uint64_t kDiskOffset = 3 * 512;
  auto make_handle = [&](const std::vector<uint8_t>& middle_file) {
    auto table = std::make_unique<Table>();
    table->sources.push_back(MemorySource(levels[0].bytes));
    table->sources.push_back(MemorySource(middle_file));
    table->sources.push_back(MemorySource(levels[2].bytes));
    table->blob = Pattern(kPrefix, 4);
    table->chains.push_back(TableChain{shape, {0, 1, 2}});
    Extent prefix{};
    prefix.kind = ExtentKind::kBytes;
    prefix.length = kPrefix;
    Extent chain{};
    chain.kind = ExtentKind::kChain;
    chain.start = kPrefix;
    chain.length = kSize - kDiskOffset;
    chain.source = 0;
    chain.offset = kDiskOffset;
    table->extents = {prefix, chain};
    table->size = kPrefix + chain.length;
    auto handle = std::make_shared<Handle>();
    handle->table = std::move(table);
    return handle;
  };
  std::vector<uint8_t> truth(Pattern(kPrefix, 4));
  for (uint64_t position = kDiskOffset; position < kSize; position++) truth.push_back(OracleByte(levels, kVhdBlock, position));

  ReadCore core(nullptr, nullptr);
  core.StartDecodeAhead(nullptr);
  auto handle = make_handle(middle);
  uint64_t size = handle->table->size;
  for (int i = 0; i < 400; i++) {
    // Sequential reads first (decode-ahead runs), then random ones.
    uint64_t offset = i < 40 ? static_cast<uint64_t>(i) * 8192 : random() % (size + 100);
    size_t length = i < 40 ? 8192 : 1 + random() % (i % 2 == 0 ? 70000 : 3000);
    Collect reply;
    core.Read(handle, length, offset, &reply);
    EXPECT(reply.answered && reply.error == 0, name);
    uint64_t want = offset >= size ? 0 : std::min<uint64_t>(std::min<uint64_t>(length, kMaxReply), size - offset);
    EXPECT(reply.bytes.size() == want, name);
    EXPECT(want == 0 || std::memcmp(reply.bytes.data(), truth.data() + offset, want) == 0, name);
  }
  core.StopDecodeAhead(false);

  // Damage the record holding the bitmap of the first block the middle file allocates.
  uint64_t block = 0;
  while (levels[1].shape.bat[block] == kBatUnused) block++;
  uint64_t container = static_cast<uint64_t>(levels[1].shape.bat[block]) * 512 / levels[1].shape.container_block;
  std::vector<uint8_t> damaged = middle;
  uint64_t record = static_cast<uint64_t>(levels[1].shape.records[container]);
  for (uint64_t k = record + 8; k < record + 40; k++) damaged[k] = 0xee;
  Reported reported;
  ReadCore damaged_core(&Report, &reported);
  auto damaged_handle = make_handle(damaged);
  // A read of that block in the disk: the child (level 0) may hold some sectors, never all of a
  // block whose bitmap has clear bits everywhere the oracle reached the middle file.
  bool saw_eio = false;
  for (uint64_t position = block * kVhdBlock; position < (block + 1) * kVhdBlock; position += 512) {
    if (position < kDiskOffset) continue;
    Collect reply;
    damaged_core.Read(damaged_handle, 512, kPrefix + position - kDiskOffset, &reply);
    if (reply.error == EIO) saw_eio = true;
  }
  EXPECT(saw_eio, name);
  EXPECT(reported.count.load() > 0, name);
  EXPECT(reported.last.find("VHD block " + std::to_string(block)) != std::string::npos, name);
  EXPECT(reported.last_fault == ReadCore::Fault::kBitmap, name);
  std::printf("ok %s\n", name);
}

void TestChainShapeValidation() {
  const char* name = "chain shapes are validated";
  ChainShape shape;
  std::string why;
  std::vector<uint32_t> bat(4, kBatUnused);
  std::vector<double> records = {64, -1};
  std::vector<std::pair<const uint32_t*, size_t>> bats = {{bat.data(), bat.size()}};
  std::vector<std::pair<const double*, size_t>> none = {{nullptr, 0}};
  std::vector<std::pair<const double*, size_t>> two = {{records.data(), records.size()}};
  double good[] = {4 * 8192, 8192, 1, 4 * 8192, 512, 0, 0, 0};
  EXPECT(ValidateChainShape(good, 8, bats, none, &shape, &why), name);
  double compressed[] = {4 * 8192, 8192, 1, 4 * 8192, 512, 16384, 20000, 3616};
  EXPECT(ValidateChainShape(compressed, 8, bats, two, &shape, &why), name);
  double few_records[] = {4 * 8192, 8192, 1, 4 * 8192, 512, 16384, 40000, 3616};
  EXPECT(!ValidateChainShape(few_records, 8, bats, two, &shape, &why), name);
  double big_bat_for_disk[] = {2 * 8192, 8192, 1, 2 * 8192, 512, 0, 0, 0};
  EXPECT(!ValidateChainShape(big_bat_for_disk, 8, bats, none, &shape, &why), name);
  double small_bitmap[] = {4 * 8192, 1024 * 1024, 1, 4 * 8192, 64, 0, 0, 0};
  EXPECT(!ValidateChainShape(small_bitmap, 8, bats, none, &shape, &why), name);
  double big_bitmap[] = {4 * 8192, 8192, 1, 4 * 8192, 8192, 0, 0, 0};
  EXPECT(!ValidateChainShape(big_bitmap, 8, bats, none, &shape, &why), name);
  double odd_block[] = {4 * 8192, 1000, 1, 4 * 8192, 512, 0, 0, 0};
  EXPECT(!ValidateChainShape(odd_block, 8, bats, none, &shape, &why), name);
  double nan_size[] = {__builtin_nan(""), 8192, 1, 4 * 8192, 512, 0, 0, 0};
  EXPECT(!ValidateChainShape(nan_size, 8, bats, none, &shape, &why), name);
  std::vector<uint64_t> sizes = {4 * 8192};
  std::vector<Extent> extents;
  double past_chain[] = {4, 0, 10, 0, 4 * 8192 - 5, 0, 0};
  EXPECT(!ValidateExtents(past_chain, 7, 10, 0, 0, &extents, &why, sizes), name);
  double no_chain[] = {4, 0, 10, 1, 0, 0, 0};
  EXPECT(!ValidateExtents(no_chain, 7, 10, 0, 0, &extents, &why, sizes), name);
  double fine[] = {4, 0, 10, 0, 100, 0, 0};
  EXPECT(ValidateExtents(fine, 7, 10, 0, 0, &extents, &why, sizes), name);
  std::printf("ok %s\n", name);
}

}  // namespace

int main() {
  TestSharedRecordDifferentLengths();
  TestCacheRefusesWrongSize();
  TestCacheBoundAndSingleFlight();
  TestReadsMatchTheTruth();
  TestCorruptRecordsAnswerEio();
  TestValidation();
  TestChainReadsMatchTheOracle();
  TestChainShapeValidation();
  if (g_failures > 0) {
    std::printf("%d failed\n", g_failures);
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
