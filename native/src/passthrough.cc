// SPDX-License-Identifier: MIT
#include "passthrough.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "session.h"

namespace synthvhd {

namespace {

// The FUSE protocol's numbers (include/uapi/linux/fuse.h, 7.40; Debian 12's header stops at 7.38).
constexpr uint32_t kOpcodeInit = 26;
constexpr uint32_t kInitExt = 1u << 30;          // FUSE_INIT_EXT: flags2 is meaningful
constexpr uint32_t kPassthroughFlags2 = 1u << 5;  // FUSE_PASSTHROUGH (bit 37 of the 64-bit flags)
constexpr size_t kInHeader = 40;                  // struct fuse_in_header
constexpr size_t kOutHeader = 16;                 // struct fuse_out_header
// struct fuse_init_in after the header: major, minor, max_readahead, flags, flags2.
constexpr size_t kInitInFlags = 12;
constexpr size_t kInitInFlags2 = 16;
// struct fuse_init_out: flags at 12, flags2 at 32, max_stack_depth at 36.
constexpr size_t kInitOutFlags = 12;
constexpr size_t kInitOutFlags2 = 32;
constexpr size_t kInitOutStackDepth = 36;
constexpr size_t kInitOutMin = 40;

struct BackingMap {  // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN
constexpr unsigned long kBackingClose = _IOW(229, 2, uint32_t);   // FUSE_DEV_IOC_BACKING_CLOSE

uint32_t Load32(const char* at) {
  uint32_t value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

ssize_t HookRead(int fd, void* buf, size_t length, void* userdata) {
  ssize_t n = read(fd, buf, length);
  if (n > 0) static_cast<Session*>(userdata)->passthrough().SawRequest(static_cast<const char*>(buf), static_cast<size_t>(n));
  return n;
}

ssize_t HookWritev(int fd, struct iovec* iov, int count, void* userdata) {
  static_cast<Session*>(userdata)->passthrough().Amend(iov, count);
  return writev(fd, iov, count);
}

const struct fuse_custom_io kIo = {HookWritev, HookRead, nullptr, nullptr};

}  // namespace

const struct fuse_custom_io* Passthrough::Io() { return &kIo; }

void Passthrough::SawRequest(const char* data, size_t length) {
  // Only INIT matters, and it is the first request of a connection: once answered, nothing here.
  if (!requested_ || enabled_.load(std::memory_order_relaxed) || length < kInHeader + kInitInFlags2 + 4) return;
  if (Load32(data + 4) != kOpcodeInit) return;
  uint32_t flags = Load32(data + kInHeader + kInitInFlags);
  uint32_t flags2 = Load32(data + kInHeader + kInitInFlags2);
  if ((flags & kInitExt) == 0 || (flags2 & kPassthroughFlags2) == 0) return;  // this kernel cannot
  uint64_t unique;
  std::memcpy(&unique, data + 8, sizeof unique);
  init_unique_.store(unique, std::memory_order_release);
}

void Passthrough::Amend(struct iovec* iov, int count) {
  uint64_t due = init_unique_.load(std::memory_order_acquire);
  if (due == 0 || count < 2 || iov[0].iov_len < kOutHeader || iov[1].iov_len < kInitOutMin) return;
  const char* header = static_cast<const char*>(iov[0].iov_base);
  uint64_t unique;
  std::memcpy(&unique, header + 8, sizeof unique);
  int32_t error;
  std::memcpy(&error, header + 4, sizeof error);
  if (unique != due || error != 0) return;
  char* out = static_cast<char*>(iov[1].iov_base);
  uint32_t flags = Load32(out + kInitOutFlags) | kInitExt;
  uint32_t flags2 = Load32(out + kInitOutFlags2) | kPassthroughFlags2;
  uint32_t depth = 1;
  std::memcpy(out + kInitOutFlags, &flags, sizeof flags);
  std::memcpy(out + kInitOutFlags2, &flags2, sizeof flags2);
  std::memcpy(out + kInitOutStackDepth, &depth, sizeof depth);
  init_unique_.store(0, std::memory_order_relaxed);
  enabled_.store(true, std::memory_order_release);
}

int Passthrough::Acquire(const std::string& path, int fd) {
  if (!enabled()) return -ENOTSUP;
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  std::lock_guard<std::mutex> lock(mu_);
  auto found = backings_.find(path);
  if (found != backings_.end()) {
    Backing& backing = found->second;
    if (backing.dev != st.st_dev || backing.ino != st.st_ino) return -EBUSY;
    backing.opens++;
    return backing.id;
  }
  BackingMap map{fd, 0, 0};
  int id = ioctl(dev_fd_, kBackingOpen, &map);
  if (id < 0) {
    int error = errno;
    // Not allowed to (it needs CAP_SYS_ADMIN): never again on this connection, plain opens only.
    if (error == EPERM) enabled_.store(false, std::memory_order_release);
    return -error;
  }
  backings_.emplace(path, Backing{id, st.st_dev, st.st_ino, 1});
  return id;
}

void Passthrough::Release(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = backings_.find(path);
  if (found == backings_.end() || --found->second.opens > 0) return;
  uint32_t id = static_cast<uint32_t>(found->second.id);
  ioctl(dev_fd_, kBackingClose, &id);
  backings_.erase(found);
}

}  // namespace synthvhd
