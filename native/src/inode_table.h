// SPDX-License-Identifier: MIT
//
// The mount's node ids: one per path while the kernel remembers it (lookup counts, FORGET). The
// kernel's node ids are this table's; the st_ino a file reports is JavaScript's (getattr's ino).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace synthvhd {

class InodeTable {
 public:
  InodeTable();
  // The path of node `ino`, or false (the kernel named a node it was told to forget: ESTALE).
  bool Path(uint64_t ino, std::string* path);
  // The node for `path` with file type `type` (S_IFMT bits), its lookup count raised by one.
  uint64_t Lookup(const std::string& path, mode_t type);
  void Forget(uint64_t ino, uint64_t count);
  size_t Size();
  // The attributes JavaScript last gave for `path` (lookup or getattr), kept while its node is:
  // what a file opened now starts with (Session::GetattrOfOpenFile).
  void RememberAttr(const std::string& path, const struct stat& attr);
  bool LastAttr(const std::string& path, struct stat* attr);

 private:
  struct Node {
    std::string path;
    uint64_t nlookup = 0;
    mode_t type = 0;
    bool has_attr = false;
    struct stat attr {};
  };
  void ForgetLocked(uint64_t ino, uint64_t count);

  std::mutex mu_;
  std::unordered_map<uint64_t, Node> nodes_;
  std::unordered_map<std::string, uint64_t> by_path_;
  uint64_t next_ino_;
};

}  // namespace synthvhd
