// SPDX-License-Identifier: MIT
/**
 * The extents of a urBackup image backup stored as VHD/VHDX, plain or inside urBackup's
 * compressed container: the extent model of src/extents/ (with its `compressed` kind), under
 * the names this folder used before that kind joined src/extents/extent.ts.
 * docs/urbackup-image-formats.md explains the formats.
 */
import { type Extent, type Layout, findExtentIndex, makeLayout, sliceExtent, sliceLayout } from '../../extents/extent.js';
import { LayoutBuilder } from '../../extents/layout-builder.js';

export type { CompressedExtent } from '../../extents/extent.js';
export type ImageExtent = Extent;
export type ImageLayout = Layout;
export const makeImageLayout = makeLayout;
export const findImageExtentIndex = findExtentIndex;
export const sliceImageExtent = sliceExtent;
export const sliceImageLayout = sliceLayout;
export { LayoutBuilder as ImageLayoutBuilder };
