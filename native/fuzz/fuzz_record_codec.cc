// SPDX-License-Identifier: MIT
//
// urBackup's block record decoder on any bytes and any expected length: 0 or -EIO, never a write
// outside the output buffer (AddressSanitizer), never a read outside the record; decoding the same
// record from a file (DecodeFromFd) agrees with decoding it in memory (DecodeFromBytes).
//
// Input: u32le expected length (bounded to 4 MiB; when the top byte is 0xff, a length above the
// codec's bound with a 1-byte buffer, which must be refused before any write), then the record
// (u32le stored size, u32le mode, payload). Seeds: real zstd and zlib records of fixture
// images (fixtures/fuzz-seeds.ts), a stored record, and short hand-made ones.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../src/record_codec.h"
#include "fuzz_check.h"

namespace {

constexpr uint64_t kMaxFuzzLength = 4u << 20;

int MemoryFile() {
  static int fd = memfd_create("record", 0);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t raw;
  std::memcpy(&raw, data, 4);
  const uint8_t* record = data + 4;
  size_t record_length = size - 4;
  // One decoder for the whole run, as a FUSE worker keeps one: state left by a failed record must
  // not spoil the next.
  static synthvhd::codec::Decoder decoder;
  std::string why;
  if ((raw >> 24) == 0xff) {
    uint8_t one[1];
    uint64_t huge = synthvhd::codec::kMaxDecodedBytes + 1 + (raw & 0xffffff);
    FUZZ_CHECK(decoder.DecodeFromBytes(record, record_length, one, huge, &why) == -EIO);
    return 0;
  }
  uint64_t expected = raw % (kMaxFuzzLength + 1);
  // Exactly `expected` bytes, not zeroed (as the block pool's buffers are not): ASan reports any
  // write past them; only a successful decode's bytes are compared.
  std::unique_ptr<uint8_t[]> memory(new uint8_t[expected > 0 ? expected : 1]);
  int rc = decoder.DecodeFromBytes(record, record_length, memory.get(), expected, &why);
  FUZZ_CHECK(rc == 0 || rc == -EIO);
  FUZZ_CHECK(rc == 0 || !why.empty());

  // The same record from a file must give the same answer. Checked for blocks up to 256 KiB only:
  // a 2 MiB block twice per input would halve the runs a budget buys, and the file path differs
  // from the memory path only before the payload is decoded.
  if (expected > (256u << 10)) return 0;
  std::unique_ptr<uint8_t[]> from_fd(new uint8_t[expected > 0 ? expected : 1]);
  int fd = MemoryFile();
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  // The record at an odd offset, as records follow each other in a container.
  constexpr uint64_t kAt = 50;
  FUZZ_CHECK(pwrite(fd, record, record_length, kAt) == static_cast<ssize_t>(record_length));
  std::string why_fd;
  int rc_fd = decoder.DecodeFromFd(fd, kAt, from_fd.get(), expected, &why_fd);
  FUZZ_CHECK(rc_fd == rc);
  if (rc == 0 && expected > 0) FUZZ_CHECK(std::memcmp(memory.get(), from_fd.get(), expected) == 0);
  return 0;
}
