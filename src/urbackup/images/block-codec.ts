// SPDX-License-Identifier: MIT
/**
 * Decodes one block record payload of a urBackup compressed file (./compressed-file.ts): mode 0
 * stored, 1 zlib (RFC 1950, urBackup uses miniz's mz_compress), 2 zstd (one frame, ZSTD_compress
 * level 7); CompressedFile.cpp fillCache. zlib comes from node:zlib; zstd from `zstddec` (a
 * WASM build of libzstd's decoder: no install step, measured fastest of the packages; README
 * "urBackup image formats"). The native FUSE read path decodes in C++ instead.
 *
 * A block decodes to exactly `blockLength` bytes or it is corrupt: zstddec reports an error only
 * through a wrong length, so the length check is the error check.
 */
import { inflate, inflateSync } from 'node:zlib';
import { ZSTDDecoder } from 'zstddec';
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { MODE_STORED, MODE_ZLIB, MODE_ZSTD } from './compressed-file.js';

let zstd: ZSTDDecoder | undefined;
let zstdReady: Promise<void> | undefined;

/** Loads the zstd decoder (once); `decodeBlockSync` needs it for mode 2. */
export async function codecsReady(): Promise<void> {
  if (zstdReady === undefined) {
    const decoder = new ZSTDDecoder();
    // A pending WebAssembly compile holds no libuv handle: without this timer a CLI whose only
    // work left is this init would exit in the middle of it.
    const keepAlive = setInterval(() => undefined, 60_000);
    zstdReady = decoder
      .init()
      .then(() => {
        zstd = decoder;
      })
      .finally(() => {
        clearInterval(keepAlive);
      });
  }
  await zstdReady;
}

function corrupt(problem: string): SynthvhdError {
  return new SynthvhdError('E_IO', `corrupt compressed block: ${problem}`);
}

/**
 * `exact`: the block must decode to `blockLength` bytes. Otherwise (only to learn the length of a
 * file's last block) any non-empty result up to `blockLength` is taken.
 */
function checkLength(decoded: Uint8Array, blockLength: number, codec: string, exact: boolean): Uint8Array {
  const ok = exact ? decoded.length === blockLength : decoded.length > 0 && decoded.length <= blockLength;
  if (!ok) throw corrupt(`${codec} gave ${decoded.length} bytes, expected ${exact ? '' : 'at most '}${blockLength}`);
  return decoded;
}

/** Decodes `payload` (mode `mode`) to `blockLength` bytes on the calling thread. */
export function decodeBlockSync(mode: number, payload: Uint8Array, blockLength: number, exact = true): Uint8Array {
  switch (mode) {
    case MODE_STORED:
      return checkLength(payload, blockLength, 'stored block', exact);
    case MODE_ZLIB: {
      let decoded: Uint8Array;
      try {
        decoded = inflateSync(payload, { maxOutputLength: Math.max(blockLength, 1) });
      } catch (error) {
        throw corrupt(`zlib: ${(error as Error).message}`);
      }
      return checkLength(decoded, blockLength, 'zlib', exact);
    }
    case MODE_ZSTD: {
      if (zstd === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): zstd decoder used before codecsReady()');
      return checkLength(zstd.decode(payload, blockLength), blockLength, 'zstd', exact);
    }
    default:
      throw corrupt(`unknown mode ${mode} (0 stored, 1 zlib, 2 zstd)`);
  }
}

/** As decodeBlockSync; zlib runs on the libuv pool, off the calling thread. */
export async function decodeBlock(mode: number, payload: Uint8Array, blockLength: number, exact = true): Promise<Uint8Array> {
  if (mode === MODE_ZLIB) {
    const decoded = await new Promise<Uint8Array>((resolve, reject) => {
      inflate(payload, { maxOutputLength: Math.max(blockLength, 1) }, (error, result) => {
        if (error === null) resolve(result);
        else reject(corrupt(`zlib: ${error.message}`));
      });
    });
    return checkLength(decoded, blockLength, 'zlib', exact);
  }
  if (mode === MODE_ZSTD) await codecsReady();
  return decodeBlockSync(mode, payload, blockLength, exact);
}
