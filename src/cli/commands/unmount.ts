// SPDX-License-Identifier: MIT
/** `synthvhd unmount MOUNTPOINT [--lazy]`: unmounts a synthvhd mount, e.g. one left by a crash. */
import { unmountSynthvhd } from '../../fuse/unmount.js';

export interface UnmountCommandOptions {
  readonly lazy?: boolean;
}

export async function unmountCommand(mountpoint: string, options: UnmountCommandOptions): Promise<void> {
  const path = await unmountSynthvhd(mountpoint, options.lazy ?? false);
  process.stdout.write(`synthvhd: unmounted ${path}\n`);
}
