// SPDX-License-Identifier: MIT
#include "inode_table.h"

#include <sys/stat.h>

#include <utility>

namespace synthvhd {

namespace {
constexpr uint64_t kRootId = 1;  // FUSE_ROOT_ID
}  // namespace

InodeTable::InodeTable() : next_ino_(kRootId + 1) {
  Node root;
  root.path = "/";
  root.nlookup = 1;
  root.type = S_IFDIR;
  nodes_.emplace(kRootId, std::move(root));
  by_path_.emplace("/", kRootId);
}

bool InodeTable::Path(uint64_t ino, std::string* path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = nodes_.find(ino);
  if (found == nodes_.end()) return false;
  *path = found->second.path;
  return true;
}

uint64_t InodeTable::Lookup(const std::string& path, mode_t type) {
  // One node id per path while the kernel remembers it; a path whose file type changed (a
  // directory replaced by a file) gets a new id, since the kernel refuses a type change of a
  // known inode (fs/fuse/dir.c fuse_lookup_name: "inode type changed" -> EIO).
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t ino;
  auto by = by_path_.find(path);
  if (by != by_path_.end() && nodes_[by->second].type == type) {
    ino = by->second;
  } else {
    ino = next_ino_++;
    Node node;
    node.path = path;
    node.type = type;
    nodes_.emplace(ino, std::move(node));
    by_path_[path] = ino;
  }
  nodes_[ino].nlookup++;
  return ino;
}

void InodeTable::Forget(uint64_t ino, uint64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  ForgetLocked(ino, count);
}

void InodeTable::ForgetLocked(uint64_t ino, uint64_t count) {
  if (ino == kRootId) return;
  auto found = nodes_.find(ino);
  if (found == nodes_.end()) return;
  Node& node = found->second;
  node.nlookup -= count < node.nlookup ? count : node.nlookup;
  if (node.nlookup > 0) return;
  auto by = by_path_.find(node.path);
  if (by != by_path_.end() && by->second == ino) by_path_.erase(by);
  nodes_.erase(found);
}

void InodeTable::RememberAttr(const std::string& path, const struct stat& attr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto by = by_path_.find(path);
  if (by == by_path_.end()) return;
  Node& node = nodes_[by->second];
  if ((attr.st_mode & S_IFMT) != node.type) return;
  node.attr = attr;
  node.has_attr = true;
}

bool InodeTable::LastAttr(const std::string& path, struct stat* attr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto by = by_path_.find(path);
  if (by == by_path_.end()) return false;
  const Node& node = nodes_[by->second];
  if (!node.has_attr) return false;
  *attr = node.attr;
  return true;
}

size_t InodeTable::Size() {
  std::lock_guard<std::mutex> lock(mu_);
  return nodes_.size();
}

}  // namespace synthvhd
