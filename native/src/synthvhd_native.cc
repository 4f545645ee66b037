// SPDX-License-Identifier: MIT
//
// synthvhd native addon: the few Linux file calls Node does not offer with explicit offsets.
//
//   cloneRange(srcFd, srcOffset, dstFd, dstOffset, length)    -> Promise<undefined>   FICLONERANGE
//   copyFileRange(srcFd, srcOffset, dstFd, dstOffset, length) -> Promise<number>      copy_file_range loop
//   seekData(fd, offset) / seekHole(fd, offset)               -> Promise<number>      lseek SEEK_DATA/HOLE
//   dataRanges(fd, start, end)                                -> Promise<[off, len][]>
//   fsBlockSize(fd)                                           -> Promise<number>      fstatfs f_bsize
//   decodeRecord(fd, recordOffset, minLength, maxLength, into) -> Promise<number>     urBackup record
//   maxStoredBytes(decodedLength) -> number; recordLimits: { headerBytes, maxDecodedBytes }
//   lstatPaths(paths, follow), openConfined(path, root, maxSize, readLength): source_files.cc
//
// Every call runs on the libuv worker pool (one Napi::AsyncWorker per call) and settles a promise.
// Offsets and lengths are JS numbers (safe integers, 0 <= x <= 2^53-1) or BigInts (0 <= x < 2^63).
// A failed syscall rejects with an Error carrying `code` (errno name: "EXDEV", "EINVAL", ...),
// `errno` (the positive Linux errno number) and `syscall` ("FICLONERANGE", "copy_file_range", ...).
// The caller must keep the fds open until the promise settles. Bad arguments throw a TypeError or
// RangeError synchronously (the TypeScript wrapper validates first, so that means a wrapper bug).
//
// Built without C++ exceptions (NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS): every N-API failure leaves a
// pending JS exception, and each entry point returns right after raising one.

#include <napi.h>
#include <uv.h>

#include "promise_worker.h"
#include "record_codec.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/fiemap.h>  // struct fiemap, FIEMAP_* (Documentation/filesystems/fiemap.rst)
#include <linux/fs.h>  // FICLONERANGE, struct file_clone_range (linux/fs.h, ioctl_ficlonerange(2))
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

namespace synthvhd {
// source_files.cc: lstatPaths, openConfined.
void AddSourceFileCalls(Napi::Env env, Napi::Object exports);
}  // namespace synthvhd

namespace {

using synthvhd::CheckArgCount;
using synthvhd::ErrnoName;
using synthvhd::GetFd;
using synthvhd::GetOffset;
using synthvhd::PromiseWorker;

// ---------------------------------------------------------------------------------------------
// cloneRange: one FICLONERANGE ioctl on the destination fd. All or nothing: the kernel either
// shares the whole range or fails (ioctl_file_clone: `if (olen && cloned != olen) ret = -EINVAL`).

class CloneRangeWorker : public PromiseWorker {
 public:
  CloneRangeWorker(Napi::Env env, int src_fd, int64_t src_offset, int dst_fd, int64_t dst_offset, int64_t length)
      : PromiseWorker(env, "synthvhd.cloneRange"),
        src_fd_(src_fd), src_offset_(src_offset), dst_fd_(dst_fd), dst_offset_(dst_offset), length_(length) {}

