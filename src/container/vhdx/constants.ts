// SPDX-License-Identifier: MIT
/**
 * VHDX on-disk constants.
 *
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" v20180912
 * (https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/), which supersedes the
 * "VHDX Format Specification v1.00" published 2012-08-25 by Microsoft. Section numbers below are
 * MS-VHDX's. Facts checked against qemu 7.2 and libvhdi 20210425 are in docs/containers.md.
 *
 * All integers are little-endian; all GUIDs are stored mixed-endian ('ms', see ../guid.ts). The
 * GUID constants below are shared byte arrays: copy them into buffers, never write into them.
 *
 * Header section (MS-VHDX 2.2), 1 MiB, five 64 KiB slots:
 *
 *   | File Id | Header 1 | Header 2 | Region Table 1 | Region Table 2 | Reserved     |
 *   0.......64 KiB....128 KiB....192 KiB..........256 KiB..........320 KiB.......1 MiB
 */
import { guidConstant } from '../guid.js';

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;
export const TIB = 1024 * GIB;

// ---- Header section (MS-VHDX 2.2) ----

/** MS-VHDX 2.2: the header section is 1 MiB, made of 64 KiB slots. */
export const VHDX_HEADER_SECTION_SIZE = MIB;
export const VHDX_HEADER_SLOT_SIZE = 64 * KIB;
/** MS-VHDX 2.2.1: File Type Identifier at offset 0. */
export const VHDX_FILE_ID_OFFSET = 0;
/** MS-VHDX 2.2: the two headers at 64 KiB and 128 KiB. */
export const VHDX_HEADER1_OFFSET = 64 * KIB;
export const VHDX_HEADER2_OFFSET = 128 * KIB;
/** MS-VHDX 2.2: the two region tables at 192 KiB and 256 KiB. */
export const VHDX_REGION_TABLE1_OFFSET = 192 * KIB;
export const VHDX_REGION_TABLE2_OFFSET = 256 * KIB;

/** MS-VHDX 2.2.1: Signature "vhdxfile" (0x656C696678646876). */
export const VHDX_FILE_ID_SIGNATURE = 'vhdxfile';
/** MS-VHDX 2.2.1: Creator, 512 bytes of UTF-16 (256 code units), diagnostic only. */
export const VHDX_FILE_ID_CREATOR_OFFSET = 8;
export const VHDX_FILE_ID_CREATOR_LENGTH = 512;
/** Signature + Creator; the rest of the 64 KiB slot is reserved zero. */
export const VHDX_FILE_ID_SIZE = VHDX_FILE_ID_CREATOR_OFFSET + VHDX_FILE_ID_CREATOR_LENGTH;

/** MS-VHDX 2.2.2: Signature "head" (0x68656164). */
export const VHDX_HEADER_SIGNATURE = 'head';
/** MS-VHDX 2.2.2: the header is 4 KiB and its CRC-32C covers all 4 KiB (the rest of the slot is reserved). */
export const VHDX_HEADER_SIZE = 4 * KIB;
/** MS-VHDX 2.2.2: Version MUST be 1. */
export const VHDX_HEADER_VERSION = 1;
/** MS-VHDX 2.2.2: LogVersion MUST be 0. */
export const VHDX_LOG_VERSION = 0;

/** MS-VHDX 2.2.3.1: Signature "regi" (0x72656769). */
export const VHDX_REGION_TABLE_SIGNATURE = 'regi';
/** MS-VHDX 2.2.3.1: the region table is 64 KiB and its CRC-32C covers all of it. */
export const VHDX_REGION_TABLE_SIZE = 64 * KIB;
export const VHDX_REGION_TABLE_HEADER_SIZE = 16;
/** MS-VHDX 2.2.3.2: each entry is 32 bytes. */
export const VHDX_REGION_ENTRY_SIZE = 32;
/** MS-VHDX 2.2.3.1: EntryCount MUST be <= 2047. */
export const VHDX_REGION_MAX_ENTRIES = 2047;

/** MS-VHDX 2.2.3.2 known regions: BAT 2DC27766-F623-4200-9D64-115E9BFD4A08. */
export const VHDX_BAT_REGION_GUID = guidConstant('2dc27766-f623-4200-9d64-115e9bfd4a08');
/** MS-VHDX 2.2.3.2 known regions: Metadata 8B7CA206-4790-4B9A-B8FE-575F050F886E. */
export const VHDX_METADATA_REGION_GUID = guidConstant('8b7ca206-4790-4b9a-b8fe-575f050f886e');

/** MS-VHDX 2.2.3.2 / 2.3: region and log offsets and lengths are multiples of 1 MiB. */
export const VHDX_ALIGNMENT = MIB;

// ---- Log (MS-VHDX 2.3) ----

/** A zeroed 1 MiB log right after the header section (docs/containers.md §3.3, what qemu writes). */
export const VHDX_LOG_OFFSET = MIB;
export const VHDX_LOG_LENGTH = MIB;

// ---- BAT (MS-VHDX 2.5) ----

/** The BAT region starts after the log (docs/containers.md §3.1). */
export const VHDX_BAT_OFFSET = VHDX_LOG_OFFSET + VHDX_LOG_LENGTH;
/** MS-VHDX 2.5.1: each BAT entry is a u64: State bits 0-2, reserved 3-19, FileOffsetMB 20-63. */
export const VHDX_BAT_ENTRY_SIZE = 8;
export const VHDX_BAT_STATE_MASK = 0x7;

