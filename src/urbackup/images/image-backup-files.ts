// SPDX-License-Identifier: MIT
/**
 * Which file of a backup folder is the image, in any of urBackup's formats, and its side files.
 * urBackup names the image `Image_<L>_<ts>.<ext>` (ImageBackup.cpp constructImagePath) and each
 * side file after the whole image name: `<image>.mbr`, `<image>.hash`, `<image>.sync` (written
 * once the image is complete and fsynced), `<image>.cbitmap`. docs/urbackup-image-formats.md §1.
 */
import { join } from 'node:path';

/** The extensions urBackup writes, RAW first (the one served without decoding). */
export const IMAGE_EXTENSIONS = ['raw', 'vhdz', 'vhd', 'vhdxz', 'vhdx'] as const;
export type ImageExtension = (typeof IMAGE_EXTENSIONS)[number];

export interface ImageBackupFiles {
  readonly extension: ImageExtension;
  readonly imagePath: string;
  readonly mbrPath: string;
  readonly hashPath: string;
  readonly syncPath: string;
  /** `<image>.sync` exists: urBackup finished the backup. */
  readonly complete: boolean;
}

/** The image of base name `base` (`Image_C_<ts>`) among `names` (the folder's entries), if any. */
export function findImageBackupFiles(folder: string, base: string, names: ReadonlySet<string>): ImageBackupFiles | undefined {
  const extension = IMAGE_EXTENSIONS.find((candidate) => names.has(`${base}.${candidate}`));
  if (extension === undefined) return undefined;
  const name = `${base}.${extension}`;
  const imagePath = join(folder, name);
  return {
    extension,
    imagePath,
    mbrPath: `${imagePath}.mbr`,
    hashPath: `${imagePath}.hash`,
    syncPath: `${imagePath}.sync`,
    complete: names.has(`${name}.sync`),
  };
}

/** True for a side file of an image (`.mbr`, `.hash`, `.sync`, `.cbitmap`, `.bitmap` after any image extension). */
export function isImageSideFile(name: string): boolean {
  return /\.(raw|vhdz?|vhdxz?)\.(mbr|hash|sync|cbitmap|bitmap)$/.test(name);
}
