// SPDX-License-Identifier: MIT
//
// The one decoder of urBackup's compressed block record (docs/urbackup-image-formats.md §2,
// "Records"): uint32 LE stored size, uint32 LE mode (0 stored, 1 zlib, 2 zstd), then the payload.
// Pure C++ over zlib and libzstd: no N-API, no FUSE. Used by the FUSE read path
// (fuse_session.cc), by the N-API decodeRecord call (synthvhd_native.cc) that every TypeScript
// reader goes through, and by the fuzz targets.
//
// Every size in a record comes from a file that may be damaged or crafted: the stored size is
// checked against MaxStoredBytes() before anything is allocated or read, and a record decodes to
// exactly the length its caller expects (from the container's header and index), or it is corrupt.
#ifndef SYNTHVHD_RECORD_CODEC_H_
#define SYNTHVHD_RECORD_CODEC_H_

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

  // As DecodeFromFd, but the record may decode to any length in [min_length, max_length] (out holds
  // max_length bytes); the length is stored in *decoded_length. Only for a compressed file's last
  // block, which urBackup's reader accepts short (CompressedFile.cpp fillCache): its length is
  // learned once, and from then on it is decoded with DecodeFromFd and that exact length.
  int DecodeUpToFromFd(int fd, uint64_t record_offset, uint8_t* out, uint64_t min_length, uint64_t max_length,
                       uint64_t* decoded_length, std::string* why);

 private:
  struct State;
  State* state_;
};

}  // namespace synthvhd::codec

#endif  // SYNTHVHD_RECORD_CODEC_H_
