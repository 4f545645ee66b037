// SPDX-License-Identifier: MIT
//
// Decoded compressed blocks, shared by every open file of a session: a pool of block buffers, an
// LRU bounded in bytes, and single flight (one decode per block at a time).
//
// A block is named by its file's identity and version (dev, ino, mtime), the record's offset AND
// the length the extent expects it to decode to. Without the length, a damaged index that maps
// two blocks of different lengths to one record (a full block and the short last one) would get
// whichever was decoded first for both, and the read would copy past the shorter buffer (issue
// 19, finding 1). With it, each length is decoded (and checked by the codec) on its own; and the
// read still checks every piece against the block's real size (read_walk.h PieceInBlock).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace synthvhd {

// A decoded block's bytes. Buffers are recycled (up to 16 MiB kept): a fresh 2 MiB allocation is
// an mmap whose pages fault one at a time as the decoder writes them, and zeroing it first
// (std::vector) costs as much again; measured with perf, the two took more time than zstd's
// decoding itself. data() is nullptr when memory ran out.
class Block {
 public:
  explicit Block(size_t size);
  ~Block();
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  char* data() { return data_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  size_t size_;
  char* data_;
};

struct BlockKey {
  dev_t dev;
  ino_t ino;
  int64_t mtime_ns;
  uint64_t record;
  uint64_t length;  // the decoded length the extent expects
  bool operator==(const BlockKey& other) const {
    return dev == other.dev && ino == other.ino && mtime_ns == other.mtime_ns && record == other.record && length == other.length;
  }
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& key) const;
};

class BlockCache {
 public:
  void SetLimit(size_t bytes);

  // The block at `key`: from the cache, or decoded by `decode` (returns nullptr on failure). One
  // decode per key is in flight at a time (kernel readahead sends several requests inside one
  // block at once, each on its own worker): the first caller decodes outside the lock, the others
  // wait on its Flight, which they hold by shared_ptr so it outlives its removal from flights_.
  // The wait is bounded by that one decode (the decoding thread always reaches the completion
  // below). A failed decode wakes the waiters with nullptr (EIO); only the decoding caller reports
  // it. A block whose size is not key.length is never returned nor cached.
  template <typename Decode>
  std::shared_ptr<const Block> Get(const BlockKey& key, Decode decode) {
    std::shared_ptr<Flight> flight;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto found = map_.find(key);
      if (found != map_.end()) {
        lru_.splice(lru_.begin(), lru_, found->second);
        return found->second->second;
      }
      auto flying = flights_.find(key);
      if (flying != flights_.end()) {
        flight = flying->second;
        flight->done.wait(lock, [&flight] { return flight->finished; });
        return flight->block;
      }
      flight = std::make_shared<Flight>();
      flights_.emplace(key, flight);
    }
    std::shared_ptr<const Block> block = decode();
    if (block != nullptr && block->size() != key.length) block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      flight->block = block;
      flight->finished = true;
      flights_.erase(key);
      if (block != nullptr) InsertLocked(key, block);
    }
    flight->done.notify_all();
    return block;
  }

  // Whether `key` is decoded or being decoded.
  bool Has(const BlockKey& key);

  void Stats(size_t* bytes, size_t* blocks);

 private:
  struct Flight {
    std::condition_variable done;
    bool finished = false;               // under mu_
    std::shared_ptr<const Block> block;  // under mu_; nullptr: the decode failed
  };
  using Lru = std::list<std::pair<BlockKey, std::shared_ptr<const Block>>>;

  void InsertLocked(const BlockKey& key, std::shared_ptr<const Block> block);
  void EvictLocked();

  std::mutex mu_;
  size_t max_bytes_ = 64u << 20;
  size_t bytes_ = 0;
  Lru lru_;
  std::unordered_map<BlockKey, Lru::iterator, BlockKeyHash> map_;
  std::unordered_map<BlockKey, std::shared_ptr<Flight>, BlockKeyHash> flights_;
};

}  // namespace synthvhd
