// SPDX-License-Identifier: MIT
//
// The read walk: (table, offset, length) -> the pieces of the reply, each one extent's part.
// Pure: no FUSE, no N-API, no I/O, no allocation (the FUSE read turns the pieces into an iovec
// or copies them into one buffer), so it is unit-tested and fuzzed on its own (native/fuzz/).
// Precondition: `extents` passed ValidateExtents for `size` (contiguous from 0, none empty).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "extent_table.h"

namespace synthvhd {

struct Piece {
  size_t extent;    // index in the table
  uint64_t skip;    // where the piece begins inside its extent
  uint64_t length;  // > 0
  uint64_t at;      // where the piece begins inside the reply
};

// Index of the extent holding `position` (< size): the last one starting at or before it.
size_t FindExtent(const std::vector<Extent>& extents, uint64_t position);

class ReadWalk {
 public:
  // A read of `length` bytes at `offset`, cut at the end of the file (nothing past it).
  ReadWalk(const std::vector<Extent>& extents, uint64_t size, uint64_t offset, uint64_t length);
  // Bytes the reply holds.
  uint64_t total() const { return total_; }
  // How many pieces Next will give (one per extent the read touches).
  size_t CountPieces() const;
  // The next piece, or false once `total()` bytes are given.
  bool Next(Piece* piece);

 private:
  const std::vector<Extent>& extents_;
  uint64_t offset_;
  uint64_t total_;
  uint64_t done_ = 0;
  size_t first_ = 0;
  size_t index_ = 0;
};

// Where a compressed piece's bytes begin in its decoded block, after checking that the block
// (`block_size` bytes, what was really decoded) holds all of them: false if it does not (the
// caller answers EIO rather than read past the block).
inline bool PieceInBlock(const Extent& extent, const Piece& piece, uint64_t block_size, uint64_t* from) {
  if (extent.skip > block_size || piece.skip > block_size - extent.skip) return false;
  uint64_t begin = extent.skip + piece.skip;
  if (piece.length > block_size - begin) return false;
  *from = begin;
  return true;
}

}  // namespace synthvhd
