import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests spawn qemu-img, mkntfs, FUSE mounts: give them room, and run
    // files one at a time on this 2-core machine so timings stay predictable.
    testTimeout: 120_000,
    hookTimeout: 300_000,
    fileParallelism: false,
    globalSetup: ['test/global-setup.ts'],
  },
});
