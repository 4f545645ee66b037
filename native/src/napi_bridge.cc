// SPDX-License-Identifier: MIT
//
// synthvhd_fuse: a read-only FUSE file system on libfuse 3's low-level API whose READS never
// touch JavaScript. This file is its N-API face: the FuseSession class, argument marshalling and
// the thread-safe function's callbacks. The rest of the addon, by job:
//   session.{h,cc}       libfuse lifecycle, requests handed to JS, handle and directory registry
//   fuse_ops.cc          the low-level operations (libfuse worker threads)
//   inode_table.{h,cc}   node ids <-> paths, lookup counts
//   read_core.{h,cc}     FUSE_READ of a handle: pass-through or extent table, decode-ahead
//   read_walk.{h,cc}     (table, offset, length) -> pieces; pure, fuzzed
//   extent_table.{h,cc}  the extent table of an open file and its validation; pure, fuzzed
//   block_cache.{h,cc}   decoded blocks: buffer pool, byte-bounded LRU, single flight
//   record_codec.{h,cc}  urBackup's block records (stored, zlib, zstd); fuzzed
//
// Why: with fuse-native (libfuse 2, high-level API) every request crossed to the Node main thread
// and back, and libfuse 2 caps requests at 128 KiB; a mount whose read did nothing reached only
// about 1 GB/s. Here the FUSE worker threads answer FUSE_READ themselves from a table the
// JavaScript side registers once per open. Everything that needs a decision is handed to
// JavaScript and answered asynchronously (session.replyX(id, ...)).
//
//   new FuseSession(dispatch)    dispatch(op, id, path, arg, text) is called on the main thread:
//                                  op 'lookup'|'getattr'|'readlink'|'open'|'opendir'|'statfs'
//                                     (a request: answer it once with replyX(id, ...); if
//                                     dispatch throws, the request is answered EIO),
//                                  op 'init' | 'release' (arg = fh) | 'touch' (arg = fh, a read
//                                     happened; at most once per touch interval per handle) |
//                                  'decode-error' (path, arg = record, text = reason) |
//                                  'bitmap-error' (path, arg = the bitmap's offset, text = the
//                                     VHD block and reason) |
//                                  'closed' (arg = the loop's return code): events, no answer.
//   session.mount(mountpoint, fuseArgs[], config)   fuse_session_new + fuse_session_mount, then
//                                  the multi-threaded loop on its own thread. Throws on failure,
//                                  and once the session has ended (a session mounts once).
//   session.openFd(fd) -> fh       a handle of a real file: reads pread() a dup of fd, or, opened
//                                  with replyOpen(..., passthrough = true) on a connection that
//                                  has FUSE passthrough, the kernel reads that file itself.
//   session.openLayout(size, extents Float64Array, blob Uint8Array, fds Int32Array, paths[]) -> fh
//   session.replyErr/Entry/Attr/Readlink/Statfs/Open(id, ...) -> boolean (false: the request is
//                                  gone, e.g. the session ended)
//   session.replyOpendir(id, names[], inos?[], modes?[]) -> boolean   readdir's d_ino and d_type
//   session.invalidate(fh) -> boolean    later reads of fh answer EIO
//   session.detach() -> Promise<number>  lazy unmount (umount2 MNT_DETACH as root, else
//                                  `fusermount3 -u -z`); resolves with 0 or an errno. The loop ends
//                                  once the kernel drops the connection (last open file closed).
//   session.stats() -> { nodes, handles, dirs, pending, cacheBytes, cacheBlocks }
//
// Built without C++ exceptions like synthvhd_native.cc: argument errors throw JS exceptions and
// return at once; nothing on a FUSE worker thread may throw or crash: every failure is an errno.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chain_shape.h"
#include "extent_table.h"
#include "read_core.h"
#include "session.h"

