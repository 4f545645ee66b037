// SPDX-License-Identifier: MIT
//
// libfuse 3's low-level operations. Each runs on a libfuse worker thread (fuse_session_loop_mt)
// and never waits for JavaScript: a read is answered here (Session::Read), a request that needs a
// decision is handed over (Session::Dispatch) and answered later from the main thread.

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "session.h"

namespace synthvhd {

namespace {

Session* SessionOf(fuse_req_t req) { return static_cast<Session*>(fuse_req_userdata(req)); }

void OpInit(void* userdata, struct fuse_conn_info* conn) { static_cast<Session*>(userdata)->Init(conn); }

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Session* session = SessionOf(req);
  std::string path;
  if (!session->nodes().Path(parent, &path)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  if (path.size() > 1) path += '/';
  else path = "/";
  path += name;
  session->Dispatch(req, Op::kLookup, std::move(path), 0);
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  SessionOf(req)->nodes().Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, struct fuse_forget_data* forgets) {
  Session* session = SessionOf(req);
  for (size_t i = 0; i < count; i++) session->nodes().Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void ByPath(fuse_req_t req, fuse_ino_t ino, Op op, double arg) {
  Session* session = SessionOf(req);
  std::string path;
  if (!session->nodes().Path(ino, &path)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  session->Dispatch(req, op, std::move(path), arg);
}

// `fi` is set when the kernel asks about an open file (FUSE_GETATTR_FH): with auto_inval_data it
// does before reads once the attributes are older than attr_timeout (fs/fuse/file.c
// fuse_cache_read_iter). The session answers it from what JS said of the file (its lookup or last
// getattr) while the handle is not stale, so reads of an open virtual disk never wait for the
// JavaScript thread; otherwise JS answers, told the handle (a file whose backup vanished while
// open then answers EIO, as its reads do, rather than ENOENT).
void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (fi != nullptr && SessionOf(req)->GetattrOfOpenFile(req, fi->fh)) return;
  ByPath(req, ino, Op::kGetattr, fi != nullptr ? static_cast<double>(fi->fh) : 0);
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) { ByPath(req, ino, Op::kReadlink, 0); }

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  // `ro` makes the kernel refuse writes before they get here; this is the second line.
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT)) != 0) {
    fuse_reply_err(req, EROFS);
    return;
  }
  ByPath(req, ino, Op::kOpen, static_cast<double>(fi->flags));
}

void OpRead(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, struct fuse_file_info* fi) { SessionOf(req)->Read(req, size, off, fi->fh); }

void OpRelease(fuse_req_t req, fuse_ino_t /*ino*/, struct fuse_file_info* fi) {
  SessionOf(req)->Release(fi->fh);
  fuse_reply_err(req, 0);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) { ByPath(req, ino, Op::kOpendir, static_cast<double>(fi->flags)); }

void OpReaddir(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, struct fuse_file_info* fi) { SessionOf(req)->Readdir(req, size, off, fi->fh); }

void OpReaddirplus(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, struct fuse_file_info* fi) {
  SessionOf(req)->Readdirplus(req, size, off, fi->fh);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t /*ino*/, struct fuse_file_info* fi) {
  SessionOf(req)->ReleaseDir(fi->fh);
  fuse_reply_err(req, 0);
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) { ByPath(req, ino, Op::kStatfs, 0); }

// No extended attributes: "no such attribute" and an empty list, as the fuse-native mount said.
void OpGetxattr(fuse_req_t req, fuse_ino_t /*ino*/, const char* /*name*/, size_t /*size*/) { fuse_reply_err(req, ENODATA); }

void OpListxattr(fuse_req_t req, fuse_ino_t /*ino*/, size_t size) {
  if (size == 0) fuse_reply_xattr(req, 0);
  else fuse_reply_buf(req, nullptr, 0);
}

// Every operation that would change something answers EROFS (the `ro` mount option already
// stops most of them in the VFS).
void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRmdir(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) { fuse_reply_err(req, EROFS); }
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }
void OpSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { fuse_reply_err(req, EROFS); }
void OpRemovexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }
void OpFallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, struct fuse_file_info*) { fuse_reply_err(req, EROFS); }

struct fuse_lowlevel_ops MakeOps() {
  struct fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.readlink = OpReadlink;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.release = OpRelease;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;  // libfuse then offers FUSE_CAP_READDIRPLUS (and _AUTO)
  ops.releasedir = OpReleasedir;
  ops.statfs = OpStatfs;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.setattr = OpSetattr;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.write = OpWrite;
  ops.setxattr = OpSetxattr;
  ops.removexattr = OpRemovexattr;
  ops.create = OpCreate;
  ops.fallocate = OpFallocate;
  return ops;
}

}  // namespace

const struct fuse_lowlevel_ops& FuseOps() {
  static const struct fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace synthvhd
