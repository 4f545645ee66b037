// SPDX-License-Identifier: MIT
#include "session.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

extern char** environ;

namespace synthvhd {

const char* OpName(Op op) {
  switch (op) {
    case Op::kLookup: return "lookup";
    case Op::kGetattr: return "getattr";
    case Op::kReadlink: return "readlink";
    case Op::kOpen: return "open";
    case Op::kOpendir: return "opendir";
    case Op::kStatfs: return "statfs";
  }
  return "?";
}

namespace {

int64_t MonotonicMs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

// The reply of a FUSE_READ, as libfuse takes it.
class FuseReply : public ReplySink {
 public:
  explicit FuseReply(fuse_req_t req) : req_(req) {}
  void Error(int error) override { fuse_reply_err(req_, error); }
  void Iov(const struct iovec* iov, int count) override { fuse_reply_iov(req_, iov, count); }
  void Buffer(const char* data, size_t length) override { fuse_reply_buf(req_, data, length); }

 private:
  fuse_req_t req_;
};

}  // namespace

int LazyUnmount(const std::string& mountpoint) {
  if (geteuid() == 0) return umount2(mountpoint.c_str(), MNT_DETACH) == 0 ? 0 : errno;
  // What libfuse's fuse_kern_unmount runs for an unprivileged mount (lib/mount.c).
  const char* argv[] = {"fusermount3", "-u", "-q", "-z", "--", mountpoint.c_str(), nullptr};
  pid_t pid;
  int rc = posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char* const*>(argv), environ);
  if (rc != 0) return rc;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return errno;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EIO;
}

Session::Session() : read_core_(&Session::ReportReadFault, this) {}

Session::~Session() {
  // Reached once every thread let go (the loop ended, or it never ran).
  if (loop_thread_.joinable()) {
    if (loop_thread_.get_id() == std::this_thread::get_id()) loop_thread_.detach();
    else loop_thread_.join();
  }
  read_core_.StopDecodeAhead(false);
  if (se_ != nullptr) {
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
  }
}

void Session::ReportReadFault(void* context, ReadCore::Fault fault, const std::string& path, uint64_t offset, const std::string& why) {
  const char* op = fault == ReadCore::Fault::kBitmap ? "bitmap-error" : "decode-error";
  static_cast<Session*>(context)->Post(new Message{op, 0, path, static_cast<double>(offset), why});
}

// ----- lifecycle (main thread) -------------------------------------------------------------------