namespace synthvhd {

namespace {

// What readdir reports as d_ino when JS gives none; libfuse's high-level API uses the same value
// (FUSE_UNKNOWN_INO in lib/fuse.c) for entries without a stat.
constexpr uint64_t kUnknownIno = 0xffffffff;

class FuseSession;

// Held by the thread-safe function until its finalizer ran: keeps the session alive until then.
struct FinalizeData {
  std::shared_ptr<Session> session;
  FuseSession* wrapper;  // nullptr once the JS object is gone (environment teardown)
};

bool IsSafeId(double id) { return id >= 1 && id <= kMaxSafeInteger; }

class FuseSession : public Napi::ObjectWrap<FuseSession> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FuseSession",
                       {
                           InstanceMethod<&FuseSession::Mount>("mount"),
                           InstanceMethod<&FuseSession::OpenFd>("openFd"),
                           InstanceMethod<&FuseSession::OpenLayout>("openLayout"),
                           InstanceMethod<&FuseSession::ReplyErr>("replyErr"),
                           InstanceMethod<&FuseSession::ReplyEntry>("replyEntry"),
                           InstanceMethod<&FuseSession::ReplyAttr>("replyAttr"),
                           InstanceMethod<&FuseSession::ReplyReadlink>("replyReadlink"),
                           InstanceMethod<&FuseSession::ReplyStatfs>("replyStatfs"),
                           InstanceMethod<&FuseSession::ReplyOpen>("replyOpen"),
                           InstanceMethod<&FuseSession::ReplyOpendir>("replyOpendir"),
                           InstanceMethod<&FuseSession::Invalidate>("invalidate"),
                           InstanceMethod<&FuseSession::Detach>("detach"),
                           InstanceMethod<&FuseSession::Stats>("stats"),
                           InstanceMethod<&FuseSession::PassthroughEnabled>("passthroughEnabled"),
                       });
  }

  explicit FuseSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FuseSession>(info), session_(std::make_shared<Session>()) {
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(info.Env(), "FuseSession(dispatch): dispatch must be a function").ThrowAsJavaScriptException();
      return;
    }
    dispatch_ = Napi::Persistent(info[0].As<Napi::Function>());
  }

  ~FuseSession() override {
    if (finalize_data_ != nullptr) finalize_data_->wrapper = nullptr;
  }

  // Runs on the main thread once the loop thread released the function (the session has ended),
  // or at environment teardown while the loop may still run (Session::OnFinalize).
  static void Finalize(Napi::Env /*env*/, void* data, Session* /*session*/) {
    auto* finalize = static_cast<FinalizeData*>(data);
    bool ended = finalize->session->OnFinalize();
    FuseSession* wrapper = finalize->wrapper;
    if (wrapper != nullptr) wrapper->finalize_data_ = nullptr;
    delete finalize;
    if (wrapper != nullptr && ended) wrapper->Unref();
  }

 private:
  // The pending request `info[0]` names, or false (after throwing when the id is malformed).
  bool TakeRequest(const Napi::CallbackInfo& info, Pending* out) {
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(info.Env(), "request id must be a number").ThrowAsJavaScriptException();
      return false;
    }
    double id = info[0].As<Napi::Number>().DoubleValue();
    if (!IsSafeId(id)) return false;
    return session_->TakePending(static_cast<uint64_t>(id), out);
  }

  static bool GetNumbers(const Napi::CallbackInfo& info, size_t index, size_t count, double* out) {
    if (index >= info.Length() || !info[index].IsArray() || info[index].As<Napi::Array>().Length() != count) {
      Napi::TypeError::New(info.Env(), "expected an array of " + std::to_string(count) + " numbers").ThrowAsJavaScriptException();
      return false;
    }
    Napi::Array array = info[index].As<Napi::Array>();
    for (size_t i = 0; i < count; i++) {
      Napi::Value value = array.Get(static_cast<uint32_t>(i));
      if (!value.IsNumber()) {
        Napi::TypeError::New(info.Env(), "expected numbers only").ThrowAsJavaScriptException();
        return false;
      }
      out[i] = value.As<Napi::Number>().DoubleValue();
    }
    return true;
  }

  static struct timespec FromMs(double ms) {
    struct timespec ts;
    double seconds = std::floor(ms / 1000.0);
    ts.tv_sec = static_cast<time_t>(seconds);
    long nanos = std::lround((ms - seconds * 1000.0) * 1e6);
    if (nanos >= 1000000000L) nanos = 999999999L;
    if (nanos < 0) nanos = 0;
    ts.tv_nsec = nanos;
    return ts;
  }

  // [mode, uid, gid, size, nlink, ino, blksize, blocks, atimeMs, mtimeMs, ctimeMs]
  static bool GetStat(const Napi::CallbackInfo& info, size_t index, struct stat* st) {
    double v[11];
    if (!GetNumbers(info, index, 11, v)) return false;
    StatFromNumbers(v, st);
    return true;
  }

  // [mode, uid, gid, size, nlink, ino, blksize, blocks, atimeMs, mtimeMs, ctimeMs]
  static void StatFromNumbers(const double* v, struct stat* st) {
    std::memset(st, 0, sizeof *st);
    st->st_mode = static_cast<mode_t>(v[0]);
    st->st_uid = static_cast<uid_t>(v[1]);
    st->st_gid = static_cast<gid_t>(v[2]);
    st->st_size = static_cast<off_t>(v[3]);
    st->st_nlink = static_cast<nlink_t>(v[4]);
    st->st_ino = static_cast<ino_t>(v[5]);
    st->st_blksize = static_cast<blksize_t>(v[6]);
    st->st_blocks = static_cast<blkcnt_t>(v[7]);
    st->st_atim = FromMs(v[8]);
    st->st_mtim = FromMs(v[9]);
    st->st_ctim = FromMs(v[10]);
  }

  Napi::Value Mount(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsObject()) {
      Napi::TypeError::New(env, "mount(mountpoint, fuseArgs, config)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string mountpoint = info[0].As<Napi::String>().Utf8Value();
    Napi::Array args_array = info[1].As<Napi::Array>();
    std::vector<std::string> args{"synthvhd"};
    for (uint32_t i = 0; i < args_array.Length(); i++) {
      Napi::Value value = args_array.Get(i);
      if (!value.IsString()) {
        Napi::TypeError::New(env, "fuseArgs must be strings").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      args.push_back(value.As<Napi::String>().Utf8Value());
    }
    Napi::Object object = info[2].As<Napi::Object>();
    auto number = [&](const char* name, double fallback) {
      Napi::Value value = object.Get(name);
      return value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : fallback;
    };
    auto boolean = [&](const char* name) {
      Napi::Value value = object.Get(name);
      return value.IsBoolean() && value.As<Napi::Boolean>().Value();
    };
    MountConfig config;
    config.attr_timeout = number("attrTimeout", 1.0);
    config.entry_timeout = number("entryTimeout", 1.0);
    config.touch_interval_ms = static_cast<int64_t>(number("touchIntervalMs", 1000));
    config.max_background = static_cast<unsigned>(number("maxBackground", 0));
    config.max_read = static_cast<unsigned>(number("maxRead", 0));
    config.threads = static_cast<unsigned>(number("threads", 10));
    if (config.threads < 1) config.threads = 1;
    config.clone_fd = boolean("cloneFd");
    config.passthrough = boolean("passthrough");
    config.cache_bytes = static_cast<size_t>(number("cacheBytes", 64.0 * 1024 * 1024));

    auto* finalize = new FinalizeData{session_, this};
    std::string error;
    if (!session_->Mount(env, dispatch_.Value(), mountpoint, std::move(args), config, &FuseSession::Finalize, finalize, &error)) {
      delete finalize;
      Napi::Error::New(env, error).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    finalize_data_ = finalize;
    Ref();  // kept alive until the loop has ended and the finalizer ran
    return env.Undefined();
  }

  Napi::Value OpenFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "openFd(fd)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int fd = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      Napi::Error::New(env, std::string("dup: ") + strerror(errno)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto handle = std::make_shared<Handle>();
    handle->fd = fd;
    return Napi::Number::New(env, static_cast<double>(session_->AddHandle(std::move(handle))));
  }

  // openLayout(size, extents: Float64Array (7 per extent: kind, start, length, a, b, c, d),
  //            blob: Uint8Array, fds: Int32Array, paths: string[],
  //            chains?: External[] (makeChainShape), chainSources?: Uint32Array[] (per chain file,
  //            its index in fds)) -> fh
  Napi::Value OpenLayout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto fail = [&](const std::string& message) {
      Napi::RangeError::New(env, "openLayout: " + message).ThrowAsJavaScriptException();
      return env.Undefined();
    };
    if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsTypedArray() ||
        !info[4].IsArray()) {
      return fail("(size, extents, blob, fds, paths)");
    }
    Napi::TypedArray extents_ta = info[1].As<Napi::TypedArray>();
    Napi::TypedArray blob_ta = info[2].As<Napi::TypedArray>();
    Napi::TypedArray fds_ta = info[3].As<Napi::TypedArray>();
    if (extents_ta.TypedArrayType() != napi_float64_array || blob_ta.TypedArrayType() != napi_uint8_array ||
        fds_ta.TypedArrayType() != napi_int32_array) {
      return fail("extents must be a Float64Array, blob a Uint8Array, fds an Int32Array");
    }
    Napi::Float64Array extents = extents_ta.As<Napi::Float64Array>();
    Napi::Uint8Array blob = blob_ta.As<Napi::Uint8Array>();
    Napi::Int32Array fds = fds_ta.As<Napi::Int32Array>();
    Napi::Array paths = info[4].As<Napi::Array>();
    if (paths.Length() != fds.ElementLength()) return fail("one path per fd");

    auto table = std::make_unique<Table>();
    std::vector<uint64_t> chain_sizes;
    if (info.Length() >= 7 && info[5].IsArray() && info[6].IsArray()) {
      Napi::Array shapes = info[5].As<Napi::Array>();
      Napi::Array sources = info[6].As<Napi::Array>();
      if (shapes.Length() != sources.Length()) return fail("one source list per chain");
      for (uint32_t i = 0; i < shapes.Length(); i++) {
        Napi::Value shape_value = shapes.Get(i);
        Napi::Value sources_value = sources.Get(i);
        if (!shape_value.IsExternal()) return fail("chains must come from makeChainShape");
        if (!sources_value.IsTypedArray() || sources_value.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
          return fail("chain sources must be Uint32Arrays");
        }
        TableChain chain;
        chain.shape = *shape_value.As<Napi::External<std::shared_ptr<const ChainShape>>>().Data();
        Napi::Uint32Array list = sources_value.As<Napi::Uint32Array>();
        if (list.ElementLength() != chain.shape->levels.size()) return fail("one source per chain file");
        for (size_t k = 0; k < list.ElementLength(); k++) {
          if (list[k] >= fds.ElementLength()) return fail("a chain file names no source");
          chain.sources.push_back(list[k]);
        }
        chain_sizes.push_back(chain.shape->size);
        table->chains.push_back(std::move(chain));
      }
    }
    std::string why;
    double size = info[0].As<Napi::Number>().DoubleValue();
    if (!ValidateExtents(extents.Data(), extents.ElementLength(), size, blob.ElementLength(), fds.ElementLength(), &table->extents, &why,
                         chain_sizes)) {
      return fail(why);
    }
    table->size = static_cast<uint64_t>(size);
    table->blob.assign(blob.Data(), blob.Data() + blob.ElementLength());
    for (size_t i = 0; i < fds.ElementLength(); i++) {
      auto source = std::make_unique<Source>();
      Napi::Value path = paths.Get(static_cast<uint32_t>(i));
      if (!path.IsString()) return fail("paths must be strings");
      source->path = path.As<Napi::String>().Utf8Value();
      source->fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
      if (source->fd < 0) return fail(source->path + ": dup: " + strerror(errno));
      struct stat st;
      if (fstat(source->fd, &st) != 0) return fail(source->path + ": fstat: " + strerror(errno));
      source->dev = st.st_dev;
      source->ino = st.st_ino;
      source->mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      table->sources.push_back(std::move(source));
    }
    auto handle = std::make_shared<Handle>();
    handle->table = std::move(table);
    return Napi::Number::New(env, static_cast<double>(session_->AddHandle(std::move(handle))));
  }

  Napi::Value ReplyErr(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    int error = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : EIO;
    if (error <= 0) error = EIO;
    fuse_reply_err(pending.req, error);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value ReplyEntry(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct stat st;
    if (!GetStat(info, 1, &st)) return env.Undefined();
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    if (pending.op != Op::kLookup) {
      fuse_reply_err(pending.req, EIO);
      return Napi::Boolean::New(env, false);
    }
    uint64_t ino = session_->nodes().Lookup(pending.path, st.st_mode & S_IFMT);
    session_->nodes().RememberAttr(pending.path, st);
    struct fuse_entry_param entry;
    std::memset(&entry, 0, sizeof entry);
    entry.ino = ino;
    entry.attr = st;
    entry.attr_timeout = session_->config().attr_timeout;
    entry.entry_timeout = session_->config().entry_timeout;
    if (fuse_reply_entry(pending.req, &entry) != 0) session_->nodes().Forget(ino, 1);  // the kernel never saw it
    return Napi::Boolean::New(env, true);
  }

  Napi::Value ReplyAttr(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct stat st;
    if (!GetStat(info, 1, &st)) return env.Undefined();
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    if (pending.op == Op::kGetattr) {
      session_->nodes().RememberAttr(pending.path, st);
      if (pending.arg > 0) session_->RememberAttr(static_cast<uint64_t>(pending.arg), st);
    }
    fuse_reply_attr(pending.req, &st, session_->config().attr_timeout);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value ReplyReadlink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsString()) {
      Napi::TypeError::New(env, "replyReadlink(id, target)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string target = info[1].As<Napi::String>().Utf8Value();
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    fuse_reply_readlink(pending.req, target.c_str());
    return Napi::Boolean::New(env, true);
  }

  // [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax]
  Napi::Value ReplyStatfs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double v[11];
    if (!GetNumbers(info, 1, 11, v)) return env.Undefined();
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    struct statvfs st;
    std::memset(&st, 0, sizeof st);
    st.f_bsize = static_cast<unsigned long>(v[0]);
    st.f_frsize = static_cast<unsigned long>(v[1]);
    st.f_blocks = static_cast<fsblkcnt_t>(v[2]);
    st.f_bfree = static_cast<fsblkcnt_t>(v[3]);
    st.f_bavail = static_cast<fsblkcnt_t>(v[4]);
    st.f_files = static_cast<fsfilcnt_t>(v[5]);
    st.f_ffree = static_cast<fsfilcnt_t>(v[6]);
    st.f_favail = static_cast<fsfilcnt_t>(v[7]);
    st.f_fsid = static_cast<unsigned long>(v[8]);
    st.f_flag = static_cast<unsigned long>(v[9]);
    st.f_namemax = static_cast<unsigned long>(v[10]);
    fuse_reply_statfs(pending.req, &st);
    return Napi::Boolean::New(env, true);
  }

  // replyOpen(id, fh, keepCache, directIo, passthrough): fh from openFd/openLayout. With
  // `passthrough`, an openFd handle becomes a passthrough file when the connection has it
  // (passthrough.h): the kernel then reads the handle's file itself. When the request is gone or
  // the kernel did not take the reply, the handle is released here.
  Napi::Value ReplyOpen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsNumber()) {
      Napi::TypeError::New(env, "replyOpen(id, fh, keepCache, directIo, passthrough)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint64_t fh = static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue());
    auto flag = [&](size_t index) { return info.Length() > index && info[index].IsBoolean() && info[index].As<Napi::Boolean>().Value(); };
    bool keep_cache = flag(2);
    bool direct_io = flag(3);
    bool passthrough = flag(4);
    Pending pending;
    if (!TakeRequest(info, &pending)) {
      session_->ReleaseHandle(fh);
      return Napi::Boolean::New(env, false);
    }
    std::shared_ptr<Handle> handle = session_->FindHandle(fh);
    if (pending.op != Op::kOpen || handle == nullptr) {
      session_->ReleaseHandle(fh);
      fuse_reply_err(pending.req, EIO);
      return Napi::Boolean::New(env, false);
    }
    // The file starts with the attributes the kernel was last told for its path (the lookup or
    // getattr before this open), so its later getattrs need not wait for JavaScript.
    struct stat attr;
    if (session_->nodes().LastAttr(pending.path, &attr)) session_->RememberAttr(fh, attr);
    if (passthrough && handle->table == nullptr && handle->fd >= 0 && !direct_io) {
      int backing = session_->passthrough().Acquire(pending.path, handle->fd);
      if (backing == -EBUSY) {
        // Another file serves this path's open files: the kernel would refuse the open anyway.
        session_->ReleaseHandle(fh);
        fuse_reply_err(pending.req, EBUSY);
        return Napi::Boolean::New(env, false);
      }
      if (backing >= 0) {
        handle->passthrough_path = pending.path;
        // struct fuse_open_out (7.40): fh, open_flags (FOPEN_PASSTHROUGH = 1 << 7), backing_id.
        struct {
          uint64_t fh;
          uint32_t open_flags;
          int32_t backing_id;
        } out{fh, 1u << 7, backing};
        if (fuse_reply_buf(pending.req, reinterpret_cast<const char*>(&out), sizeof out) != 0) {
          session_->ReleaseHandle(fh);
          return Napi::Boolean::New(env, false);
        }
        return Napi::Boolean::New(env, true);
      }
      // Not offered by this kernel, or the ioctl was refused: a plain open, read by us.
    }
    struct fuse_file_info fi;
    std::memset(&fi, 0, sizeof fi);
    fi.fh = fh;
    fi.keep_cache = keep_cache ? 1 : 0;
    fi.direct_io = direct_io ? 1 : 0;
    if (fuse_reply_open(pending.req, &fi) != 0) {
      session_->ReleaseHandle(fh);
      return Napi::Boolean::New(env, false);
    }
    return Napi::Boolean::New(env, true);
  }

  // replyOpendir(id, names: string[], inos?: number[], modes?: number[] (S_IFMT bits used),
  // stats?: Float64Array (11 numbers per entry as GetStat, NaN mode = none)): readdir then reports
  // each name with JS's inode number (what getattr says) and its file type; READDIRPLUS also
  // hands over the attributes an entry has.
  Napi::Value ReplyOpendir(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsArray()) {
      Napi::TypeError::New(env, "replyOpendir(id, names[, inos, modes])").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array names = info[1].As<Napi::Array>();
    Napi::Array inos = info.Length() > 2 && info[2].IsArray() ? info[2].As<Napi::Array>() : Napi::Array();
    Napi::Array modes = info.Length() > 3 && info[3].IsArray() ? info[3].As<Napi::Array>() : Napi::Array();
    Napi::Float64Array stats = info.Length() > 4 && info[4].IsTypedArray() && info[4].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array
                                   ? info[4].As<Napi::Float64Array>()
                                   : Napi::Float64Array();
    auto dir = std::make_shared<Dir>();
    dir->entries.reserve(names.Length());
    for (uint32_t i = 0; i < names.Length(); i++) {
      Napi::Value name = names.Get(i);
      if (!name.IsString()) {
        Napi::TypeError::New(env, "names must be strings").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      DirEntry entry{name.As<Napi::String>().Utf8Value(), kUnknownIno, 0};
      if (!inos.IsEmpty() && i < inos.Length()) {
        Napi::Value ino = inos.Get(i);
        if (ino.IsNumber()) {
          double value = ino.As<Napi::Number>().DoubleValue();
          if (IsSafeId(value)) entry.ino = static_cast<uint64_t>(value);
        }
      }
      if (!modes.IsEmpty() && i < modes.Length()) {
        Napi::Value mode = modes.Get(i);
        if (mode.IsNumber()) entry.type = (static_cast<uint32_t>(mode.As<Napi::Number>().Int64Value()) & S_IFMT) >> 12;
      }
      if (!stats.IsEmpty() && (static_cast<size_t>(i) + 1) * 11 <= stats.ElementLength()) {
        const double* v = stats.Data() + static_cast<size_t>(i) * 11;
        bool usable = true;
        for (int k = 0; k < 11; k++) usable = usable && std::isfinite(v[k]) && v[k] >= 0 && v[k] <= kMaxSafeInteger;
        if (usable && (static_cast<uint32_t>(v[0]) & S_IFMT) != 0) {
          StatFromNumbers(v, &entry.attr);
          entry.has_attr = true;
        }
      }
      dir->entries.push_back(std::move(entry));
    }
    Pending pending;
    if (!TakeRequest(info, &pending)) return Napi::Boolean::New(env, false);
    if (pending.op != Op::kOpendir) {
      fuse_reply_err(pending.req, EIO);
      return Napi::Boolean::New(env, false);
    }
    dir->path = pending.path;
    uint64_t fh = session_->AddDir(std::move(dir));
    struct fuse_file_info fi;
    std::memset(&fi, 0, sizeof fi);
    fi.fh = fh;
    if (fuse_reply_open(pending.req, &fi) != 0) session_->ReleaseDir(fh);
    return Napi::Boolean::New(env, true);
  }

  Napi::Value Invalidate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "invalidate(fh)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::shared_ptr<Handle> handle = session_->FindHandle(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
    if (handle == nullptr) return Napi::Boolean::New(env, false);
    handle->stale.store(true);
    return Napi::Boolean::New(env, true);
  }

  // passthroughEnabled(): whether the kernel offered FUSE passthrough and our INIT reply took it
  // (passthrough.h); false before INIT and on kernels without it.
  Napi::Value PassthroughEnabled(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), session_ != nullptr && session_->passthrough().enabled());
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t nodes, handles, dirs, pending, cache_bytes, cache_blocks;
    session_->Stats(&nodes, &handles, &dirs, &pending, &cache_bytes, &cache_blocks);
    Napi::Object result = Napi::Object::New(env);
    result.Set("nodes", Napi::Number::New(env, static_cast<double>(nodes)));
    result.Set("handles", Napi::Number::New(env, static_cast<double>(handles)));
    result.Set("dirs", Napi::Number::New(env, static_cast<double>(dirs)));
    result.Set("pending", Napi::Number::New(env, static_cast<double>(pending)));
    result.Set("cacheBytes", Napi::Number::New(env, static_cast<double>(cache_bytes)));
    result.Set("cacheBlocks", Napi::Number::New(env, static_cast<double>(cache_blocks)));
    return result;
  }

  // Lazy unmount on a pool thread: the mount point leaves the namespace at once; the kernel keeps
  // the connection (and this session serving it) until the last open file is closed, then the
  // loop's reads of /dev/fuse fail with ENODEV and the loop ends ("closed" event).
  class DetachWorker : public Napi::AsyncWorker {
   public:
    DetachWorker(Napi::Env env, std::string mountpoint)
        : Napi::AsyncWorker(env, "synthvhd.fuse.detach"), deferred_(Napi::Promise::Deferred::New(env)), mountpoint_(std::move(mountpoint)) {}
    Napi::Promise Promise() const { return deferred_.Promise(); }

   protected:
    void Execute() override { result_ = LazyUnmount(mountpoint_); }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), result_)); }

   private:
    Napi::Promise::Deferred deferred_;
    std::string mountpoint_;
    int result_ = 0;
  };

  Napi::Value Detach(const Napi::CallbackInfo& info) {
    auto* worker = new DetachWorker(info.Env(), session_->mountpoint());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::FunctionReference dispatch_;
  std::shared_ptr<Session> session_;
  FinalizeData* finalize_data_ = nullptr;
};

