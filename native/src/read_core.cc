// SPDX-License-Identifier: MIT
#include "read_core.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

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
      void* fresh = nullptr;
      if (posix_memalign(&fresh, 4096, length) != 0) return nullptr;
      free(data);
      data = static_cast<char*>(fresh);
      size = length;
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

ReadCore::ReadCore(DecodeErrorReporter reporter, void* context) : reporter_(reporter), reporter_context_(context) {}

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
      if (reporter_ != nullptr) reporter_(reporter_context_, source.path, extent.offset, why);
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
  // A reply with few pieces is an iovec: zeros and generated bytes are not copied into the
  // buffer first (writev copies them into the kernel's pages once); otherwise one buffer.
  bool gather = walk.CountPieces() <= static_cast<size_t>(kMaxIov);
  struct iovec iov[kMaxIov];
  int count = 0;
  std::shared_ptr<const Block> held[kMaxIov];
  int held_count = 0;
  size_t last_compressed = SIZE_MAX;
  Piece piece;
  while (walk.Next(&piece)) {
    const Extent& extent = table.extents[piece.extent];
    char* target = buffer + piece.at;
    const char* from = nullptr;
    switch (extent.kind) {
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
    if (gather) {
      if (count > 0 && static_cast<const char*>(iov[count - 1].iov_base) + iov[count - 1].iov_len == from && from != g_zeros) {
        iov[count - 1].iov_len += piece.length;
      } else {
        iov[count].iov_base = const_cast<char*>(from);
        iov[count].iov_len = piece.length;
        count++;
      }
    }
  }
  uint64_t total = walk.total();
  bool sequential = handle->next_offset.exchange(offset + total) == offset;
  if (sequential && last_compressed != SIZE_MAX) QueueDecodeAhead(handle, last_compressed);
  if (gather) sink->Iov(iov, count);
  else sink->Buffer(buffer, total);
}

}  // namespace synthvhd