bool Session::Mount(Napi::Env env, Napi::Function dispatch, const std::string& mountpoint, std::vector<std::string> args, const MountConfig& config,
                    void (*finalize)(Napi::Env, void*, Session*), void* finalize_data, std::string* error) {
  // The loop's end is seen before the finalizer runs ("closed" reaches JS first): ended either way.
  if (state_ == State::kEnded || loop_done_.load()) {
    // Its thread-safe function, handles and inode table are gone with the old connection.
    *error = "this session has ended (it was unmounted): create a new FuseSession to mount again";
    return false;
  }
  if (state_ == State::kMounted) {
    *error = "this session is already mounted";
    return false;
  }
  config_ = config;
  read_core_.SetCacheLimit(config.cache_bytes);
  mountpoint_ = mountpoint;
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(&arg[0]);
  struct fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const struct fuse_lowlevel_ops& ops = FuseOps();
  se_ = fuse_session_new(&fargs, &ops, sizeof ops, this);
  fuse_opt_free_args(&fargs);
  if (se_ == nullptr) {
    *error = "libfuse refused the options (its reason is on stderr)";
    return false;
  }
  if (fuse_session_mount(se_, mountpoint_.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    *error = "libfuse could not mount (its reason is on stderr)";
    return false;
  }
  if (config.passthrough) {
    // The same /dev/fuse descriptor, with I/O functions that watch INIT go by (passthrough.h).
    int fd = fuse_session_fd(se_);
    passthrough_.Request(fd);
    if (fuse_session_custom_io(se_, Passthrough::Io(), fd) != 0) {
      fuse_session_unmount(se_);
      fuse_session_destroy(se_);
      se_ = nullptr;
      *error = "libfuse refused the passthrough I/O functions";
      return false;
    }
  }
  {
    std::lock_guard<std::mutex> lock(tsfn_mu_);
    tsfn_ = Tsfn::New(env, dispatch, "synthvhd.fuse", 0, 1, this, finalize, finalize_data);
    tsfn_open_ = true;
  }
  state_ = State::kMounted;
  std::shared_ptr<Session> self = shared_from_this();
  read_core_.StartDecodeAhead(self);
  loop_thread_ = std::thread([self] { self->LoopMain(); });
  return true;
}

void Session::LoopMain() {
  // Signals (SIGTERM, SIGINT) belong to Node's main thread; libfuse's workers inherit this mask.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  struct fuse_loop_config* loop = fuse_loop_cfg_create();
  int rc = -ENOMEM;
  if (loop != nullptr) {
    fuse_loop_cfg_set_clone_fd(loop, config_.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(loop, config_.threads);
    rc = fuse_session_loop_mt(se_, loop);
    fuse_loop_cfg_destroy(loop);
  }
  loop_done_.store(true);
  Post(new Message{"closed", 0, "", static_cast<double>(rc), ""});
  std::lock_guard<std::mutex> lock(tsfn_mu_);
  // Not after finalization: the function is freed then (node_api.cc deletes it at env teardown).
  if (tsfn_open_) {
    tsfn_open_ = false;
    tsfn_.Release();
  }
}

bool Session::OnFinalize() {
  {
    std::lock_guard<std::mutex> lock(tsfn_mu_);
    tsfn_open_ = false;
  }
  // No JavaScript will answer what it was handed.
  AnswerAllPending(EIO);
  if (!loop_done_.load()) {
    // The environment is going away while the kernel still talks to us. Nothing is freed: the
    // loop and ahead threads hold this session. Let the kernel go: the mount leaves the
    // namespace now, files still open keep reading natively (lookups answer EIO), and the loop
    // ends when the last of them is closed; the session is freed by whoever lets go last.
    LazyUnmount(mountpoint_);
    if (loop_thread_.joinable()) loop_thread_.detach();
    read_core_.StopDecodeAhead(true);
    state_ = State::kEnded;
    return false;
  }
  if (loop_thread_.joinable()) loop_thread_.join();
  read_core_.StopDecodeAhead(false);
  AnswerAllPending(EIO);
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    handles_.clear();
    dirs_.clear();
  }
  // The connection is gone: this only closes /dev/fuse (fuse_kern_unmount sees POLLERR).
  fuse_session_unmount(se_);
  fuse_session_destroy(se_);
  se_ = nullptr;
  state_ = State::kEnded;
  return true;
}

void Session::AnswerAllPending(int error) {
  std::unordered_map<uint64_t, Pending> pending;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    pending.swap(pending_);
  }
  for (auto& entry : pending) fuse_reply_err(entry.second.req, error);  // frees the request
}

// ----- registries --------------------------------------------------------------------------------

bool Session::TakePending(uint64_t id, Pending* out) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto found = pending_.find(id);
  if (found == pending_.end()) return false;
  *out = std::move(found->second);
  pending_.erase(found);
  return true;
}

uint64_t Session::AddHandle(std::shared_ptr<Handle> handle) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  uint64_t fh = next_fh_++;
  handles_.emplace(fh, std::move(handle));
  return fh;
}

std::shared_ptr<Handle> Session::FindHandle(uint64_t fh) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  auto found = handles_.find(fh);
  return found == handles_.end() ? nullptr : found->second;
}

void Session::ReleaseHandle(uint64_t fh) {
  std::shared_ptr<Handle> handle;
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    auto found = handles_.find(fh);
    if (found == handles_.end()) return;
    handle = std::move(found->second);
    handles_.erase(found);
  }
  if (!handle->passthrough_path.empty()) passthrough_.Release(handle->passthrough_path);
  // The fds close here (or when the last read in flight drops its reference).
}

uint64_t Session::AddDir(std::shared_ptr<Dir> dir) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  uint64_t fh = next_fh_++;
  dirs_.emplace(fh, std::move(dir));
  return fh;
}

