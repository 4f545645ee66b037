# SPDX-License-Identifier: MIT
# The synthvhd native addon: FICLONERANGE, copy_file_range, SEEK_DATA/SEEK_HOLE, fstatfs and the
# urBackup record decoder (src/record_codec.cc, zlib + libzstd), each run on the libuv worker
# pool. Built by `npm run build:native` (node-gyp; needs python3, make, g++, pkg-config,
# libzstd-dev and zlib1g-dev). Linux only: the syscalls it wraps are Linux ones.
{
  "targets": [
    {
      "target_name": "synthvhd_native",
      "sources": ["src/synthvhd_native.cc", "src/source_files.cc", "src/record_codec.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I libzstd zlib | sed 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs libzstd zlib)"],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS",
        "_FILE_OFFSET_BITS=64",
        "_GNU_SOURCE"
      ],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-Wall", "-Wextra"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    },
    {
      # The FUSE session (src/napi_bridge.cc names every file and its job): libfuse 3's low-level
      # API with reads served on its worker threads, zlib and libzstd for compressed blocks. A
      # module of its own, so the file calls above still load where libfuse3 is missing at run
      # time (Debian: libfuse3-dev libzstd-dev zlib1g-dev pkg-config to build, libfuse3-3 to run).
      # The pure parts (extent_table, read_walk, block_cache, record_codec) are also built alone
      # with sanitizers by native/fuzz/Makefile.
      "target_name": "synthvhd_fuse",
      "sources": [
        "src/napi_bridge.cc",
        "src/session.cc",
        "src/passthrough.cc",
        "src/fuse_ops.cc",
        "src/inode_table.cc",
        "src/read_core.cc",
        "src/read_walk.cc",
        "src/chain_shape.cc",
        "src/extent_table.cc",
        "src/block_cache.cc",
        "src/record_codec.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I fuse3 | sed 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs fuse3 libzstd zlib)"],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS",
        "_FILE_OFFSET_BITS=64",
        "_GNU_SOURCE"
      ],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-Wall", "-Wextra"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
