// SPDX-License-Identifier: MIT
#include "read_core.h"

#include <pthread.h>
#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "read_walk.h"
#include "record_codec.h"

namespace synthvhd {

namespace {

// Never written: zero runs of a reply point here (the .bss pages all map the kernel's zero page,
// so this costs no memory).
char g_zeros[kMaxReply];

// Decode-ahead: at most this many threads (cores - 1), this many extents scanned for the next
// blocks, this many queued tasks (older ones are dropped: the reader has moved on).
constexpr unsigned kMaxAheadThreads = 4;
constexpr size_t kAheadScan = 256;
constexpr size_t kMaxAheadQueue = 16;

// pread exactly `length` bytes; a source that ends early (it shrank) is EIO like any bad source.
int PreadExactly(int fd, char* into, size_t length, uint64_t offset) {
  ssize_t n = PreadUpTo(fd, into, length, offset);
  if (n < 0) return EIO;
  return static_cast<size_t>(n) == length ? 0 : EIO;
}

struct ThreadBuffer {
  char* data = nullptr;
  size_t size = 0;
  ~ThreadBuffer() { free(data); }
  char* Get(size_t length) {
    if (length > size) {
      // One 2 MiB huge page where the kernel gives one (THP madvise): the reply's pages are
      // pinned by writev for every answer, fewer pages are cheaper to pin.
      constexpr size_t kHuge = 2u << 20;
      size_t rounded = (length + kHuge - 1) / kHuge * kHuge;
      void* fresh = nullptr;
      if (posix_memalign(&fresh, kHuge, rounded) != 0) return nullptr;
      madvise(fresh, rounded, MADV_HUGEPAGE);
      free(data);
      data = static_cast<char*>(fresh);
      size = rounded;
    }
    return data;
  }
};
thread_local ThreadBuffer t_buffer;

// One decoder per thread (FUSE workers and ahead threads), kept: its zstd context and payload
// buffer are reused for every block the thread decodes.
thread_local codec::Decoder t_decoder;

// A block is named by its file's identity and version, the record's offset and its length.
BlockKey KeyOf(const Source& source, const Extent& extent) {
  return BlockKey{source.dev, source.ino, source.mtime_ns, extent.offset, extent.block_length};
}

}  // namespace

Handle::~Handle() {
  if (fd >= 0) close(fd);
}

char* ThreadReplyBuffer(size_t length) { return t_buffer.Get(length); }

ssize_t PreadUpTo(int fd, char* into, size_t length, uint64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, into + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

// 16 MiB of bitmaps: 32 768 blocks of 512 KiB, 16 GiB of disk per chain file.
constexpr size_t kBitmapCacheBytes = 16u << 20;

ReadCore::ReadCore(FaultReporter reporter, void* context) : reporter_(reporter), reporter_context_(context) {
  bitmaps_.SetLimit(kBitmapCacheBytes);
}

ReadCore::~ReadCore() { StopDecodeAhead(false); }

std::shared_ptr<const Block> ReadCore::DecodedBlock(const Source& source, const Extent& extent) {
  return cache_.Get(KeyOf(source, extent), [&]() -> std::shared_ptr<const Block> {
    auto fresh = std::make_shared<Block>(static_cast<size_t>(extent.block_length));
    std::string why;
    int rc = fresh->data() == nullptr
                 ? -ENOMEM
                 : t_decoder.DecodeFromFd(source.fd, extent.offset, reinterpret_cast<uint8_t*>(fresh->data()), extent.block_length, &why);
    if (rc != 0) {
      if (fresh->data() == nullptr) why = "out of memory for a block of " + std::to_string(extent.block_length);
      if (reporter_ != nullptr) reporter_(reporter_context_, Fault::kRecord, source.path, extent.offset, why);
      return nullptr;
    }
    return fresh;
  });
}

// ----- decode-ahead ------------------------------------------------------------------------------
// A sequential reader of a compressed extent (dd, qemu-img convert, a VM booting) asks for one
// block at a time: the kernel sends the next read only after the last one was answered, so the
// decode of each block would sit on the reader's critical path and use one core. After each
// sequential read that touched a compressed block, the next few blocks of the file are decoded
// on the ahead threads into the shared cache; a worker that asks for a block being decoded waits
// for that one decode (BlockCache's single flight) instead of starting its own.

void ReadCore::StartDecodeAhead(std::shared_ptr<void> keep_alive) {
  unsigned cores = std::thread::hardware_concurrency();
  unsigned count = cores > 1 ? cores : 1;
  if (count > kMaxAheadThreads) count = kMaxAheadThreads;
  {
    std::lock_guard<std::mutex> lock(ahead_mu_);
    ahead_depth_ = count + 1;
    ahead_stop_ = false;
  }
  for (unsigned index = 0; index < count; index++) {
    ahead_threads_.emplace_back([this, keep_alive] { AheadMain(); });
  }
  ahead_running_.store(true);
}

void ReadCore::StopDecodeAhead(bool detach) {
  ahead_running_.store(false);
  {
    std::lock_guard<std::mutex> lock(ahead_mu_);
    ahead_stop_ = true;
    ahead_.clear();
  }
  ahead_cv_.notify_all();
  for (std::thread& thread : ahead_threads_) {
    if (!thread.joinable()) continue;
    // The last owner may let go on an ahead thread itself: it cannot join itself.
    if (detach || thread.get_id() == std::this_thread::get_id()) thread.detach();
    else thread.join();
  }
  ahead_threads_.clear();
}

void ReadCore::AheadMain() {
  // Signals belong to Node's main thread.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  for (;;) {
    AheadTask task;
    {
      std::unique_lock<std::mutex> lock(ahead_mu_);
      ahead_cv_.wait(lock, [this] { return ahead_stop_ || !ahead_.empty(); });
      if (ahead_stop_) return;
      task = std::move(ahead_.front());
      ahead_.pop_front();
    }
    if (task.handle->stale.load()) continue;
    const Table& table = *task.handle->table;
    if (task.chain != SIZE_MAX) {
      const TableChain& chain = table.chains[task.chain];
      DecodedBlock(*table.sources[chain.sources[task.level]], ContainerBlock(chain.shape->levels[task.level], task.container_block));
      continue;
    }
    const Extent& extent = table.extents[task.extent];
    DecodedBlock(*table.sources[extent.source], extent);
  }
}

// Queues the next ahead_depth_ blocks after extent `last` (a compressed extent just read).
void ReadCore::QueueDecodeAhead(const std::shared_ptr<Handle>& handle, size_t last) {
  if (!ahead_running_.load(std::memory_order_relaxed)) return;
  const Table& table = *handle->table;
  uint64_t previous = table.extents[last].offset;
  unsigned queued = 0;
  std::lock_guard<std::mutex> lock(ahead_mu_);
  if (ahead_stop_) return;
  // Blocks are split into several extents where a partition or an unwritten sector run
  // starts inside one; look a bounded distance ahead, each block queued once.
  for (size_t index = last + 1; index < table.extents.size() && index <= last + kAheadScan && queued < ahead_depth_; index++) {
    const Extent& extent = table.extents[index];
    if (extent.kind != ExtentKind::kCompressed || extent.offset == previous) continue;
    previous = extent.offset;
    queued++;
    if (!cache_.Has(KeyOf(*table.sources[extent.source], extent))) ahead_.push_back(AheadTask{handle, index});
  }
  while (ahead_.size() > kMaxAheadQueue) ahead_.pop_front();
  ahead_cv_.notify_all();
}

// ----- the read ----------------------------------------------------------------------------------

void ReadCore::Read(const std::shared_ptr<Handle>& handle, size_t size, uint64_t offset, ReplySink* sink) {
  if (size > kMaxReply) size = kMaxReply;
  char* buffer = t_buffer.Get(kMaxReply);
  if (buffer == nullptr) {
    sink->Error(ENOMEM);
    return;
  }
  if (handle->table == nullptr) {
    ssize_t n = PreadUpTo(handle->fd, buffer, size, offset);
    if (n < 0) {
      sink->Error(static_cast<int>(-n));
      return;
    }
    sink->Buffer(buffer, static_cast<size_t>(n));
    return;
  }
  const Table& table = *handle->table;
  ReadWalk walk(table.extents, table.size, offset, size);
  if (walk.total() == 0) {
    sink->Buffer(nullptr, 0);
    return;
  }
  // A reply with few pieces is an iovec: zeros, generated bytes and decoded blocks are not
  // copied into the buffer first (writev copies them into the kernel's pages once); otherwise,
  // or once a chain has split the reply into too many pieces, one buffer.
  bool gather = walk.CountPieces() <= static_cast<size_t>(kMaxIov);
  struct iovec iov[kMaxIov];
  int count = 0;
  std::shared_ptr<const Block> held[kMaxIov];
  int held_count = 0;
  thread_local std::vector<ChainPiece> chain_pieces;
  auto append = [&](const char* from, size_t length) {
    if (count > 0 && static_cast<const char*>(iov[count - 1].iov_base) + iov[count - 1].iov_len == from && from != g_zeros) {
      iov[count - 1].iov_len += length;
    } else {
      iov[count].iov_base = const_cast<char*>(from);
      iov[count].iov_len = length;
      count++;
    }
  };
  // From an iovec to one buffer: what the pieces so far point at is copied to its place.
  auto flatten = [&]() {
    size_t at = 0;
    for (int i = 0; i < count; i++) {
      if (iov[i].iov_base != buffer + at) std::memmove(buffer + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
    gather = false;
    count = 0;
  };
  size_t last_compressed = SIZE_MAX;
  size_t last_chain = SIZE_MAX;
  uint64_t chain_end = 0;
  Piece piece;
  while (walk.Next(&piece)) {
    const Extent& extent = table.extents[piece.extent];
    char* target = buffer + piece.at;
    const char* from = nullptr;
    switch (extent.kind) {
      case ExtentKind::kChain: {
        const uint64_t start = extent.offset + piece.skip;
        chain_pieces.clear();
        int error = ReadChain(table, table.chains[extent.source], start, piece.length, target, &chain_pieces);
        if (error != 0) {
          chain_pieces.clear();
          sink->Error(error);
          return;
        }
        last_chain = extent.source;
        chain_end = start + piece.length;
        if (gather && (count + chain_pieces.size() > static_cast<size_t>(kMaxIov) || chain_pieces.size() > static_cast<size_t>(kMaxIov - held_count))) {
          flatten();
        }
        for (const ChainPiece& part : chain_pieces) {
          char* place = target + (part.at - start);
          if (!gather) {
            if (part.from != place) std::memcpy(place, part.from, part.length);
            continue;
          }
          append(part.from, part.length);
          if (part.hold != nullptr) held[held_count++] = part.hold;
        }
        continue;
      }
      case ExtentKind::kZero:
        from = g_zeros;
        if (!gather) std::memset(target, 0, piece.length);
        break;
      case ExtentKind::kBytes:
        from = reinterpret_cast<const char*>(table.blob.data() + extent.offset + piece.skip);
        if (!gather) std::memcpy(target, from, piece.length);
        break;
      case ExtentKind::kFile: {
        const Source& source = *table.sources[extent.source];
        if (PreadExactly(source.fd, target, piece.length, extent.offset + piece.skip) != 0) {
          sink->Error(EIO);
          return;
        }
        from = target;
        break;
      }
      case ExtentKind::kCompressed: {
        last_compressed = piece.extent;
        std::shared_ptr<const Block> block = DecodedBlock(*table.sources[extent.source], extent);
        // The block's real size, not the extent's word for it, bounds what is copied from it.
        uint64_t begin = 0;
        if (block == nullptr || !PieceInBlock(extent, piece, block->size(), &begin)) {
          sink->Error(EIO);
          return;
        }
        from = block->data() + begin;
        if (gather) held[held_count++] = std::move(block);
        else std::memcpy(target, from, piece.length);
        break;
      }
    }
    if (gather) append(from, piece.length);
  }
  uint64_t total = walk.total();
  bool sequential = handle->next_offset.exchange(offset + total) == offset;
  if (sequential && last_compressed != SIZE_MAX) QueueDecodeAhead(handle, last_compressed);
  if (sequential && last_chain != SIZE_MAX) QueueChainAhead(handle, last_chain, chain_end);
  if (gather) sink->Iov(iov, count);
  else sink->Buffer(buffer, total);
  chain_pieces.clear();  // lets go of the decoded blocks the reply pointed at
}

}  // namespace synthvhd

// ----- VHD chains (chain_shape.h; docs/urbackup-image-formats.md §9) ----------------------------

namespace synthvhd {

Extent ReadCore::ContainerBlock(const ChainLevelShape& level, uint64_t block) {
  Extent extent{};
  extent.kind = ExtentKind::kCompressed;
  extent.offset = static_cast<uint64_t>(level.records[block]);
  extent.block_length = block + 1 == level.records.size() ? level.last_block_length : level.container_block;
  extent.length = extent.block_length;
  return extent;
}

int ReadCore::ReadLevelBytes(const Source& source, const ChainLevelShape& level, uint64_t position, uint64_t length, char* into,
                             std::vector<ChainPiece>* pieces, uint64_t at) {
  if (level.container_block == 0) {
    if (PreadExactly(source.fd, into, length, position) != 0) return EIO;
    if (pieces != nullptr) pieces->push_back(ChainPiece{at, into, length, nullptr});
    return 0;
  }
  if (position > level.logical_size || length > level.logical_size - position) return EIO;
  while (length > 0) {
    uint64_t block = position / level.container_block;
    uint64_t skip = position - block * level.container_block;
    uint64_t piece = std::min(length, level.container_block - skip);
    if (level.records[block] < 0) {
      // A container block never written reads as zeros.
      if (pieces != nullptr) pieces->push_back(ChainPiece{at, g_zeros, piece, nullptr});
      else std::memset(into, 0, piece);
    } else {
      std::shared_ptr<const Block> decoded = DecodedBlock(source, ContainerBlock(level, block));
      // The block's real size bounds what is copied from it.
      if (decoded == nullptr || skip > decoded->size() || piece > decoded->size() - skip) return EIO;
      if (pieces != nullptr) pieces->push_back(ChainPiece{at, decoded->data() + skip, piece, std::move(decoded)});
      else std::memcpy(into, decoded->data() + skip, piece);
    }
    position += piece;
    length -= piece;
    into += piece;
    at += piece;
  }
  return 0;
}

int ReadCore::ReadChain(const Table& table, const TableChain& chain, uint64_t disk_offset, uint64_t length, char* into,
                        std::vector<ChainPiece>* pieces) {
  const ChainShape& shape = *chain.shape;
  if (disk_offset > shape.size || length > shape.size - disk_offset) return EIO;
  using Span = std::pair<uint64_t, uint64_t>;  // [from, to) in the disk
  thread_local std::vector<Span> pending;
  thread_local std::vector<Span> still;
  thread_local std::vector<BitRun> runs;
  auto zero = [&](uint64_t from, uint64_t to) { pieces->push_back(ChainPiece{from, g_zeros, to - from, nullptr}); };
  const uint64_t end_all = disk_offset + length;
  for (uint64_t at = disk_offset; at < end_all;) {
    const uint64_t block = at / shape.block_size;
    const uint64_t block_start = block * shape.block_size;
    const uint64_t end = std::min(end_all, block_start + shape.block_size);
    pending.assign(1, Span{at, end});
    for (size_t index = 0; index < shape.levels.size() && !pending.empty(); index++) {
      const ChainLevelShape& level = shape.levels[index];
      // Past this file's disk (a parent smaller than its child): zeros from here down.
      still.clear();
      for (Span span : pending) {
        if (span.first >= level.size) {
          zero(span.first, span.second);
          continue;
        }
        if (span.second > level.size) {
          zero(level.size, span.second);
          span.second = level.size;
        }
        still.push_back(span);
      }
      pending.swap(still);
      if (pending.empty() || block >= level.bat.size() || level.bat[block] == kBatUnused) continue;
      const Source& source = *table.sources[chain.sources[index]];
      const uint64_t bitmap_at = static_cast<uint64_t>(level.bat[block]) * kSector;
      std::shared_ptr<const Block> bitmap =
          bitmaps_.Get(BlockKey{source.dev, source.ino, source.mtime_ns, bitmap_at, level.bitmap_size}, [&]() -> std::shared_ptr<const Block> {
            auto fresh = std::make_shared<Block>(static_cast<size_t>(level.bitmap_size));
            if (fresh->data() == nullptr || ReadLevelBytes(source, level, bitmap_at, level.bitmap_size, fresh->data()) != 0) return nullptr;
            return fresh;
          });
      if (bitmap == nullptr) {
        if (reporter_ != nullptr) {
          reporter_(reporter_context_, Fault::kBitmap, source.path, bitmap_at,
                    "VHD block " + std::to_string(block) + ": its sector bitmap at " + std::to_string(bitmap_at) + " cannot be read");
        }
        return EIO;
      }
      const uint64_t data_at = bitmap_at + level.bitmap_size;
      still.clear();
      for (const Span& span : pending) {
        SectorRuns(reinterpret_cast<const uint8_t*>(bitmap->data()), level.bitmap_size, span.first - block_start, span.second - block_start, &runs);
        for (const BitRun& run : runs) {
          if (!run.present) {
            still.push_back(Span{block_start + run.from, block_start + run.to});
            continue;
          }
          const uint64_t at_disk = block_start + run.from;
          if (ReadLevelBytes(source, level, data_at + run.from, run.to - run.from, into + (at_disk - disk_offset), pieces, at_disk) != 0) return EIO;
        }
      }
      pending.swap(still);
    }
    for (const Span& span : pending) zero(span.first, span.second);
    at = end;
  }
  // Found child first, level by level; a reply goes out in disk order.
  std::sort(pieces->begin(), pieces->end(), [](const ChainPiece& a, const ChainPiece& b) { return a.at < b.at; });
  return 0;
}

// Decode-ahead for a chain: the container blocks holding the next blocks' bitmaps and data, in
// every compressed file that allocates them, nearest first (a sequential reader of a chain reads
// its base the most and its children where they changed something: all of them are needed in
// disk order, whichever file they are in).
void ReadCore::QueueChainAhead(const std::shared_ptr<Handle>& handle, size_t chain_index, uint64_t disk_end) {
  if (!ahead_running_.load(std::memory_order_relaxed)) return;
  const Table& table = *handle->table;
  const TableChain& chain = table.chains[chain_index];
  const ChainShape& shape = *chain.shape;
  std::lock_guard<std::mutex> lock(ahead_mu_);
  if (ahead_stop_) return;
  unsigned queued = 0;
  // As far ahead as ahead_depth_ container blocks of disk (urBackup's are 2 MiB, 4 VHD blocks).
  uint64_t horizon = disk_end + static_cast<uint64_t>(ahead_depth_) * 2 * 1024 * 1024;
  std::vector<std::pair<size_t, uint64_t>> seen;  // (file, container block) queued or cached now
  for (uint64_t at = disk_end; at < horizon && at < shape.size && queued < ahead_depth_; at += shape.block_size) {
    uint64_t block = at / shape.block_size;
    for (size_t index = 0; index < shape.levels.size() && queued < ahead_depth_; index++) {
      const ChainLevelShape& level = shape.levels[index];
      if (at >= level.size) break;  // past this file's disk: nothing below is read either
      if (block >= level.bat.size() || level.bat[block] == kBatUnused || level.container_block == 0) continue;
      const Source& source = *table.sources[chain.sources[index]];
      uint64_t first = static_cast<uint64_t>(level.bat[block]) * kSector;
      uint64_t last = first + level.bitmap_size + shape.block_size - 1;
      for (uint64_t position : {first, last}) {
        if (position >= level.logical_size || queued >= ahead_depth_) continue;
        uint64_t container = position / level.container_block;
        if (level.records[container] < 0) continue;
        std::pair<size_t, uint64_t> id{index, container};
        bool known = false;
        for (const auto& each : seen) known = known || each == id;
        if (known) continue;
        seen.push_back(id);
        if (cache_.Has(KeyOf(source, ContainerBlock(level, container)))) continue;
        AheadTask task{handle, 0};
        task.chain = chain_index;
        task.level = index;
        task.container_block = container;
        ahead_.push_back(std::move(task));
        queued++;
      }
    }
  }
  while (ahead_.size() > kMaxAheadQueue) ahead_.pop_front();
  ahead_cv_.notify_all();
}

}  // namespace synthvhd