 protected:
  void Execute() override {
    struct file_clone_range range;
    std::memset(&range, 0, sizeof range);
    range.src_fd = src_fd_;
    range.src_offset = static_cast<uint64_t>(src_offset_);
    range.src_length = static_cast<uint64_t>(length_);
    range.dest_offset = static_cast<uint64_t>(dst_offset_);
    int rc;
    do {
      rc = ioctl(dst_fd_, FICLONERANGE, &range);
    } while (rc == -1 && errno == EINTR);  // re-cloning the same range is idempotent
    if (rc == -1) Fail(errno, "FICLONERANGE");
  }

  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  int src_fd_;
  int64_t src_offset_;
  int dst_fd_;
  int64_t dst_offset_;
  int64_t length_;
};

// The (srcFd, srcOffset, dstFd, dstOffset, length) arguments of cloneRange and copyFileRange.
struct TransferArgs {
  int src_fd;
  int64_t src_offset;
  int dst_fd;
  int64_t dst_offset;
  int64_t length;
};

bool GetTransferArgs(const Napi::CallbackInfo& info, const char* name, TransferArgs* args) {
  return CheckArgCount(info, 5, name) && GetFd(info, 0, "srcFd", &args->src_fd) &&
         GetOffset(info, 1, "srcOffset", &args->src_offset) && GetFd(info, 2, "dstFd", &args->dst_fd) &&
         GetOffset(info, 3, "dstOffset", &args->dst_offset) && GetOffset(info, 4, "length", &args->length);
}

template <typename TransferWorker>
Napi::Value QueueTransferWorker(const Napi::CallbackInfo& info, const TransferArgs& args) {
  auto* worker = new TransferWorker(info.Env(), args.src_fd, args.src_offset, args.dst_fd, args.dst_offset, args.length);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value CloneRange(const Napi::CallbackInfo& info) {
  TransferArgs args;
  if (!GetTransferArgs(info, "cloneRange", &args)) return info.Env().Undefined();
  if (args.length == 0) {
    // FICLONERANGE reads src_length 0 as "to the end of the source": never what a caller means.
    Napi::RangeError::New(info.Env(), "cloneRange: length must be > 0").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return QueueTransferWorker<CloneRangeWorker>(info, args);
}

// ---------------------------------------------------------------------------------------------
// copyFileRange: copy_file_range(2) with explicit offsets (the fds' file positions are untouched),
// looped over short copies. A 0 return before `length` bytes means the source ended: reject with
// code "EOF" and `bytesCopied`. On a file system that can reflink, the kernel clones what it can.

class CopyFileRangeWorker : public PromiseWorker {
 public:
  CopyFileRangeWorker(Napi::Env env, int src_fd, int64_t src_offset, int dst_fd, int64_t dst_offset, int64_t length)
      : PromiseWorker(env, "synthvhd.copyFileRange"),
        src_fd_(src_fd), src_offset_(src_offset), dst_fd_(dst_fd), dst_offset_(dst_offset), length_(length) {}

 protected:
  void Execute() override {
    loff_t src = src_offset_;
    loff_t dst = dst_offset_;
    while (copied_ < length_) {
      // The kernel caps one call at MAX_RW_COUNT (about 2 GiB); ask for at most 1 GiB at a time.
      int64_t want = length_ - copied_;
      if (want > (int64_t{1} << 30)) want = int64_t{1} << 30;
      ssize_t done = copy_file_range(src_fd_, &src, dst_fd_, &dst, static_cast<size_t>(want), 0);
      if (done < 0) {
        if (errno == EINTR) continue;
        Fail(errno, "copy_file_range");
        return;
      }
      if (done == 0) {
        Fail("EOF", "source ended before the requested length", 0, "copy_file_range");
        return;
      }
      copied_ += done;
    }
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(copied_)); }

  void DecorateError(Napi::Object error) override {
    error.Set("bytesCopied", Napi::Number::New(error.Env(), static_cast<double>(copied_)));
  }

 private:
  int src_fd_;
  int64_t src_offset_;
  int dst_fd_;
  int64_t dst_offset_;
  int64_t length_;
  int64_t copied_ = 0;
};

Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  TransferArgs args;
  if (!GetTransferArgs(info, "copyFileRange", &args)) return info.Env().Undefined();
  return QueueTransferWorker<CopyFileRangeWorker>(info, args);
}

// ---------------------------------------------------------------------------------------------
// seekData / seekHole: lseek(2) SEEK_DATA / SEEK_HOLE. The fd's file position moves (lseek has no
// positional variant); callers use pread/pwrite, which ignore it. seekData answers -1 when there is
// no data at or after `offset` (ENXIO); seekHole's ENXIO (offset at or past EOF) stays an error.
// A file system without hole tracking reports the whole file as data (generic_file_llseek).

class SeekWorker : public PromiseWorker {
 public:
  SeekWorker(Napi::Env env, int fd, int64_t offset, int whence)
      : PromiseWorker(env, whence == SEEK_DATA ? "synthvhd.seekData" : "synthvhd.seekHole"),
        fd_(fd), offset_(offset), whence_(whence) {}

