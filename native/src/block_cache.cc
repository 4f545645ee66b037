// SPDX-License-Identifier: MIT
#include "block_cache.h"

#include <sys/mman.h>

#include <cstdlib>
#include <vector>

namespace synthvhd {

namespace {

constexpr size_t kSpareBlockBytes = 16u << 20;
// Small blocks (cached sector bitmaps) are not pooled: malloc serves them well, and thousands of
// them in the pool would make every Take scan them.
constexpr size_t kSmallestPooled = 64u << 10;
// A block of at least this much gets memory aligned to it and asks for transparent huge pages
// (madvise: Debian's default mode): its first touch is one fault instead of 512 (perf showed
// zstd's page faults on fresh blocks among the daemon's largest costs, each a trap to the kernel).
constexpr size_t kHugePage = 2u << 20;

char* Allocate(size_t size) {
  if (size < kHugePage) return static_cast<char*>(malloc(size > 0 ? size : 1));
  size_t rounded = (size + kHugePage - 1) / kHugePage * kHugePage;
  void* data = nullptr;
  if (posix_memalign(&data, kHugePage, rounded) != 0) return nullptr;
  madvise(data, rounded, MADV_HUGEPAGE);  // advice only: without THP the block works the same
  return static_cast<char*>(data);
}

struct Spares {
  std::mutex mu;
  std::vector<std::pair<size_t, char*>> buffers;
  size_t bytes = 0;
};

Spares& SparePool() {
  static Spares* pool = new Spares();  // never destroyed: blocks may outlive static teardown
  return *pool;
}

char* Take(size_t size) {
  if (size < kSmallestPooled) return static_cast<char*>(malloc(size > 0 ? size : 1));
  Spares& pool = SparePool();
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    for (auto it = pool.buffers.begin(); it != pool.buffers.end(); ++it) {
      if (it->first != size) continue;
      char* data = it->second;
      pool.bytes -= size;
      pool.buffers.erase(it);
      return data;
    }
  }
  return Allocate(size);  // nullptr: the decode fails with "out of memory"
}

void Give(char* data, size_t size) {
  if (data == nullptr) return;
  if (size < kSmallestPooled) {
    free(data);
    return;
  }
  Spares& pool = SparePool();
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    if (pool.bytes + size <= kSpareBlockBytes) {
      pool.buffers.emplace_back(size, data);
      pool.bytes += size;
      return;
    }
  }
  free(data);
}

}  // namespace

Block::Block(size_t size) : size_(size), data_(Take(size)) {}

Block::~Block() { Give(data_, size_); }

size_t BlockKeyHash::operator()(const BlockKey& key) const {
  uint64_t h = static_cast<uint64_t>(key.dev) * 0x9E3779B97F4A7C15ull;
  h ^= static_cast<uint64_t>(key.ino) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(key.mtime_ns) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= key.record + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= key.length + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return static_cast<size_t>(h);
}

void BlockCache::SetLimit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  max_bytes_ = bytes;
  EvictLocked();
}

bool BlockCache::Has(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.count(key) != 0 || flights_.count(key) != 0;
}

void BlockCache::Stats(size_t* bytes, size_t* blocks) {
  std::lock_guard<std::mutex> lock(mu_);
  *bytes = bytes_;
  *blocks = map_.size();
}

void BlockCache::InsertLocked(const BlockKey& key, std::shared_ptr<const Block> block) {
  if (block->size() > max_bytes_ || map_.count(key) != 0) return;
  lru_.emplace_front(key, block);
  map_.emplace(key, lru_.begin());
  bytes_ += block->size();
  EvictLocked();
}

void BlockCache::EvictLocked() {
  while (bytes_ > max_bytes_ && !lru_.empty()) {
    bytes_ -= lru_.back().second->size();
    map_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

}  // namespace synthvhd
