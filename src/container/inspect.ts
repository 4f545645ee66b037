// SPDX-License-Identifier: MIT
/**
 * Recognizes and validates a .vhd or .vhdx through a read callback (pure: the caller does the
 * I/O and adds the file name to errors). `parseContainer` recognizes the format and hands over to
 * ./parse-vhd.ts or ./parse-vhdx.ts (the decoded structures go to the disk-layout reader,
 * ./disk-layout.ts); ./describe-container.ts says what they mean for `inspect`.
 *
 * Specs: "Virtual Hard Disk Image Format Specification" v1.0 (Microsoft, 2006) for VHD (./vhd.ts);
 * [MS-VHDX] v20180912 / "VHDX Format Specification v1.00" (Microsoft, 2012) for VHDX (./vhdx/).
 *
 * Validation is strict: every checksum (VHD footer and its copy, dynamic header; both VHDX
 * headers and both region tables) must be right. The spec lets a VHDX reader fall back to the
 * other header or table copy; an inspector should instead say that a copy is damaged.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { type ContainerInfo, describeContainer } from './describe-container.js';
import { parseVhd } from './parse-vhd.js';
import { parseVhdx, type VhdxParseOptions } from './parse-vhdx.js';
import { ContainerReader, type ParsedContainer, type ReadFunction } from './parsed-container.js';
import { VHD_FOOTER_SIZE, isVhdFooter } from './vhd.js';
import { VHDX_FILE_ID_SIZE } from './vhdx/constants.js';
import { isVhdxFileIdentifier } from './vhdx/file-identifier.js';

export type { ContainerInfo } from './describe-container.js';
export { describeContainer } from './describe-container.js';
export type { ParsedContainer, ParsedVhd, ParsedVhdx, ReadFunction } from './parsed-container.js';

/** Recognizes and validates a .vhd or .vhdx; see ParsedVhd / ParsedVhdx. */
export async function parseContainer(read: ReadFunction, size: number, options: VhdxParseOptions = {}): Promise<ParsedContainer> {
  const reader = new ContainerReader(read, size);
  if (size >= VHDX_FILE_ID_SIZE) {
    const start = await reader.read(0, VHDX_FILE_ID_SIZE, 'file identifier');
    if (isVhdxFileIdentifier(start)) return parseVhdx(reader, start, options);
  }
  if (size >= VHD_FOOTER_SIZE) {
    const footer = await reader.read(size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, 'VHD footer');
    if (isVhdFooter(footer)) return parseVhd(reader, footer);
    const start = await reader.read(0, VHD_FOOTER_SIZE, 'VHD footer copy');
    if (isVhdFooter(start)) {
      throw new SynthvhdError('E_CONTAINER', 'VHD footer copy at offset 0, but no footer at the end of the file (truncated?)');
    }
  }
  throw new SynthvhdError(
    'E_CONTAINER',
    'not a VHD or VHDX file (no "vhdxfile" signature at offset 0, no "conectix" footer at the end)',
  );
}

export async function inspectContainer(read: ReadFunction, size: number): Promise<ContainerInfo> {
  return describeContainer(await parseContainer(read, size));
}
