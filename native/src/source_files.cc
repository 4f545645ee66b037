// SPDX-License-Identifier: MIT
//
// Looking at a backup's source files in one pool job per question, for the mount's walk: an
// `ls -lR` of 10 000 disks asks some 300 000 of them, and as separate promises each open, fstat,
// readlink, read and close paid its own thread-pool round trip (docs/architecture.md §7.1).
//
//   lstatPaths(paths, follow) -> Promise<{ fields: Float64Array, errors: Int32Array }>
//       lstat (stat when `follow`) of every path; entry i's STAT_FIELDS numbers are
//       fields[i * 12 .. i * 12 + 12): dev, ino, mode, nlink, uid, gid, size, blksize, blocks,
//       atimeMs, mtimeMs, ctimeMs (times as Node computes them: sec * 1e3 + nsec / 1e6);
//       errors[i] is 0 or the positive errno of that path's call.
//   openConfined(path, root, maxSize, readLength) -> Promise<{ fd, size, mtimeMs, bytes }>
//       docs/architecture.md "Who may read what": open read-only and non-blocking, with O_NOFOLLOW
//       when `root` is not "" (a final symlink is refused); the opened file must be a regular
//       file of at most `maxSize` bytes (fstat) and, when `root` is given, the kernel's path of
//       the descriptor (/proc/self/fd/N, every directory symlink on the way resolved) must be
//       `root` or below it. All checked before a byte is read. Then, when `readLength` > 0, up to
//       that many bytes from offset 0 are read into `bytes` and the file is closed (fd -1);
//       otherwise the open fd is handed over (the caller closes it) and `bytes` is empty.
//       Refusals reject with code E_SYMLINK (open said ELOOP), E_NOT_REGULAR, E_TOO_LARGE (with
//       `size`) or E_OUTSIDE_ROOT (with `actual`); failed calls with their errno name.

#include <napi.h>

#include "promise_worker.h"

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

namespace synthvhd {

namespace {

constexpr size_t kStatFields = 12;

double MsFromTimespec(const struct timespec& time) {
  return static_cast<double>(time.tv_sec) * 1e3 + static_cast<double>(time.tv_nsec) / 1e6;
}

void FillStatFields(const struct stat& info, double* out) {
  out[0] = static_cast<double>(info.st_dev);
  out[1] = static_cast<double>(info.st_ino);
  out[2] = static_cast<double>(info.st_mode);
  out[3] = static_cast<double>(info.st_nlink);
  out[4] = static_cast<double>(info.st_uid);
  out[5] = static_cast<double>(info.st_gid);
  out[6] = static_cast<double>(info.st_size);
  out[7] = static_cast<double>(info.st_blksize);
  out[8] = static_cast<double>(info.st_blocks);
  out[9] = MsFromTimespec(info.st_atim);
  out[10] = MsFromTimespec(info.st_mtim);
  out[11] = MsFromTimespec(info.st_ctim);
}

class LstatPathsWorker : public PromiseWorker {
 public:
  LstatPathsWorker(Napi::Env env, std::vector<std::string> paths, bool follow)
      : PromiseWorker(env, "synthvhd.lstatPaths"), paths_(std::move(paths)), follow_(follow) {}

