// SPDX-License-Identifier: MIT
//
// urBackup's compressed block record, decoded (record_codec.h; docs/urbackup-image-formats.md §2).
// Facts from uroni/urbackup_backend fsimageplugin/CompressedFile.cpp: evictFromLruCache writes
// `u32 size, u32 mode, payload` with mode 1 (miniz mz_compress) or 2 (ZSTD_compress level 7) of a
// whole block; fillCache also reads mode 0 (stored, at most one block). The bounds are explained
// in docs/urbackup-image-formats.md §2 "Bounds".
#include "record_codec.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>  // ZSTD_getErrorCode, ZSTD_error_dstSize_tooSmall

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>

#include <unistd.h>

namespace synthvhd::codec {

namespace {

constexpr uint32_t kModeStored = 0;
constexpr uint32_t kModeZlib = 1;
constexpr uint32_t kModeZstd = 2;

// A payload buffer this large or smaller is kept for the next record; a larger one (only a block
// size urBackup never writes can need it) is freed after its record, so one hostile file cannot
// leave every thread holding the largest allowed payload.
constexpr size_t kKeptPayloadBytes = 8u << 20;

uint32_t ReadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// zstd.h ZSTD_COMPRESSBOUND: the most ZSTD_compress can write for n input bytes.
uint64_t ZstdCompressBound(uint64_t n) {
  return n + (n >> 8) + (n < (128u << 10) ? ((128u << 10) - n) >> 11 : 0);
}

// miniz mz_deflateBound, which mz_compressBound returns: the most mz_compress can write.
uint64_t MinizCompressBound(uint64_t n) {
  uint64_t a = 128 + (n * 110) / 100;
  uint64_t b = 128 + n + ((n / (31 * 1024)) + 1) * 5;
  return a > b ? a : b;
}

// Where a record's bytes come from: a file (pread) or memory.
class Source {
 public:
  Source(int fd, uint64_t base) : fd_(fd), base_(base) {}
  Source(const uint8_t* bytes, size_t length) : bytes_(bytes), length_(length) {}

  // Fills out[0, count) from `at` bytes into the record. 0, or a negative errno; a record that
  // ends early (EOF, or past the given bytes) is -EIO with the reason in *why.
  int Read(uint64_t at, uint8_t* out, uint64_t count, const char* what, std::string* why) const {
    if (fd_ < 0) {
      if (at > length_ || count > length_ - at) {
        *why = std::string("the record ends before its ") + what + " (" + std::to_string(length_) + " bytes given)";
        return -EIO;
      }
      if (count > 0) std::memcpy(out, bytes_ + at, count);
      return 0;
    }
    uint64_t done = 0;
    while (done < count) {
      uint64_t want = count - done;
      if (want > (1u << 30)) want = 1u << 30;
      ssize_t got = pread(fd_, out + done, static_cast<size_t>(want), static_cast<off_t>(base_ + at + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        *why = std::string("cannot read the ") + what + " at " + std::to_string(base_ + at + done) + ": " + std::strerror(err);
        return -err;
      }
      if (got == 0) {
        *why = std::string("the file ends inside the ") + what + " (at " + std::to_string(base_ + at + done) + ")";
        return -EIO;
      }
      done += static_cast<uint64_t>(got);
    }
    return 0;
  }

 private:
  int fd_ = -1;
  uint64_t base_ = 0;
  const uint8_t* bytes_ = nullptr;
  size_t length_ = 0;
};

std::string Range(uint64_t min_length, uint64_t max_length) {
  if (min_length == max_length) return std::to_string(max_length);
  return std::to_string(min_length) + ".." + std::to_string(max_length);
}

}  // namespace

uint64_t MaxStoredBytes(uint64_t decoded_length) {
  uint64_t zstd = ZstdCompressBound(decoded_length);
  uint64_t zlib = MinizCompressBound(decoded_length);
  return zstd > zlib ? zstd : zlib;
}

struct Decoder::State {
  ZSTD_DCtx* zstd = nullptr;
  z_stream zlib;
  bool zlib_ready = false;
  uint8_t* payload = nullptr;
  size_t payload_capacity = 0;

