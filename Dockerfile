# SPDX-License-Identifier: MIT
# synthvhd as a container: serves urBackup RAW image backups as whole-disk .vhdx/.vhd files.
#
#   docker build -t synthvhd .
#   docker run -d --name synthvhd --device /dev/fuse --cap-add SYS_ADMIN \
#     -v /backups:/backups:ro -v /srv/vdisks:/srv/vdisks:shared \
#     synthvhd mount --allow-other /backups /srv/vdisks
#
# The build stage runs scripts/setup.sh, the same install script CI (.ci/run) runs, with
# SYNTHVHD_RUNTIME_ONLY=1 so the test-only checkers (qemu-utils, samba, ...) stay out. The
# runtime stage gets fuse3 and libfuse3 from the same script and the built tree with production
# node_modules only.

FROM node:20-bookworm-slim AS build
WORKDIR /opt/synthvhd
# node-gyp builds the addon against the image's own Node headers instead of downloading them.
ENV npm_config_nodedir=/usr/local \
    SYNTHVHD_RUNTIME_ONLY=1
COPY package.json package-lock.json tsconfig.json ./
COPY scripts/ scripts/
COPY native/binding.gyp native/
COPY native/src/ native/src/
COPY src/ src/
RUN bash scripts/setup.sh \
 && npm prune --omit=dev --no-audit --no-fund \
 && chmod 755 dist/src/cli/main.js

FROM node:20-bookworm-slim
WORKDIR /opt/synthvhd
COPY scripts/setup.sh scripts/
RUN bash scripts/setup.sh --runtime-packages \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/synthvhd/package.json ./
COPY --from=build /opt/synthvhd/node_modules/ node_modules/
COPY --from=build /opt/synthvhd/dist/src/ dist/src/
COPY --from=build /opt/synthvhd/native/build/Release/synthvhd_native.node /opt/synthvhd/native/build/Release/synthvhd_fuse.node native/build/Release/
RUN ln -s /opt/synthvhd/dist/src/cli/main.js /usr/local/bin/synthvhd
ENV NODE_ENV=production
ENTRYPOINT ["/usr/local/bin/synthvhd"]
CMD ["--help"]
