// SPDX-License-Identifier: MIT
//
// One FUSE session: libfuse's lifecycle (mount, the multi-threaded loop on its own thread, the
// end), and the state its worker threads share: the inode table, the requests handed to
// JavaScript and not yet answered, the open handles and directories, and the read core. Owned by
// shared_ptr: the N-API object (napi_bridge.cc), the loop thread and the decode-ahead threads
// each hold it, so nothing a thread uses is freed under it, whatever ends first.
//
// Requests that need a decision (lookup, getattr, readlink, open, opendir, statfs) are handed to
// JavaScript through one thread-safe function and answered later from the main thread (a
// fuse_req_t may be answered from any thread, at any time, exactly once: fuse_lowlevel.h).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "inode_table.h"
#include "passthrough.h"
#include "read_core.h"

namespace synthvhd {

enum class Op : uint8_t { kLookup, kGetattr, kReadlink, kOpen, kOpendir, kStatfs };
const char* OpName(Op op);

struct Pending {
  fuse_req_t req;
  Op op;
  std::string path;
  double arg;  // what Dispatch passed (getattr: the open file's fh, 0 for none)
};

// What a worker thread hands to the main thread. `id` > 0: a request to answer (replyX(id, ...));
// 0: an event (fh, record, code in `arg`).
struct Message {
  std::string op;
  double id = 0;
  std::string path;
  double arg = 0;
  std::string text;
};

struct DirEntry {
  std::string name;
  uint64_t ino;   // d_ino: JavaScript's inode number (what getattr reports)
  uint32_t type;  // d_type: S_IFMT bits >> 12, 0 = unknown
  // What a lookup of the entry answers, when JavaScript gave it: READDIRPLUS hands it over.
  bool has_attr = false;
  struct stat attr {};
};

struct Dir {
  std::string path;  // the directory's path in the mount ("/" or "/a/b")
  std::vector<DirEntry> entries;
};

class Session;
void CallJs(Napi::Env env, Napi::Function dispatch, Session* session, Message* message);
using Tsfn = Napi::TypedThreadSafeFunction<Session, Message, CallJs>;

struct MountConfig {
  double attr_timeout = 1.0;
  double entry_timeout = 1.0;
  int64_t touch_interval_ms = 1000;
  unsigned max_background = 0;
  unsigned max_read = 0;
  unsigned threads = 10;
  bool clone_fd = false;
  size_t cache_bytes = 64u << 20;
  // Accept FUSE passthrough when the kernel offers it (passthrough.h).
  bool passthrough = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ----- main thread -------------------------------------------------------------------------
  // Mounts and starts the loop. False with *error set when refused (mounted already, ended, or
  // libfuse failed). `finalize` runs on the main thread once the thread-safe function is gone.
  bool Mount(Napi::Env env, Napi::Function dispatch, const std::string& mountpoint, std::vector<std::string> args, const MountConfig& config,
             void (*finalize)(Napi::Env, void*, Session*), void* finalize_data, std::string* error);
  // The thread-safe function is finalized: the loop ended (everything is released and joined),
  // or the JS environment is going away while it runs (then the session lets the kernel go:
  // requests are answered EIO, a lazy unmount is started, and the threads finish on their own,
  // each holding the session). True when the session has ended.
  bool OnFinalize();
  const std::string& mountpoint() const { return mountpoint_; }

  bool TakePending(uint64_t id, Pending* out);
  uint64_t AddHandle(std::shared_ptr<Handle> handle);
  std::shared_ptr<Handle> FindHandle(uint64_t fh);
  void ReleaseHandle(uint64_t fh);
  uint64_t AddDir(std::shared_ptr<Dir> dir);
  InodeTable& nodes() { return nodes_; }
  void Stats(size_t* nodes, size_t* handles, size_t* dirs, size_t* pending, size_t* cache_bytes, size_t* cache_blocks);
  const MountConfig& config() const { return config_; }
  Passthrough& passthrough() { return passthrough_; }

  // ----- worker threads ----------------------------------------------------------------------
  void Post(Message* message);
  // Hands a request to JavaScript; on failure (the session is closing) answers EIO at once.
  void Dispatch(fuse_req_t req, Op op, std::string path, double arg);
  void Init(struct fuse_conn_info* conn);
  void Read(fuse_req_t req, size_t size, off_t off, uint64_t fh);
  void Readdir(fuse_req_t req, size_t size, off_t off, uint64_t fh);
  // READDIRPLUS: entries with attributes from JavaScript go with them (their node looked up,
  // as a LOOKUP would); the others as plain entries (node id 0: the kernel looks them up).
  void Readdirplus(fuse_req_t req, size_t size, off_t off, uint64_t fh);
  // A getattr of open file `fh`: answered here from the attributes JavaScript gave for it before
  // (EIO once stale), true; false when JavaScript must answer (none given yet, not a virtual file).
  bool GetattrOfOpenFile(fuse_req_t req, uint64_t fh);
  // Keeps `attr` as open file `fh`'s attributes (ReplyAttr of a getattr that named it).
  void RememberAttr(uint64_t fh, const struct stat& attr);
  void Release(uint64_t fh);
  void ReleaseDir(uint64_t fh);

 private:
  enum class State { kNew, kMounted, kEnded };
  static void ReportReadFault(void* context, ReadCore::Fault fault, const std::string& path, uint64_t offset, const std::string& why);
  void LoopMain();
  void Touch(uint64_t fh, Handle* handle);
  char* StartListing(fuse_req_t req, uint64_t fh, off_t off, size_t* size, std::shared_ptr<Dir>* dir);
  std::shared_ptr<Dir> FindDir(uint64_t fh);
  void AnswerAllPending(int error);

  MountConfig config_;
  State state_ = State::kNew;  // main thread only
  struct fuse_session* se_ = nullptr;
  std::string mountpoint_;
  std::thread loop_thread_;
  std::atomic<bool> loop_done_{false};

  std::mutex tsfn_mu_;
  Tsfn tsfn_;
  bool tsfn_open_ = false;  // under tsfn_mu_: calls are allowed until the function is released or finalized

  InodeTable nodes_;

  std::mutex pending_mu_;
  std::unordered_map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 1;

  std::mutex handles_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;
  std::unordered_map<uint64_t, std::shared_ptr<Dir>> dirs_;
  uint64_t next_fh_ = 1;

  ReadCore read_core_;
  Passthrough passthrough_;
};

// libfuse's low-level operations (fuse_ops.cc); userdata is the Session.
const struct fuse_lowlevel_ops& FuseOps();

// Lazy unmount: umount2(MNT_DETACH) as root, else `fusermount3 -u -q -z`. 0 or an errno.
int LazyUnmount(const std::string& mountpoint);

}  // namespace synthvhd
