// SPDX-License-Identifier: MIT
/**
 * Every line about bad input names the file (docs/architecture.md, STYLE: "<object>: <what is
 * wrong>"). A parser deep inside a container format does not always know the file it reads;
 * the edges that report a backup (ls, doctor, materialize, the mount's log) do, and use these
 * so that their one line always names it.
 */
import { SynthvhdError } from './synthvhd-error.js';

/** `reason`, led by `path` unless it already names it. */
export function lineNaming(path: string, reason: string): string {
  return reason.includes(path) ? reason : `${path}: ${reason}`;
}

/** `error` as an error that names its file (its own `path`, else `path`) in its message. */
export function errorNaming(error: SynthvhdError, path: string): SynthvhdError {
  const file = error.path ?? path;
  if (error.message.includes(file)) return error;
  return new SynthvhdError(error.code, `${file}: ${error.message}`, { path: file, cause: error });
}
