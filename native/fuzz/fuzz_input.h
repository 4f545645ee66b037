// SPDX-License-Identifier: MIT
// A fuzz input read front to back: Take copies the next n bytes, or says there are not that many.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

struct FuzzInput {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  bool Take(void* out, size_t n) {
    if (size - at < n) return false;
    std::memcpy(out, data + at, n);
    at += n;
    return true;
  }
};