// makeChainShape(numbers: Float64Array, bats: Uint32Array[], records: Float64Array[]) -> External:
// a VHD chain's shape (chain_shape.h), validated and copied once; openLayout takes it for every
// open of the disk (the shape is shared, each handle brings its own sources).
Napi::Value MakeChainShape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto fail = [&](const std::string& message) {
    Napi::RangeError::New(env, "makeChainShape: " + message).ThrowAsJavaScriptException();
    return env.Undefined();
  };
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsArray() || !info[2].IsArray()) return fail("(numbers, bats, records)");
  Napi::TypedArray numbers_ta = info[0].As<Napi::TypedArray>();
  if (numbers_ta.TypedArrayType() != napi_float64_array) return fail("numbers must be a Float64Array");
  Napi::Float64Array numbers = numbers_ta.As<Napi::Float64Array>();
  Napi::Array bats_array = info[1].As<Napi::Array>();
  Napi::Array records_array = info[2].As<Napi::Array>();
  std::vector<std::pair<const uint32_t*, size_t>> bats;
  std::vector<std::pair<const double*, size_t>> records;
  for (uint32_t i = 0; i < bats_array.Length(); i++) {
    Napi::Value value = bats_array.Get(i);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) return fail("bats must be Uint32Arrays");
    Napi::Uint32Array bat = value.As<Napi::Uint32Array>();
    bats.emplace_back(bat.Data(), bat.ElementLength());
  }
  for (uint32_t i = 0; i < records_array.Length(); i++) {
    Napi::Value value = records_array.Get(i);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) return fail("records must be Float64Arrays");
    Napi::Float64Array list = value.As<Napi::Float64Array>();
    records.emplace_back(list.Data(), list.ElementLength());
  }
  auto shape = std::make_shared<ChainShape>();
  std::string why;
  if (!ValidateChainShape(numbers.Data(), numbers.ElementLength(), bats, records, shape.get(), &why)) return fail(why);
  auto* held = new std::shared_ptr<const ChainShape>(std::move(shape));
  return Napi::External<std::shared_ptr<const ChainShape>>::New(env, held, [](Napi::Env, std::shared_ptr<const ChainShape>* data) { delete data; });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("FuseSession", FuseSession::Define(env));
  exports.Set("makeChainShape", Napi::Function::New(env, MakeChainShape, "makeChainShape"));
  exports.Set("maxRead", Napi::Number::New(env, static_cast<double>(kMaxReply)));
  return exports;
}

}  // namespace

