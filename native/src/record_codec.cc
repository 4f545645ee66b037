// SPDX-License-Identifier: MIT
//
// urBackup's block record decoder (see record_codec.h). Every size comes from a backup file, so
// each is checked before it is used: the expected length against kMaxDecodedBytes, the stored
// size against MaxStoredBytes, and the decoder must produce exactly the expected length (a zlib
// or zstd stream that ends early or wants to go on is a corrupt record, not a short block).

#include "record_codec.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

namespace synthvhd::codec {

namespace {

uint32_t ReadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// pread exactly `length` bytes (EINTR retried); a file that ends early is a corrupt record.
int PreadExactly(int fd, uint8_t* into, uint64_t length, uint64_t offset) {
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, into + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

int Corrupt(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
  return -EIO;
}

}  // namespace

// A stored record is exactly the block; a compressed one may be slightly larger than its input
// for incompressible data (zlib's and zstd's worst cases are far below 1/16 + 1 KiB).
uint64_t MaxStoredBytes(uint64_t decoded_length) { return decoded_length + decoded_length / 16 + 1024; }

namespace {

struct DecoderState {
  ZSTD_DCtx* zstd = nullptr;  // created on first use, kept: ZSTD_decompress would make one per block
  z_stream zlib;
  bool zlib_ready = false;
  uint8_t* payload = nullptr;  // grown to the largest compressed payload seen, kept
  size_t payload_size = 0;
};

int DecodePayload(DecoderState* state, uint32_t mode, const uint8_t* payload, uint64_t stored, uint8_t* out, uint64_t expected_length,
                  std::string* why);

}  // namespace

struct Decoder::State : DecoderState {};

Decoder::Decoder() : state_(new State()) { std::memset(&state_->zlib, 0, sizeof state_->zlib); }

Decoder::~Decoder() {
  if (state_->zstd != nullptr) ZSTD_freeDCtx(state_->zstd);
  if (state_->zlib_ready) inflateEnd(&state_->zlib);
  free(state_->payload);
  delete state_;
}

namespace {

// Checks the header fields against the expected length. 0 or -EIO.
int CheckHeader(uint64_t stored, uint32_t mode, uint64_t expected_length, std::string* why) {
  if (expected_length > kMaxDecodedBytes) {
    return Corrupt(why, "a block of " + std::to_string(expected_length) + " bytes exceeds the " + std::to_string(kMaxDecodedBytes) + "-byte bound");
  }
  if (mode > 2) return Corrupt(why, "unknown block mode " + std::to_string(mode));
  if (stored > MaxStoredBytes(expected_length)) {
    return Corrupt(why, "stored size " + std::to_string(stored) + " is implausible for a block of " + std::to_string(expected_length));
  }
  if (mode == 0 && stored != expected_length) {
    return Corrupt(why, "stored block of " + std::to_string(stored) + " bytes, expected " + std::to_string(expected_length));
  }
  return 0;
}

}  // namespace

int Decoder::DecodeFromBytes(const uint8_t* record, size_t record_length, uint8_t* out, uint64_t expected_length, std::string* why) {
  if (record == nullptr || record_length < kRecordHeaderBytes) return Corrupt(why, "the record is shorter than its 8-byte header");
  if (out == nullptr && expected_length > 0) return Corrupt(why, "no output buffer");
  uint64_t stored = ReadLe32(record);
  uint32_t mode = ReadLe32(record + 4);
  int rc = CheckHeader(stored, mode, expected_length, why);
  if (rc != 0) return rc;
  if (stored > record_length - kRecordHeaderBytes) {
    return Corrupt(why, "stored size " + std::to_string(stored) + " runs past the record's " + std::to_string(record_length - kRecordHeaderBytes) + " bytes");
  }
  const uint8_t* payload = record + kRecordHeaderBytes;
  if (mode == 0) {
    if (expected_length > 0) std::memcpy(out, payload, expected_length);
    return 0;
  }
  return DecodePayload(state_, mode, payload, stored, out, expected_length, why);
}

int Decoder::DecodeFromFd(int fd, uint64_t record_offset, uint8_t* out, uint64_t expected_length, std::string* why) {
  if (out == nullptr && expected_length > 0) return Corrupt(why, "no output buffer");
  uint8_t header[kRecordHeaderBytes];
  if (record_offset > (1ull << 62)) return Corrupt(why, "record offset " + std::to_string(record_offset) + " is out of range");
  if (PreadExactly(fd, header, sizeof header, record_offset) != 0) return Corrupt(why, "cannot read the block header");
  uint64_t stored = ReadLe32(header);
  uint32_t mode = ReadLe32(header + 4);
  int rc = CheckHeader(stored, mode, expected_length, why);
  if (rc != 0) return rc;
  if (mode == 0) {
    // Straight into the block: no copy.
    if (PreadExactly(fd, out, expected_length, record_offset + kRecordHeaderBytes) != 0) return Corrupt(why, "cannot read the stored block");
    return 0;
  }
  State* state = state_;
  if (stored > state->payload_size || state->payload == nullptr) {
    size_t size = stored > 0 ? static_cast<size_t>(stored) : 1;
    void* fresh = malloc(size);
    if (fresh == nullptr) return Corrupt(why, "out of memory for a record of " + std::to_string(stored));
    free(state->payload);
    state->payload = static_cast<uint8_t*>(fresh);
    state->payload_size = size;
  }
  if (PreadExactly(fd, state->payload, stored, record_offset + kRecordHeaderBytes) != 0) return Corrupt(why, "cannot read the compressed payload");
  return DecodePayload(state_, mode, state->payload, stored, out, expected_length, why);
}

namespace {

// Decodes a zlib (mode 1) or zstd (mode 2) payload into exactly expected_length bytes.
int DecodePayload(DecoderState* state, uint32_t mode, const uint8_t* payload, uint64_t stored, uint8_t* out, uint64_t expected_length,
                  std::string* why) {
  if (mode == 1) {
    z_stream& stream = state->zlib;
    if (!state->zlib_ready) {
      std::memset(&stream, 0, sizeof stream);
      if (inflateInit(&stream) != Z_OK) return Corrupt(why, "zlib: inflateInit failed");
      state->zlib_ready = true;
    } else if (inflateReset(&stream) != Z_OK) {
      return Corrupt(why, "zlib: inflateReset failed");
    }
    // A zero-length output still needs a valid pointer for zlib.
    uint8_t none = 0;
    stream.next_in = const_cast<Bytef*>(payload);
    stream.avail_in = static_cast<uInt>(stored);
    stream.next_out = expected_length > 0 ? out : &none;
    stream.avail_out = static_cast<uInt>(expected_length);
    int rc = inflate(&stream, Z_FINISH);
    uint64_t produced = stream.total_out;
    if (rc == Z_STREAM_END && produced == expected_length) return 0;
    if (rc == Z_STREAM_END) return Corrupt(why, "zlib: short block (" + std::to_string(produced) + " bytes)");
    if (rc == Z_BUF_ERROR && stream.avail_out == 0) return Corrupt(why, "zlib: the block is longer than " + std::to_string(expected_length) + " bytes");
    return Corrupt(why, std::string("zlib: ") + (stream.msg != nullptr ? stream.msg : "corrupt stream"));
  }
  if (state->zstd == nullptr) {
    state->zstd = ZSTD_createDCtx();
    if (state->zstd == nullptr) return Corrupt(why, "zstd: cannot create a decompression context");
  }
  uint8_t none = 0;
  size_t produced = ZSTD_decompressDCtx(state->zstd, expected_length > 0 ? out : &none, static_cast<size_t>(expected_length), payload, static_cast<size_t>(stored));
  if (ZSTD_isError(produced)) return Corrupt(why, std::string("zstd: ") + ZSTD_getErrorName(produced));
  if (produced != expected_length) return Corrupt(why, "zstd: short block (" + std::to_string(produced) + " bytes)");
  return 0;
}

}  // namespace

}  // namespace synthvhd::codec
