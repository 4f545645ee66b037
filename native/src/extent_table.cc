// SPDX-License-Identifier: MIT
#include "extent_table.h"

#include <cmath>

#include <unistd.h>

#include "record_codec.h"

namespace synthvhd {

Source::~Source() {
  if (fd >= 0) close(fd);
}

namespace {

bool SafeInteger(double value) { return value >= 0 && value <= kMaxSafeInteger && value == std::floor(value); }

bool Fail(std::string* why, std::string reason) {
  *why = std::move(reason);
  return false;
}

}  // namespace

bool ValidateExtents(const double* numbers, size_t count, double size, size_t blob_size, size_t source_count, std::vector<Extent>* out,
                     std::string* why, const std::vector<uint64_t>& chain_sizes) {
  out->clear();
  if (!(size > 0 && SafeInteger(size))) return Fail(why, "bad size");
  if (count % kNumbersPerExtent != 0 || count == 0) return Fail(why, "extents: 7 numbers per extent, at least one");
  uint64_t file_size = static_cast<uint64_t>(size);
  size_t extents = count / kNumbersPerExtent;
  // More extents than bytes cannot be contiguous and non-empty: refuse before reserving.
  if (extents > file_size) return Fail(why, std::to_string(extents) + " extents for " + std::to_string(file_size) + " bytes");
  out->reserve(extents);
  uint64_t position = 0;
  for (size_t i = 0; i < extents; i++) {
    const double* v = numbers + i * kNumbersPerExtent;
    for (size_t k = 0; k < kNumbersPerExtent; k++) {
      if (!SafeInteger(v[k])) return Fail(why, "extent " + std::to_string(i) + ": numbers must be safe integers >= 0");
    }
    Extent extent{};
    extent.start = static_cast<uint64_t>(v[1]);
    extent.length = static_cast<uint64_t>(v[2]);
    // start, length and position are < 2^53: their sums cannot overflow.
    if (extent.start != position || extent.length == 0) return Fail(why, "extent " + std::to_string(i) + " does not continue at " + std::to_string(position));
    if (extent.length > file_size - position) return Fail(why, "extent " + std::to_string(i) + " runs past the size " + std::to_string(file_size));
    switch (static_cast<uint64_t>(v[0])) {
      case 0:
        extent.kind = ExtentKind::kZero;
        break;
      case 1:
        extent.kind = ExtentKind::kBytes;
        extent.offset = static_cast<uint64_t>(v[3]);
        if (extent.offset > blob_size || extent.length > blob_size - extent.offset) return Fail(why, "extent " + std::to_string(i) + ": bytes outside the blob");
        break;
      case 2:
        extent.kind = ExtentKind::kFile;
        if (v[3] >= static_cast<double>(source_count)) return Fail(why, "extent " + std::to_string(i) + ": file extent names no source");
        extent.source = static_cast<uint32_t>(v[3]);
        extent.offset = static_cast<uint64_t>(v[4]);
        break;
      case 3:
        extent.kind = ExtentKind::kCompressed;
        if (v[3] >= static_cast<double>(source_count)) return Fail(why, "extent " + std::to_string(i) + ": compressed extent names no source");
        extent.source = static_cast<uint32_t>(v[3]);
        extent.offset = static_cast<uint64_t>(v[4]);
        extent.block_length = static_cast<uint64_t>(v[5]);
        extent.skip = static_cast<uint64_t>(v[6]);
        if (extent.block_length > codec::kMaxDecodedBytes) {
          return Fail(why, "extent " + std::to_string(i) + ": a block of " + std::to_string(extent.block_length) + " bytes exceeds the bound");
        }
        if (extent.skip > extent.block_length || extent.length > extent.block_length - extent.skip) {
          return Fail(why, "extent " + std::to_string(i) + ": compressed extent outside its block");
        }
        break;
      case 4:
        extent.kind = ExtentKind::kChain;
        if (v[3] >= static_cast<double>(chain_sizes.size())) return Fail(why, "extent " + std::to_string(i) + ": chain extent names no chain");
        extent.source = static_cast<uint32_t>(v[3]);
        extent.offset = static_cast<uint64_t>(v[4]);
        if (extent.offset > chain_sizes[extent.source] || extent.length > chain_sizes[extent.source] - extent.offset) {
          return Fail(why, "extent " + std::to_string(i) + ": chain extent past its chain's disk");
        }
        break;
      default:
        return Fail(why, "extent " + std::to_string(i) + ": unknown extent kind");
    }
    position += extent.length;
    out->push_back(extent);
  }
  if (position != file_size) return Fail(why, "extents cover " + std::to_string(position) + " bytes, not the size " + std::to_string(file_size));
  return true;
}

}  // namespace synthvhd
