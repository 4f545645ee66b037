// SPDX-License-Identifier: MIT
/**
 * Windows paths for the `absolute_win32_path` entry of a differencing VHDX's parent locator.
 *
 * MS-VHDX 2.6.2.6.3: `absolute_win32_path` is an absolute Win32 path that begins with `\\?\`,
 * i.e. `\\?\C:\dir\parent.vhdx` or, for a file on a share, `\\?\UNC\server\share\dir\parent.vhdx`
 * (the Win32 long-path forms, "Naming Files, Paths, and Namespaces"). A Linux path has no valid
 * form there, so synthvhd writes the entry only when the user says how Windows reaches the
 * parent (`--windows-path`); otherwise the locator holds `parent_linkage` and `relative_path`
 * only, which Windows tries first anyway (docs/containers.md "Parent locators").
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';

/** `C:\…` (drive letter), `\\server\share…` (UNC) or their `\\?\` forms; `/` counts as `\`. */
const DRIVE = /^[A-Za-z]:\\/;
const UNC = /^\\\\[^\\?.][^\\]*\\[^\\]+/;
const LONG_DRIVE = /^\\\\\?\\[A-Za-z]:\\/;
const LONG_UNC = /^\\\\\?\\UNC\\[^\\]+\\[^\\]+/i;

/**
 * Checks a Windows folder path given by the user (`\\nas\vdisks`, `D:\Backups`, with `\` or `/`)
 * and returns it with `\` separators and no trailing separator. Throws E_USAGE naming `option`.
 */
export function parseWindowsFolder(text: string, option = '--windows-path'): string {
  const path = text.replaceAll('/', '\\').replace(/\\+$/, '');
  // `D:` alone (after the trailing separator was dropped) is the drive's root.
  const withSeparator = `${path}\\`;
  if (!(DRIVE.test(withSeparator) || UNC.test(path) || LONG_DRIVE.test(withSeparator) || LONG_UNC.test(path))) {
    throw new SynthvhdError('E_USAGE', `${option}: ${text} is not a Windows drive-letter path (D:\\Backups) or share path (\\\\server\\share)`);
  }
  if (/[\0<>"|*]/.test(path.replace(/^\\\\\?\\/, ''))) {
    throw new SynthvhdError('E_USAGE', `${option}: ${text} holds a character Windows does not allow in a path`);
  }
  return path;
}

/**
 * The MS-VHDX `absolute_win32_path` of the file `relativePath` (Linux `/` separators) below the
 * Windows folder `windowsFolder` (from parseWindowsFolder).
 */
export function absoluteWin32Path(windowsFolder: string, relativePath: string): string {
  const parts = relativePath.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw new SynthvhdError('E_USAGE', `${relativePath}: the parent is not below the folder named by --windows-path`);
  const full = [windowsFolder, ...parts].join('\\');
  if (full.startsWith('\\\\?\\')) return full;
  if (full.startsWith('\\\\')) return `\\\\?\\UNC\\${full.slice(2)}`;
  return `\\\\?\\${full}`;
}