std::shared_ptr<Dir> Session::FindDir(uint64_t fh) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  auto found = dirs_.find(fh);
  return found == dirs_.end() ? nullptr : found->second;
}

void Session::ReleaseDir(uint64_t fh) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  dirs_.erase(fh);
}

void Session::Stats(size_t* nodes, size_t* handles, size_t* dirs, size_t* pending, size_t* cache_bytes, size_t* cache_blocks) {
  *nodes = nodes_.Size();
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    *handles = handles_.size();
    *dirs = dirs_.size();
  }
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    *pending = pending_.size();
  }
  read_core_.CacheStats(cache_bytes, cache_blocks);
}

// ----- worker threads ----------------------------------------------------------------------------

void Session::Post(Message* message) {
  std::lock_guard<std::mutex> lock(tsfn_mu_);
  if (!tsfn_open_ || tsfn_.NonBlockingCall(message) != napi_ok) delete message;
}

void Session::Dispatch(fuse_req_t req, Op op, std::string path, double arg) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    id = next_id_++;
    pending_.emplace(id, Pending{req, op, path, arg});
  }
  auto* message = new Message{OpName(op), static_cast<double>(id), std::move(path), arg, ""};
  {
    std::lock_guard<std::mutex> lock(tsfn_mu_);
    if (tsfn_open_ && tsfn_.NonBlockingCall(message) == napi_ok) return;
  }
  delete message;
  Pending pending;
  if (TakePending(id, &pending)) fuse_reply_err(req, EIO);
}

void Session::Init(struct fuse_conn_info* conn) {
  // libfuse 3.14 refuses INIT unless conn->max_read repeats the max_read mount option
  // (lib/fuse_lowlevel.c do_init: "init() and fuse_session_new() requested different maximum
  // read size"), and leaves it 0 itself.
  conn->max_read = config_.max_read;
  if (config_.max_background > 0) conn->max_background = config_.max_background;
  // No splice: replying with fd buffers (fuse_reply_data, FUSE_CAP_SPLICE_WRITE) measured
  // 100-150 MB/s against 1.5-2.7 GB/s for pread + writev on the same 1 GiB first read here.
  // Node ids are forgotten with the kernel's inodes; they cannot back NFS file handles.
  conn->want &= ~FUSE_CAP_EXPORT_SUPPORT;
  // FUSE_CAP_AUTO_INVAL_DATA stays on (libfuse 3 default): the kernel drops a file's cached pages
  // when a getattr shows a new mtime or size, which is libfuse 2's auto_cache behaviour for us.
  Post(new Message{"init", 0, "", 0, ""});
}

void Session::Touch(uint64_t fh, Handle* handle) {
  if (config_.touch_interval_ms <= 0) return;
  int64_t now = MonotonicMs();
  int64_t last = handle->last_touch_ms.load(std::memory_order_relaxed);
  if (now - last < config_.touch_interval_ms) return;
  if (!handle->last_touch_ms.compare_exchange_strong(last, now)) return;
  Post(new Message{"touch", 0, "", static_cast<double>(fh), ""});
}

bool Session::GetattrOfOpenFile(fuse_req_t req, uint64_t fh) {
  std::shared_ptr<Handle> handle = FindHandle(fh);
  if (handle == nullptr || handle->table == nullptr) return false;
  if (handle->stale.load()) {
    fuse_reply_err(req, EIO);
    return true;
  }
  struct stat attr;
  {
    std::lock_guard<std::mutex> lock(handle->attr_mu);
    if (!handle->has_attr) return false;
    attr = handle->attr;
  }
  // As a read does: JavaScript re-checks the handle's backups (at most once per interval), so an
  // open file whose backup changed still turns stale while only its attributes are asked for.
  Touch(fh, handle.get());
  fuse_reply_attr(req, &attr, config_.attr_timeout);
  return true;
}

void Session::RememberAttr(uint64_t fh, const struct stat& attr) {
  std::shared_ptr<Handle> handle = FindHandle(fh);
  if (handle == nullptr || handle->table == nullptr) return;
  std::lock_guard<std::mutex> lock(handle->attr_mu);
  handle->attr = attr;
  handle->has_attr = true;
}

