// SPDX-License-Identifier: MIT
#include "read_walk.h"

namespace synthvhd {

size_t FindExtent(const std::vector<Extent>& extents, uint64_t position) {
  size_t low = 0;
  size_t high = extents.size() - 1;
  while (low < high) {
    size_t middle = low + (high - low + 1) / 2;
    if (extents[middle].start <= position) low = middle;
    else high = middle - 1;
  }
  return low;
}

ReadWalk::ReadWalk(const std::vector<Extent>& extents, uint64_t size, uint64_t offset, uint64_t length)
    : extents_(extents), offset_(offset), total_(0) {
  if (offset >= size || extents.empty()) return;
  total_ = size - offset < length ? size - offset : length;
  first_ = FindExtent(extents, offset);
  index_ = first_;
}

size_t ReadWalk::CountPieces() const {
  if (total_ == 0) return 0;
  size_t pieces = 0;
  uint64_t end = offset_ + total_;
  for (size_t index = first_; index < extents_.size() && extents_[index].start < end; index++) pieces++;
  return pieces;
}

bool ReadWalk::Next(Piece* piece) {
  if (done_ >= total_ || index_ >= extents_.size()) return false;
  const Extent& extent = extents_[index_];
  uint64_t at = offset_ + done_;
  uint64_t skip = at - extent.start;
  uint64_t left = total_ - done_;
  uint64_t length = extent.length - skip < left ? extent.length - skip : left;
  *piece = Piece{index_, skip, length, done_};
  done_ += length;
  index_++;
  return true;
}

}  // namespace synthvhd