 protected:
  void Execute() override {
    off_t pos = lseek(fd_, static_cast<off_t>(offset_), whence_);
    if (pos >= 0) {
      result_ = pos;
    } else if (whence_ == SEEK_DATA && errno == ENXIO) {
      result_ = -1;
    } else {
      Fail(errno, whence_ == SEEK_DATA ? "lseek SEEK_DATA" : "lseek SEEK_HOLE");
    }
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(result_)); }

 private:
  int fd_;
  int64_t offset_;
  int whence_;
  int64_t result_ = 0;
};

Napi::Value Seek(const Napi::CallbackInfo& info, int whence) {
  int fd;
  int64_t offset;
  if (!CheckArgCount(info, 2, whence == SEEK_DATA ? "seekData" : "seekHole") || !GetFd(info, 0, "fd", &fd) ||
      !GetOffset(info, 1, "offset", &offset)) {
    return info.Env().Undefined();
  }
  auto* worker = new SeekWorker(info.Env(), fd, offset, whence);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value SeekData(const Napi::CallbackInfo& info) { return Seek(info, SEEK_DATA); }
Napi::Value SeekHole(const Napi::CallbackInfo& info) { return Seek(info, SEEK_HOLE); }

// ---------------------------------------------------------------------------------------------
// dataRanges: the data ranges of [start, end) as [offset, length] pairs, sorted, clipped to the
// window, found by alternating SEEK_DATA and SEEK_HOLE in one pool job. Granularity is the file
// system's (a block, or an extent); holes past EOF simply end the list.

class DataRangesWorker : public PromiseWorker {
 public:
  DataRangesWorker(Napi::Env env, int fd, int64_t start, int64_t end)
      : PromiseWorker(env, "synthvhd.dataRanges"), fd_(fd), start_(start), end_(end) {}

 protected:
  void Execute() override {
    int64_t pos = start_;
    while (pos < end_) {
      off_t data = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        if (errno != ENXIO) Fail(errno, "lseek SEEK_DATA");
        return;  // ENXIO: no data at or after pos
      }
      if (data >= end_) return;
      off_t hole = lseek(fd_, data, SEEK_HOLE);
      if (hole < 0) {
        // ENXIO here means the file shrank under us between the two calls: stop at the old data.
        if (errno != ENXIO) Fail(errno, "lseek SEEK_HOLE");
        return;
      }
      int64_t stop = hole < end_ ? static_cast<int64_t>(hole) : end_;
      if (stop <= data) return;  // defensive: never loop without progress
      ranges_.emplace_back(static_cast<int64_t>(data), stop - static_cast<int64_t>(data));
      pos = stop;
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array array = Napi::Array::New(env, ranges_.size());
    for (size_t i = 0; i < ranges_.size(); i++) {
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(uint32_t{0}, Napi::Number::New(env, static_cast<double>(ranges_[i].first)));
      pair.Set(uint32_t{1}, Napi::Number::New(env, static_cast<double>(ranges_[i].second)));
      array.Set(static_cast<uint32_t>(i), pair);
    }
    return array;
  }

 private:
  int fd_;
  int64_t start_;
  int64_t end_;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
};

// Parses (fd, start, end) and queues a worker over that window of the file: dataRanges, fiemap.
template <typename RangeWorker>
Napi::Value QueueRangeWorker(const Napi::CallbackInfo& info, const char* name) {
  int fd;
  int64_t start, end;
  if (!CheckArgCount(info, 3, name) || !GetFd(info, 0, "fd", &fd) || !GetOffset(info, 1, "start", &start) ||
      !GetOffset(info, 2, "end", &end)) {
    return info.Env().Undefined();
  }
  if (end < start) {
    Napi::RangeError::New(info.Env(), std::string(name) + ": end must be >= start").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto* worker = new RangeWorker(info.Env(), fd, start, end);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value DataRanges(const Napi::CallbackInfo& info) { return QueueRangeWorker<DataRangesWorker>(info, "dataRanges"); }

// ---------------------------------------------------------------------------------------------
// fiemap: the physical extents behind [start, end) as [logical, physical, length, flags] tuples
// (FS_IOC_FIEMAP with FIEMAP_FLAG_SYNC, so delayed allocations are flushed first). Two files
// whose ranges map to the same physical extents hold the same bytes: `synthvhd diff` uses that
// to skip reading what a reflink copy still shares (Documentation/filesystems/fiemap.rst).

class FiemapWorker : public PromiseWorker {
 public:
  FiemapWorker(Napi::Env env, int fd, int64_t start, int64_t end)
      : PromiseWorker(env, "synthvhd.fiemap"), fd_(fd), start_(start), end_(end) {}

 protected:
  void Execute() override {
    constexpr unsigned kBatch = 512;
    std::vector<char> buffer(sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent));
    auto* map = reinterpret_cast<struct fiemap*>(buffer.data());
    uint64_t pos = static_cast<uint64_t>(start_);
    const uint64_t end = static_cast<uint64_t>(end_);
    while (pos < end) {
      std::fill(buffer.begin(), buffer.end(), 0);
      map->fm_start = pos;
      map->fm_length = end - pos;
      map->fm_flags = FIEMAP_FLAG_SYNC;
      map->fm_extent_count = kBatch;
      if (ioctl(fd_, FS_IOC_FIEMAP, map) < 0) {
        Fail(errno, "FS_IOC_FIEMAP");
        return;
      }
      if (map->fm_mapped_extents == 0) return;
      bool last = false;
      for (unsigned i = 0; i < map->fm_mapped_extents; i++) {
        const struct fiemap_extent& e = map->fm_extents[i];
        extents_.push_back({static_cast<int64_t>(e.fe_logical), static_cast<int64_t>(e.fe_physical),
                            static_cast<int64_t>(e.fe_length), e.fe_flags});
        if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
        pos = e.fe_logical + e.fe_length;
      }
      if (last) return;
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array array = Napi::Array::New(env, extents_.size());
    for (size_t i = 0; i < extents_.size(); i++) {
      Napi::Array tuple = Napi::Array::New(env, 4);
      tuple.Set(uint32_t{0}, Napi::Number::New(env, static_cast<double>(extents_[i].logical)));
      tuple.Set(uint32_t{1}, Napi::Number::New(env, static_cast<double>(extents_[i].physical)));
      tuple.Set(uint32_t{2}, Napi::Number::New(env, static_cast<double>(extents_[i].length)));
      tuple.Set(uint32_t{3}, Napi::Number::New(env, static_cast<double>(extents_[i].flags)));
      array.Set(static_cast<uint32_t>(i), tuple);
    }
    return array;
  }

 private:
  struct Extent {
    int64_t logical;
    int64_t physical;
    int64_t length;
    uint32_t flags;
  };
  int fd_;
  int64_t start_;
  int64_t end_;
  std::vector<Extent> extents_;
};

Napi::Value Fiemap(const Napi::CallbackInfo& info) { return QueueRangeWorker<FiemapWorker>(info, "fiemap"); }

// ---------------------------------------------------------------------------------------------
// fsBlockSize: fstatfs(2) f_bsize, which on btrfs and XFS is the superblock block size that
// FICLONERANGE offsets must be aligned to (generic_remap_checks uses i_sb->s_blocksize).

class FsBlockSizeWorker : public PromiseWorker {
 public:
  FsBlockSizeWorker(Napi::Env env, int fd) : PromiseWorker(env, "synthvhd.fsBlockSize"), fd_(fd) {}

 protected:
  void Execute() override {
    struct statfs st;
    if (fstatfs(fd_, &st) != 0) {
      Fail(errno, "fstatfs");
      return;
    }
    result_ = static_cast<int64_t>(st.f_bsize);
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(result_)); }

 private:
  int fd_;
  int64_t result_ = 0;
};

Napi::Value FsBlockSize(const Napi::CallbackInfo& info) {
  int fd;
  if (!CheckArgCount(info, 1, "fsBlockSize") || !GetFd(info, 0, "fd", &fd)) return info.Env().Undefined();
  auto* worker = new FsBlockSizeWorker(info.Env(), fd);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---------------------------------------------------------------------------------------------
// decodeRecord: reads and decodes one urBackup compressed block record (record_codec.h) into
// `into`, on a pool thread with that thread's Decoder (zstd context, zlib stream, payload buffer
// kept between calls). The record must decode to between minLength and maxLength bytes (equal
// for every block but a file's last); resolves to the decoded length. A corrupt record rejects
// with code "EIO", syscall "decodeRecord" and `reason`, the codec's one line; a failed read with
// its errno. `into` is held (a reference) until the promise settles; it must not be transferred
// or detached meanwhile. One record per call: the call costs microseconds, a 2 MiB block
// milliseconds (docs/urbackup-image-formats.md §8).

class DecodeRecordWorker : public PromiseWorker {
 public:
  DecodeRecordWorker(Napi::Env env, int fd, int64_t record, int64_t min_length, int64_t max_length,
                     Napi::Uint8Array into)
      : PromiseWorker(env, "synthvhd.decodeRecord"), fd_(fd), record_(record), min_length_(min_length),
        max_length_(max_length), out_(into.Data()), into_(Napi::Persistent(into)) {}

 protected:
  void Execute() override {
    thread_local synthvhd::codec::Decoder decoder;
    uint64_t decoded = 0;
    int rc = decoder.DecodeUpToFromFd(fd_, static_cast<uint64_t>(record_), out_, static_cast<uint64_t>(min_length_),
                                      static_cast<uint64_t>(max_length_), &decoded, &reason_);
    if (rc != 0) {
      Fail(ErrnoName(-rc), reason_, -rc, "decodeRecord");
      return;
    }
    decoded_ = decoded;
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(decoded_)); }

  void DecorateError(Napi::Object error) override { error.Set("reason", Napi::String::New(error.Env(), reason_)); }

 private:
  int fd_;
  int64_t record_;
  int64_t min_length_;
  int64_t max_length_;
  uint8_t* out_;
  Napi::Reference<Napi::Uint8Array> into_;
  std::string reason_;
  uint64_t decoded_ = 0;
};

Napi::Value DecodeRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t record, min_length, max_length;
  if (!CheckArgCount(info, 5, "decodeRecord") || !GetFd(info, 0, "fd", &fd) || !GetOffset(info, 1, "recordOffset", &record) ||
      !GetOffset(info, 2, "minLength", &min_length) || !GetOffset(info, 3, "maxLength", &max_length)) {
    return env.Undefined();
  }
  if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "into must be a Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array into = info[4].As<Napi::Uint8Array>();
  if (min_length > max_length || static_cast<uint64_t>(max_length) > synthvhd::codec::kMaxDecodedBytes ||
      static_cast<uint64_t>(max_length) > into.ByteLength()) {
    Napi::RangeError::New(env, "decodeRecord: need minLength <= maxLength <= min(into.byteLength, maxDecodedBytes)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* worker = new DecodeRecordWorker(env, fd, record, min_length, max_length, into);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// maxStoredBytes(decodedLength): the codec's bound on a record's payload (synchronous, pure), so
// the TypeScript copy of the formula is checked against this one.
Napi::Value MaxStoredBytes(const Napi::CallbackInfo& info) {
  int64_t length;
  if (!CheckArgCount(info, 1, "maxStoredBytes") || !GetOffset(info, 0, "decodedLength", &length)) {
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), static_cast<double>(synthvhd::codec::MaxStoredBytes(static_cast<uint64_t>(length))));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("cloneRange", Napi::Function::New(env, CloneRange, "cloneRange"));
  exports.Set("copyFileRange", Napi::Function::New(env, CopyFileRange, "copyFileRange"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("dataRanges", Napi::Function::New(env, DataRanges, "dataRanges"));
  exports.Set("fsBlockSize", Napi::Function::New(env, FsBlockSize, "fsBlockSize"));
  exports.Set("fiemap", Napi::Function::New(env, Fiemap, "fiemap"));
  exports.Set("decodeRecord", Napi::Function::New(env, DecodeRecord, "decodeRecord"));
  exports.Set("maxStoredBytes", Napi::Function::New(env, MaxStoredBytes, "maxStoredBytes"));
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("headerBytes", Napi::Number::New(env, static_cast<double>(synthvhd::codec::kRecordHeaderBytes)));
  limits.Set("maxDecodedBytes", Napi::Number::New(env, static_cast<double>(synthvhd::codec::kMaxDecodedBytes)));
  exports.Set("recordLimits", limits);
  synthvhd::AddSourceFileCalls(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(synthvhd_native, Init)