void Session::Read(fuse_req_t req, size_t size, off_t off, uint64_t fh) {
  std::shared_ptr<Handle> handle = FindHandle(fh);
  if (handle == nullptr) {
    fuse_reply_err(req, EBADF);
    return;
  }
  if (handle->stale.load()) {
    fuse_reply_err(req, EIO);
    return;
  }
  Touch(fh, handle.get());
  FuseReply reply(req);
  read_core_.Read(handle, size, static_cast<uint64_t>(off), &reply);
}

// What Readdir and Readdirplus share: the open directory, a checked offset and the reply buffer
// (`size` cut to it); nullptr when the request was answered with an error instead.
char* Session::StartListing(fuse_req_t req, uint64_t fh, off_t off, size_t* size, std::shared_ptr<Dir>* dir) {
  *dir = FindDir(fh);
  if (*dir == nullptr) {
    fuse_reply_err(req, EBADF);
    return nullptr;
  }
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return nullptr;
  }
  if (*size > kMaxReply) *size = kMaxReply;
  char* buffer = ThreadReplyBuffer(kMaxReply);
  if (buffer == nullptr) fuse_reply_err(req, ENOMEM);
  return buffer;
}

void Session::Readdir(fuse_req_t req, size_t size, off_t off, uint64_t fh) {
  std::shared_ptr<Dir> dir;
  char* buffer = StartListing(req, fh, off, &size, &dir);
  if (buffer == nullptr) return;
  size_t used = 0;
  for (size_t index = static_cast<size_t>(off); index < dir->entries.size(); index++) {
    const DirEntry& entry = dir->entries[index];
    struct stat st;
    std::memset(&st, 0, sizeof st);
    st.st_ino = static_cast<ino_t>(entry.ino);
    st.st_mode = static_cast<mode_t>(entry.type) << 12;  // fuse_add_direntry: d_type = st_mode >> 12
    size_t need = fuse_add_direntry(req, buffer + used, size - used, entry.name.c_str(), &st, static_cast<off_t>(index + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buffer, used);
}

void Session::Readdirplus(fuse_req_t req, size_t size, off_t off, uint64_t fh) {
  std::shared_ptr<Dir> dir;
  char* buffer = StartListing(req, fh, off, &size, &dir);
  if (buffer == nullptr) return;
  const std::string prefix = dir->path == "/" ? "/" : dir->path + "/";
  size_t used = 0;
  for (size_t index = static_cast<size_t>(off); index < dir->entries.size(); index++) {
    const DirEntry& entry = dir->entries[index];
    const off_t next = static_cast<off_t>(index + 1);
    struct fuse_entry_param param;
    std::memset(&param, 0, sizeof param);
    // Asked first with no buffer: the room it needs (the node is looked up only if it fits, as
    // the kernel counts every node id it receives and forgets each one later).
    size_t need = fuse_add_direntry_plus(req, nullptr, 0, entry.name.c_str(), &param, next);
    if (need > size - used) break;
    bool dot = entry.name == "." || entry.name == "..";
    if (entry.has_attr && !dot) {
      std::string path = prefix + entry.name;
      param.ino = nodes_.Lookup(path, entry.attr.st_mode & S_IFMT);
      nodes_.RememberAttr(path, entry.attr);
      param.attr = entry.attr;
      param.attr_timeout = config_.attr_timeout;
      param.entry_timeout = config_.entry_timeout;
    } else {
      // Node id 0: "no attributes for this entry" (fs/fuse/readdir.c fuse_direntplus_link).
      param.attr.st_ino = static_cast<ino_t>(entry.ino);
      param.attr.st_mode = static_cast<mode_t>(entry.type) << 12;
    }
    used += fuse_add_direntry_plus(req, buffer + used, size - used, entry.name.c_str(), &param, next);
  }
  fuse_reply_buf(req, buffer, used);
}

void Session::Release(uint64_t fh) {
  ReleaseHandle(fh);
  Post(new Message{"release", 0, "", static_cast<double>(fh), ""});
}

}  // namespace synthvhd
