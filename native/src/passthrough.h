// SPDX-License-Identifier: MIT
//
// FUSE passthrough (Linux >= 6.9, CONFIG_FUSE_PASSTHROUGH): an open file whose every byte is one
// real file's is answered by the kernel from that file (the backing file) with no request to us:
// no copy through /dev/fuse, the backing file's own page cache, its readahead. docs/fuse-passthrough.md.
//
// libfuse 3.14 (Debian 12) predates it, so the protocol is spoken here, around libfuse:
//   - INIT: the kernel offers FUSE_PASSTHROUGH in flags2 of its FUSE_INIT request; the server
//     accepts it by setting the same bit (and FUSE_INIT_EXT) in its reply and a max_stack_depth
//     of 1 (the backing file is on a file system that is not itself stacked). libfuse's reply is
//     amended on its way out, through fuse_session_custom_io's writev (include/uapi/linux/fuse.h,
//     protocol 7.40: fuse_init_out.flags2 at byte 32, max_stack_depth at byte 36).
//   - A backing file is registered with ioctl(FUSE_DEV_IOC_BACKING_OPEN) on /dev/fuse (needs
//     CAP_SYS_ADMIN), which returns a backing id; an OPEN reply with FOPEN_PASSTHROUGH and that id
//     in fuse_open_out.backing_id makes the open file a passthrough file.
//   - All opens of one FUSE inode that are open at once must name the same backing file (the
//     kernel refuses another one with EIO: fs/fuse/iomode.c), so backing ids are kept per path,
//     counted, and closed (FUSE_DEV_IOC_BACKING_CLOSE) when the last open of the path is released.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace synthvhd {

class Passthrough {
 public:
  // The libfuse I/O functions that watch INIT go by (userdata: the Session, which owns this).
  static const struct fuse_custom_io* Io();

  // Asked for at mount; enabled() once the kernel offered it and our INIT reply accepted it.
  void Request(int dev_fd) {
    requested_ = true;
    dev_fd_ = dev_fd;
  }
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }

  // The backing id for `path` served from `fd` (registered, or the one the path's opens share),
  // or -errno: EBUSY when the path's open files use another file (the kernel would refuse two).
  int Acquire(const std::string& path, int fd);
  // One open of `path` ended; the last one closes its backing id.
  void Release(const std::string& path);

  // Called by the I/O hooks (any FUSE worker thread).
  void SawRequest(const char* data, size_t length);
  void Amend(struct iovec* iov, int count);

 private:
  struct Backing {
    int id;
    dev_t dev;
    ino_t ino;
    unsigned opens;
  };
  bool requested_ = false;
  int dev_fd_ = -1;
  std::atomic<uint64_t> init_unique_{0};  // the INIT request's id while its reply is due
  std::atomic<bool> enabled_{false};
  std::mutex mu_;
  std::unordered_map<std::string, Backing> backings_;
};

}  // namespace synthvhd