/** MS-VHDX 2.5.1.1 payload block states. */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
/** Differencing only. */
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;

/** MS-VHDX 2.5.1.2 sector bitmap block states (PRESENT is differencing only). */
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;

/** MS-VHDX 2.4.2 / 2.5: a sector bitmap block is 1 MiB = 2^23 bits, one per logical sector. */
export const VHDX_SECTORS_PER_BITMAP_BLOCK = 2 ** 23;
export const VHDX_SECTOR_BITMAP_BLOCK_SIZE = MIB;

// ---- Metadata region (MS-VHDX 2.6) ----

/** The metadata region synthvhd writes is 1 MiB (MS-VHDX 2.2.3.2: lengths are multiples of 1 MiB). */
export const VHDX_METADATA_REGION_LENGTH = MIB;
/** MS-VHDX 2.6.1.1: Signature "metadata" (0x617461646174656D). */
export const VHDX_METADATA_SIGNATURE = 'metadata';
/** MS-VHDX 2.6.1: the metadata table takes the first 64 KiB of the region. */
export const VHDX_METADATA_TABLE_SIZE = 64 * KIB;
export const VHDX_METADATA_TABLE_HEADER_SIZE = 32;
/** MS-VHDX 2.6.1.2: each entry is 32 bytes. */
export const VHDX_METADATA_ENTRY_SIZE = 32;
/** MS-VHDX 2.6.1.1: EntryCount MUST be <= 2047. */
export const VHDX_METADATA_MAX_ENTRIES = 2047;
/** MS-VHDX 2.6.1.2: item Offset MUST be at least 64 KiB; items are packed from there. */
export const VHDX_METADATA_ITEMS_OFFSET = 64 * KIB;
/** MS-VHDX 2.6.1.2: item Length MUST be <= 1 MiB. */
export const VHDX_METADATA_ITEM_MAX_LENGTH = MIB;
/** MS-VHDX 2.6.1.2 entry flag bits (at entry offset 24). */
export const VHDX_METADATA_FLAG_IS_USER = 0x1;
export const VHDX_METADATA_FLAG_IS_VIRTUAL_DISK = 0x2;
export const VHDX_METADATA_FLAG_IS_REQUIRED = 0x4;

/** MS-VHDX 2.6.2.1 File Parameters: CAA16737-FA36-4D43-B3B6-33F0AA44E76B. */
export const VHDX_FILE_PARAMETERS_GUID = guidConstant('caa16737-fa36-4d43-b3b6-33f0aa44e76b');
/** MS-VHDX 2.6.2.2 Virtual Disk Size: 2FA54224-CD1B-4876-B211-5DBED83BF4B8. */
export const VHDX_VIRTUAL_DISK_SIZE_GUID = guidConstant('2fa54224-cd1b-4876-b211-5dbed83bf4b8');
/** MS-VHDX 2.6.2.3 Page 83 Data (Virtual Disk Id): BECA12AB-B2E6-4523-93EF-C309E000C746. */
export const VHDX_PAGE83_DATA_GUID = guidConstant('beca12ab-b2e6-4523-93ef-c309e000c746');
/** MS-VHDX 2.6.2.4 Logical Sector Size: 8141BF1D-A96F-4709-BA47-F233A8FAAB5F. */
export const VHDX_LOGICAL_SECTOR_SIZE_GUID = guidConstant('8141bf1d-a96f-4709-ba47-f233a8faab5f');
/** MS-VHDX 2.6.2.5 Physical Sector Size: CDA348C7-445D-4471-9CC9-E9885251C556. */
export const VHDX_PHYSICAL_SECTOR_SIZE_GUID = guidConstant('cda348c7-445d-4471-9cc9-e9885251c556');
/** MS-VHDX 2.6.2.6 Parent Locator: A8D35F2D-B30B-454D-ABF7-D3D84834AB0C. */
export const VHDX_PARENT_LOCATOR_GUID = guidConstant('a8d35f2d-b30b-454d-abf7-d3d84834ab0c');
/** MS-VHDX 2.6.2.6 LocatorType of the VHDX parent locator: B04AEFB7-D19E-4A81-B789-25B8E9445913. */
export const VHDX_PARENT_LOCATOR_TYPE_GUID = guidConstant('b04aefb7-d19e-4a81-b789-25b8e9445913');

/** MS-VHDX 2.6.2.1: BlockSize is a power of two, at least 1 MiB and at most 256 MiB. */
export const VHDX_MIN_BLOCK_SIZE = MIB;
export const VHDX_MAX_BLOCK_SIZE = 256 * MIB;
/** MS-VHDX 2.6.2.1 Flags: LeaveBlockAllocated (bit 0), HasParent (bit 1). */
export const VHDX_FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED = 0x1;
export const VHDX_FILE_PARAMETERS_HAS_PARENT = 0x2;
/** MS-VHDX 2.6.2.2: VirtualDiskSize is at most 64 TB (qemu VHDX_MAX_IMAGE_SIZE = 64 TiB). */
export const VHDX_MAX_VIRTUAL_DISK_SIZE = 64 * TIB;
/** MS-VHDX 2.6.2.4 / 2.6.2.5: sector sizes are 512 or 4096. */
export const VHDX_SECTOR_SIZES: readonly number[] = [512, 4096];