// Runs on the main thread for each message a worker thread posted; env is null when the function
// is being torn down with messages still queued. A request must be answered whatever happens
// here: if JavaScript is gone or dispatch threw, it is answered EIO (never left to hang), and a
// throw is cleared and reported on stderr, so one bug costs one request, not the daemon.
void CallJs(Napi::Env env, Napi::Function dispatch, Session* session, Message* message) {
  std::unique_ptr<Message> owned(message);
  auto answer_eio = [&] {
    if (owned->id <= 0 || session == nullptr) return;
    Pending pending;
    if (session->TakePending(static_cast<uint64_t>(owned->id), &pending)) fuse_reply_err(pending.req, EIO);
  };
  if (env == nullptr || dispatch.IsEmpty()) {
    answer_eio();
    return;
  }
  dispatch.Call({Napi::String::New(env, owned->op), Napi::Number::New(env, owned->id), Napi::String::New(env, owned->path),
                 Napi::Number::New(env, owned->arg), Napi::String::New(env, owned->text)});
  if (env.IsExceptionPending()) {
    Napi::Error error = env.GetAndClearPendingException();
    answer_eio();
    std::string text = "a value that is not an Error";
    Napi::Value thrown = error.Value();
    if (thrown.IsObject()) {
      Napi::Value what = thrown.As<Napi::Object>().Get("message");
      if (what.IsString()) text = what.As<Napi::String>().Utf8Value();
    } else if (thrown.IsString()) {
      text = thrown.As<Napi::String>().Utf8Value();
    }
    if (env.IsExceptionPending()) env.GetAndClearPendingException();  // a throwing `message` getter
    for (char& c : text) {
      if (c == '\n') c = ' ';
    }
    std::fprintf(stderr, "synthvhd: internal error (please report): the FUSE dispatch threw on '%s': %s\n", owned->op.c_str(), text.c_str());
  }
}

}  // namespace synthvhd

namespace {
Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return synthvhd::Init(env, exports); }
}  // namespace

NODE_API_MODULE(synthvhd_fuse, InitAddon)
