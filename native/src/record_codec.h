// SPDX-License-Identifier: MIT
//
// urBackup's compressed block record (docs/formats: a VHDZ/VHDXZ block is stored as one record):
//   u32le stored size, u32le mode (0 stored, 1 zlib, 2 zstd), then `stored size` payload bytes,
// which decode to exactly the block's length. The one decoder of the native code: the FUSE read
// path and the fuzz targets call only this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace synthvhd::codec {

constexpr size_t kRecordHeaderBytes = 8;            // u32le stored size, u32le mode (0 stored, 1 zlib, 2 zstd)
constexpr uint64_t kMaxDecodedBytes = 64ull << 20;  // the one bound on a record's decoded size
uint64_t MaxStoredBytes(uint64_t decoded_length);   // the one bound on a record's stored payload

class Decoder {  // per-thread state (zstd DCtx, zlib stream); not thread-safe; reusable
 public:
  Decoder();
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
  // Reads the record at record_offset of fd (pread, EINTR-safe) and decodes exactly expected_length bytes
  // into out. Returns 0, or a negative errno (-EIO for a corrupt record, with a one-line reason in *why).
  int DecodeFromFd(int fd, uint64_t record_offset, uint8_t* out, uint64_t expected_length, std::string* why);
  // The same on a record already in memory (header + payload); used by fuzzing and tests.
  int DecodeFromBytes(const uint8_t* record, size_t record_length, uint8_t* out, uint64_t expected_length, std::string* why);

 private:
  struct State;
  State* state_;
};

}  // namespace synthvhd::codec