 protected:
  void Execute() override {
    fields_.assign(paths_.size() * kStatFields, 0);
    errors_.assign(paths_.size(), 0);
    for (size_t i = 0; i < paths_.size(); i++) {
      struct stat info;
      int rc = follow_ ? stat(paths_[i].c_str(), &info) : lstat(paths_[i].c_str(), &info);
      if (rc != 0) errors_[i] = errno;
      else FillStatFields(info, &fields_[i * kStatFields]);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Float64Array fields = Napi::Float64Array::New(env, fields_.size());
    for (size_t i = 0; i < fields_.size(); i++) fields[i] = fields_[i];
    Napi::Int32Array errors = Napi::Int32Array::New(env, errors_.size());
    for (size_t i = 0; i < errors_.size(); i++) errors[i] = errors_[i];
    Napi::Object result = Napi::Object::New(env);
    result.Set("fields", fields);
    result.Set("errors", errors);
    return result;
  }

 private:
  std::vector<std::string> paths_;
  bool follow_;
  std::vector<double> fields_;
  std::vector<int32_t> errors_;
};

Napi::Value LstatPaths(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 2, "lstatPaths")) return env.Undefined();
  if (!info[0].IsArray() || !info[1].IsBoolean()) {
    Napi::TypeError::New(env, "lstatPaths(paths: string[], follow: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array array = info[0].As<Napi::Array>();
  std::vector<std::string> paths;
  paths.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsString()) {
      Napi::TypeError::New(env, "lstatPaths: every path must be a string").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    paths.push_back(item.As<Napi::String>().Utf8Value());
  }
  auto* worker = new LstatPathsWorker(env, std::move(paths), info[1].As<Napi::Boolean>().Value());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// `actual` is `root` or lies below it (both absolute; `root` resolved, without a trailing slash
// unless it is "/").
bool IsInside(const std::string& root, const std::string& actual) {
  if (root == "/") return !actual.empty() && actual[0] == '/';
  return actual.compare(0, root.size(), root) == 0 && (actual.size() == root.size() || actual[root.size()] == '/');
}

class OpenConfinedWorker : public PromiseWorker {
 public:
  OpenConfinedWorker(Napi::Env env, std::string path, std::string root, int64_t max_size, int64_t read_length)
      : PromiseWorker(env, "synthvhd.openConfined"),
        path_(std::move(path)),
        root_(std::move(root)),
        max_size_(max_size),
        read_length_(read_length) {}

  ~OpenConfinedWorker() override {
    // Opened, then refused (or never handed over): the descriptor is not leaked.
    if (fd_ >= 0 && !handed_over_) close(fd_);
  }

 protected:
  void Execute() override {
    int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (root_.empty() ? 0 : O_NOFOLLOW);
    fd_ = open(path_.c_str(), flags);
    if (fd_ < 0) {
      if (errno == ELOOP && !root_.empty()) Fail("E_SYMLINK", "is a symbolic link", ELOOP, "open");
      else Fail(errno, "open");
      return;
    }
    struct stat info;
    if (fstat(fd_, &info) != 0) {
      Fail(errno, "fstat");
      return;
    }
    size_ = info.st_size;
    mtime_ms_ = MsFromTimespec(info.st_mtim);
    if (!S_ISREG(info.st_mode)) {
      Fail("E_NOT_REGULAR", "is not a regular file", 0, "fstat");
      return;
    }
    if (size_ > max_size_) {
      Fail("E_TOO_LARGE", "is larger than allowed", 0, "fstat");
      return;
    }
    if (!root_.empty()) {
      std::string link = "/proc/self/fd/" + std::to_string(fd_);
      std::vector<char> target(4096);
      for (;;) {
        ssize_t length = readlink(link.c_str(), target.data(), target.size());
        if (length < 0) {
          Fail(errno, "readlink");
          return;
        }
        if (static_cast<size_t>(length) < target.size()) {
          actual_.assign(target.data(), static_cast<size_t>(length));
          break;
        }
        if (target.size() >= (1u << 20)) {
          Fail(ENAMETOOLONG, "readlink");
          return;
        }
        target.resize(target.size() * 2);
      }
      if (!IsInside(root_, actual_)) {
        Fail("E_OUTSIDE_ROOT", "resolves outside the backup root", 0, "readlink");
        return;
      }
    }
    if (read_length_ <= 0) return;
    int64_t want = size_ < read_length_ ? size_ : read_length_;
    bytes_.resize(static_cast<size_t>(want));
    size_t done = 0;
    while (done < bytes_.size()) {
      ssize_t got = pread(fd_, bytes_.data() + done, bytes_.size() - done, static_cast<off_t>(done));
      if (got < 0) {
        if (errno == EINTR) continue;
        Fail(errno, "pread");
        return;
      }
      if (got == 0) break;  // the file shrank since fstat: what is there
      done += static_cast<size_t>(got);
    }
    bytes_.resize(done);
    close(fd_);
    fd_ = -1;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    handed_over_ = true;
    result.Set("fd", Napi::Number::New(env, fd_));
    result.Set("size", Napi::Number::New(env, static_cast<double>(size_)));
    result.Set("mtimeMs", Napi::Number::New(env, mtime_ms_));
    result.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, bytes_.data(), bytes_.size()));
    return result;
  }

  void DecorateError(Napi::Object error) override {
    error.Set("size", Napi::Number::New(error.Env(), static_cast<double>(size_)));
    if (!actual_.empty()) error.Set("actual", Napi::String::New(error.Env(), actual_));
  }

 private:
  std::string path_;
  std::string root_;
  int64_t max_size_;
  int64_t read_length_;
  int fd_ = -1;
  bool handed_over_ = false;
  int64_t size_ = 0;
  double mtime_ms_ = 0;
  std::string actual_;
  std::vector<uint8_t> bytes_;
};

Napi::Value OpenConfined(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t max_size, read_length;
  if (!CheckArgCount(info, 4, "openConfined")) return env.Undefined();
  if (!info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "openConfined(path: string, root: string, maxSize, readLength)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!GetOffset(info, 2, "maxSize", &max_size) || !GetOffset(info, 3, "readLength", &read_length)) return env.Undefined();
  std::string root = info[1].As<Napi::String>().Utf8Value();
  if (!root.empty() && root[0] != '/') {
    Napi::RangeError::New(env, "openConfined: root must be absolute or empty").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  auto* worker = new OpenConfinedWorker(env, info[0].As<Napi::String>().Utf8Value(), std::move(root), max_size, read_length);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void AddSourceFileCalls(Napi::Env env, Napi::Object exports) {
  exports.Set("lstatPaths", Napi::Function::New(env, LstatPaths, "lstatPaths"));
  exports.Set("openConfined", Napi::Function::New(env, OpenConfined, "openConfined"));
}

}  // namespace synthvhd
