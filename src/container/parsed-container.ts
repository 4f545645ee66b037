// SPDX-License-Identifier: MIT
/**
 * What the container parsers (./parse-vhd.ts, ./parse-vhdx.ts) hand on: validated structures of
 * a .vhd or .vhdx, read through a callback (pure: the caller does the I/O and adds the file name
 * to errors), and the bounds-checked reader they share.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';
import type { VhdDynamicHeader, VhdFooter } from './vhd.js';
import type { VhdxBatGeometry } from './vhdx/bat.js';
import type { VhdxHeader } from './vhdx/header.js';
import type { VhdxMetadataEntry, VhdxStandardMetadata } from './vhdx/metadata.js';
import type { VhdxRegion } from './vhdx/region-table.js';

/** Reads `length` bytes at `position` of the file being inspected. */
export type ReadFunction = (position: number, length: number) => Promise<Uint8Array>;

/**
 * A validated .vhd: what the disk-layout reader (./disk-layout.ts) and `inspect` need. Every
 * structure was checked (checksums, and every allocated BAT entry lies inside the file).
 */
export interface ParsedVhd {
  readonly format: 'vhd';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly fileSize: number;
  readonly footer: VhdFooter;
  /** Dynamic and differencing disks only. */
  readonly dynamicHeader: VhdDynamicHeader | undefined;
  /** Dynamic and differencing disks: the BAT, MaxTableEntries u32 big-endian sector numbers. */
  readonly bat: Uint8Array;
  /** Differencing only: parent locator data by platform code (`W2ru`, `W2ku`, ...) and `ParentUnicodeName`. */
  readonly parentPaths: Readonly<Record<string, string>>;
}

/** A validated .vhdx (headers, region tables, metadata and BAT all checked). */
export interface ParsedVhdx {
  readonly format: 'vhdx';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly fileSize: number;
  readonly creator: string;
  /** The current header (MS-VHDX 2.2.2: the valid one with the greater SequenceNumber). */
  readonly header: VhdxHeader;
  readonly metadata: VhdxStandardMetadata;
  readonly geometry: VhdxBatGeometry;
  /** The BAT's `geometry.entryCount` entries (MS-VHDX 2.5). */
  readonly bat: Uint8Array;
  /** Differencing only: the VHDX parent locator's key/value pairs (MS-VHDX 2.6.2.6.3). */
  readonly parentLocator: ReadonlyMap<string, string> | undefined;
  /** Where the structures lie, for the structure map (./structure-map.ts): the current header's slot, */
  readonly currentHeaderOffset: number;
  /** the BAT and metadata regions (MS-VHDX 2.2.3.2), */
  readonly batRegion: VhdxRegion;
  readonly metadataRegion: VhdxRegion;
  /** and the metadata table's entries (MS-VHDX 2.6.1.2). */
  readonly metadataEntries: readonly VhdxMetadataEntry[];
}

export type ParsedContainer = ParsedVhd | ParsedVhdx;

/** Reads from the file being parsed; every read is checked against its size and for short reads. */
export class ContainerReader {
  constructor(
    private readonly readCallback: ReadFunction,
    readonly size: number,
  ) {}

  async read(position: number, length: number, what: string): Promise<Uint8Array> {
    if (position < 0 || position + length > this.size) {
      throw new SynthvhdError('E_CONTAINER', `${what} at ${position} (+${length}) is beyond the end of the file (${this.size} bytes)`);
    }
    const bytes = await this.readCallback(position, length);
    if (bytes.length < length) {
      throw new SynthvhdError('E_CONTAINER', `${what}: short read at ${position} (${bytes.length} of ${length} bytes)`);
    }
    return bytes.subarray(0, length);
  }
}
