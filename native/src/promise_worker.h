// SPDX-License-Identifier: MIT
//
// What every call of the file-call addon shares (synthvhd_native.cc, source_files.cc): argument
// parsing, errno names, and the worker that runs a call on the libuv pool and settles a promise.

#ifndef SYNTHVHD_PROMISE_WORKER_H_
#define SYNTHVHD_PROMISE_WORKER_H_

#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

namespace synthvhd {

// 2^53 - 1: the largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER).
constexpr double kMaxSafeInteger = 9007199254740991.0;

// ---------------------------------------------------------------------------------------------
// Argument parsing. Each returns false after throwing a JS exception.

inline bool GetFd(const Napi::CallbackInfo& info, size_t index, const char* name, int* out) {
  Napi::Env env = info.Env();
  if (index >= info.Length() || !info[index].IsNumber()) {
    Napi::TypeError::New(env, std::string(name) + " must be a file descriptor (number)").ThrowAsJavaScriptException();
    return false;
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value >= 0 && value <= 2147483647.0) || value != static_cast<double>(static_cast<int>(value))) {
    Napi::RangeError::New(env, std::string(name) + " must be a non-negative 32-bit integer").ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int>(value);
  return true;
}

// A byte offset or length: a safe non-negative integer number, or a non-negative int64 BigInt.
inline bool GetOffset(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t* out) {
  Napi::Env env = info.Env();
  if (index < info.Length() && info[index].IsNumber()) {
    double value = info[index].As<Napi::Number>().DoubleValue();
    if (!(value >= 0 && value <= kMaxSafeInteger) || value != static_cast<double>(static_cast<int64_t>(value))) {
      Napi::RangeError::New(env, std::string(name) + " must be an integer in [0, 2^53)").ThrowAsJavaScriptException();
      return false;
    }
    *out = static_cast<int64_t>(value);
    return true;
  }
  if (index < info.Length() && info[index].IsBigInt()) {
    bool lossless = false;
    int64_t value = info[index].As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless || value < 0) {
      Napi::RangeError::New(env, std::string(name) + " must be a BigInt in [0, 2^63)").ThrowAsJavaScriptException();
      return false;
    }
    *out = value;
    return true;
  }
  Napi::TypeError::New(env, std::string(name) + " must be a number or a bigint").ThrowAsJavaScriptException();
  return false;
}

inline bool CheckArgCount(const Napi::CallbackInfo& info, size_t count, const char* fn) {
  if (info.Length() != count) {
    Napi::TypeError::New(info.Env(), std::string(fn) + " takes " + std::to_string(count) + " arguments")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Errors.

// The errno name ("EXDEV") from libuv, which maps UV error -e to the name of errno e on Unix.
// EOPNOTSUPP and ENOTSUP are one value (95) on Linux; libuv calls it "ENOTSUP", the man pages of
// ioctl_ficlonerange(2) and copy_file_range(2) call it EOPNOTSUPP, and so do we.
inline std::string ErrnoName(int err) {
  if (err == EOPNOTSUPP) return "EOPNOTSUPP";
  char buf[64];
  uv_err_name_r(-err, buf, sizeof buf);
  return buf;
}

inline std::string ErrnoMessage(int err) {
  char buf[256];
  uv_strerror_r(-err, buf, sizeof buf);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The worker: Execute() runs on a pool thread and only touches plain members; OnOK() runs on the
// JS thread and settles the promise. Failures are recorded with Fail(), never with SetError, so
// that the rejection carries code/errno/syscall.

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* resource_name)
      : Napi::AsyncWorker(env, resource_name), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  // Records a failed syscall (errno value `err`). Safe on the pool thread (libuv's *_r helpers).
  void Fail(int err, const char* syscall) { Fail(ErrnoName(err), ErrnoMessage(err), err, syscall); }

  // Records a failure that has no errno of its own (`err` 0), e.g. code "EOF".
  void Fail(std::string code, std::string message, int err, const char* syscall) {
    failed_ = true;
    code_ = std::move(code);
    message_ = std::move(message);
    errno_ = err;
    syscall_ = syscall;
  }

  // Builds the resolved value on the JS thread (only called when Execute() did not Fail()).
  virtual Napi::Value Result(Napi::Env env) = 0;

  // Adds extra properties to a rejection (e.g. the bytes done before the failure).
  virtual void DecorateError(Napi::Object /*error*/) {}

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!failed_) {
      deferred_.Resolve(Result(env));
      return;
    }
    // The message reads like Node's own system errors: "EXDEV: cross-device link not permitted, FICLONERANGE".
    Napi::Object error = Napi::Error::New(env, code_ + ": " + message_ + ", " + syscall_).Value();
    error.Set("code", Napi::String::New(env, code_));
    error.Set("errno", Napi::Number::New(env, errno_));
    error.Set("syscall", Napi::String::New(env, syscall_));
    DecorateError(error);
    deferred_.Reject(error);
  }

 private:
  Napi::Promise::Deferred deferred_;
  bool failed_ = false;
  std::string code_;
  std::string message_;
  int errno_ = 0;
  std::string syscall_;
};

}  // namespace synthvhd

#endif  // SYNTHVHD_PROMISE_WORKER_H_