  State() { std::memset(&zlib, 0, sizeof zlib); }
  ~State() {
    if (zstd != nullptr) ZSTD_freeDCtx(zstd);
    if (zlib_ready) inflateEnd(&zlib);
    std::free(payload);
  }

  uint8_t* Payload(size_t size) {
    if (size <= payload_capacity) return payload;
    std::free(payload);
    payload_capacity = 0;
    // Records of one file differ in size: grow with headroom (up to what is kept), so that a
    // stream of slightly larger records does not get a fresh, page-faulting buffer each time.
    size_t capacity = size <= kKeptPayloadBytes ? std::min(kKeptPayloadBytes, std::max(size, size + size / 4)) : size;
    payload = static_cast<uint8_t*>(std::malloc(capacity > 0 ? capacity : 1));
    if (payload != nullptr) payload_capacity = capacity;
    return payload;
  }

  void ReleaseLargePayload() {
    if (payload_capacity <= kKeptPayloadBytes) return;
    std::free(payload);
    payload = nullptr;
    payload_capacity = 0;
  }

  int Decode(const Source& source, uint8_t* out, uint64_t min_length, uint64_t max_length, uint64_t* produced,
             std::string* why);
  int Inflate(const uint8_t* in, uint64_t in_length, uint8_t* out, uint64_t max_length, uint64_t* produced, std::string* why);
  int Unzstd(const uint8_t* in, uint64_t in_length, uint8_t* out, uint64_t max_length, uint64_t* produced, std::string* why);
};

int Decoder::State::Decode(const Source& source, uint8_t* out, uint64_t min_length, uint64_t max_length,
                           uint64_t* produced, std::string* why) {
  *produced = 0;
  if (min_length > max_length || (max_length > 0 && out == nullptr)) {
    *why = "bad arguments: decoded length " + Range(min_length, max_length);
    return -EINVAL;
  }
  // The expected length comes from the container's header: a block size beyond the bound is a
  // damaged or crafted file, refused before anything is read.
  if (max_length > kMaxDecodedBytes) {
    *why = "a block of " + std::to_string(max_length) + " bytes is larger than the " + std::to_string(kMaxDecodedBytes) +
           "-byte bound";
    return -EIO;
  }
  uint8_t header[kRecordHeaderBytes];
  int rc = source.Read(0, header, sizeof header, "record header", why);
  if (rc != 0) return rc;
  const uint64_t stored = ReadLe32(header);
  const uint32_t mode = ReadLe32(header + 4);
  if (mode == kModeStored) {
    // fillCache copies a stored payload into the block as it is: it is the block.
    if (stored < min_length || stored > max_length) {
      *why = "stored block of " + std::to_string(stored) + " bytes, expected " + Range(min_length, max_length);
      return -EIO;
    }
    rc = source.Read(kRecordHeaderBytes, out, stored, "stored block", why);
    if (rc != 0) return rc;
    *produced = stored;
    return 0;
  }
  if (mode != kModeZlib && mode != kModeZstd) {
    *why = "unknown mode " + std::to_string(mode) + " (0 stored, 1 zlib, 2 zstd)";
    return -EIO;
  }
  const uint64_t bound = MaxStoredBytes(max_length);
  if (stored > bound) {
    *why = "stored size " + std::to_string(stored) + " is larger than the " + std::to_string(bound) +
           " bytes a block of " + std::to_string(max_length) + " can compress to";
    return -EIO;
  }
  if (stored == 0) {
    *why = std::string(mode == kModeZlib ? "zlib" : "zstd") + ": empty payload";
    return -EIO;
  }
  uint8_t* payload = Payload(static_cast<size_t>(stored));
  if (payload == nullptr) {
    *why = "out of memory for a payload of " + std::to_string(stored) + " bytes";
    return -ENOMEM;
  }
  rc = source.Read(kRecordHeaderBytes, payload, stored, "compressed payload", why);
  if (rc == 0) {
    rc = mode == kModeZlib ? Inflate(payload, stored, out, max_length, produced, why)
                           : Unzstd(payload, stored, out, max_length, produced, why);
  }
  ReleaseLargePayload();
  if (rc != 0) return rc;
  if (*produced < min_length) {
    *why = std::string(mode == kModeZlib ? "zlib" : "zstd") + ": decodes to " + std::to_string(*produced) +
           " bytes, expected " + Range(min_length, max_length);
    return -EIO;
  }
  return 0;
}

int Decoder::State::Inflate(const uint8_t* in, uint64_t in_length, uint8_t* out, uint64_t max_length, uint64_t* produced,
                            std::string* why) {
  if (!zlib_ready) {
    if (inflateInit(&zlib) != Z_OK) {
      *why = "zlib: cannot initialise a stream";
      return -ENOMEM;
    }
    zlib_ready = true;
  } else if (inflateReset(&zlib) != Z_OK) {
    *why = "zlib: cannot reset the stream";
    return -EIO;
  }
  // Both fit a uInt: in_length <= MaxStoredBytes(64 MiB), max_length <= 64 MiB.
  zlib.next_in = const_cast<Bytef*>(in);
  zlib.avail_in = static_cast<uInt>(in_length);
  zlib.next_out = out;
  zlib.avail_out = static_cast<uInt>(max_length);
  int rc = inflate(&zlib, Z_FINISH);
  *produced = zlib.total_out;
  if (rc == Z_STREAM_END) return 0;  // bytes after the stream's end are ignored, as mz_uncompress does
  if (rc == Z_BUF_ERROR && zlib.avail_out == 0) {
    *why = "zlib: decodes to more than " + std::to_string(max_length) + " bytes";
  } else if (rc == Z_BUF_ERROR) {
    *why = "zlib: the stream is cut short after " + std::to_string(*produced) + " bytes";
  } else {
    *why = std::string("zlib: ") + (zlib.msg != nullptr ? zlib.msg : "corrupt stream");
  }
  return -EIO;
}

int Decoder::State::Unzstd(const uint8_t* in, uint64_t in_length, uint8_t* out, uint64_t max_length, uint64_t* produced,
                           std::string* why) {
  if (zstd == nullptr) {
    zstd = ZSTD_createDCtx();
    if (zstd == nullptr) {
      *why = "zstd: cannot create a decompression context";
      return -ENOMEM;
    }
  }
  // One-shot decoding writes straight into `out` (no window buffer of the size a frame claims);
  // the context is kept, ZSTD_decompress would allocate one per record.
  size_t rc = ZSTD_decompressDCtx(zstd, out, static_cast<size_t>(max_length), in, static_cast<size_t>(in_length));
  if (ZSTD_isError(rc)) {
    if (ZSTD_getErrorCode(rc) == ZSTD_error_dstSize_tooSmall) {
      *why = "zstd: decodes to more than " + std::to_string(max_length) + " bytes";
    } else {
      *why = std::string("zstd: ") + ZSTD_getErrorName(rc);
    }
    return -EIO;
  }
  *produced = rc;
  return 0;
}

Decoder::Decoder() : state_(new State()) {}

Decoder::~Decoder() { delete state_; }

int Decoder::DecodeFromFd(int fd, uint64_t record_offset, uint8_t* out, uint64_t expected_length, std::string* why) {
  uint64_t produced = 0;
  if (fd < 0) {
    *why = "bad arguments: fd " + std::to_string(fd);
    return -EBADF;
  }
  return state_->Decode(Source(fd, record_offset), out, expected_length, expected_length, &produced, why);
}

int Decoder::DecodeFromBytes(const uint8_t* record, size_t record_length, uint8_t* out, uint64_t expected_length,
                             std::string* why) {
  uint64_t produced = 0;
  if (record == nullptr && record_length > 0) {
    *why = "bad arguments: no record bytes";
    return -EINVAL;
  }
  return state_->Decode(Source(record, record_length), out, expected_length, expected_length, &produced, why);
}

int Decoder::DecodeUpToFromFd(int fd, uint64_t record_offset, uint8_t* out, uint64_t min_length, uint64_t max_length,
                              uint64_t* decoded_length, std::string* why) {
  if (fd < 0) {
    *why = "bad arguments: fd " + std::to_string(fd);
    return -EBADF;
  }
  return state_->Decode(Source(fd, record_offset), out, min_length, max_length, decoded_length, why);
}

}  // namespace synthvhd::codec
