// SPDX-License-Identifier: MIT
/**
 * Boots a disk image in qemu-system-x86_64 with TCG (no KVM needed), the serial console in a
 * file, and a hard deadline: past it qemu is killed and the boot fails with the tail of the
 * serial log. qemu exits by itself when the guest powers off (and, with -no-reboot, when it
 * would reboot, e.g. after a panic).
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { run } from './run.js';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export interface BootRun {
  readonly code: number | null;
  readonly serial: string;
  readonly seconds: number;
}

export interface BootOptions {
  /** The qcow2 the guest boots from (its only disk, virtio). */
  readonly disk: string;
  readonly serialLog: string;
  /** UEFI: OVMF's code and a writable copy of its variable store. Absent: SeaBIOS, qemu's default firmware. */
  readonly uefiVars?: string;
  readonly timeoutMs: number;
}

/** The last `lines` lines of the serial log, escape sequences dropped, for error messages. */
export function serialTail(serial: string, lines = 40): string {
  // eslint-disable-next-line no-control-regex -- the firmware's ANSI escape sequences
  return serial.replace(/\u001b\[[0-9;=?]*[A-Za-z]/g, '').split(/\r?\n/).slice(-lines).join('\n');
}

export async function bootQemu(options: BootOptions): Promise<BootRun> {
  const firmware = options.uefiVars === undefined ? [] : [
    '-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`,
    '-drive', `if=pflash,format=raw,file=${options.uefiVars}`,
  ];
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-m', '512', '-smp', '1',
    '-display', 'none', '-monitor', 'none', '-nic', 'none',
    '-serial', `file:${options.serialLog}`,
    ...firmware,
    '-drive', `file=${options.disk},format=qcow2,if=virtio`,
    '-no-reboot',
  ];
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  try {
    const code = await new Promise<number | null>((resolvePromise, reject) => {
      child.once('error', reject);
      child.once('exit', (exitCode) => { resolvePromise(exitCode); });
    });
    const serial = await readFile(options.serialLog, 'latin1').catch(() => '');
    const seconds = (performance.now() - started) / 1000;
    if (timedOut) throw new Error(`qemu did not finish within ${options.timeoutMs / 1000} s; killed. Serial log tail:\n${serialTail(serial)}\n${stderr}`);
    if (code !== 0) throw new Error(`qemu exited ${code}\n${stderr}\nSerial log tail:\n${serialTail(serial)}`);
    return { code, serial, seconds };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/** Bytes of a disk image as qemu's block layer reads them (`qemu-io read -v`), independent of synthvhd. */
export async function qemuRead(image: string, format: string, offset: number, length: number): Promise<Buffer> {
  const result = await run('qemu-io', ['-r', '-f', format, '-c', `read -v ${offset} ${length}`, image]);
  if (result.code !== 0) throw new Error(`qemu-io ${image}: ${result.stderr}`);
  // Lines "0000fe00:  53 59 4e ...  SYNTH...": an offset, up to 16 hex bytes, their text.
  const bytes: number[] = [];
  for (const line of result.stdout.split('\n')) {
    const m = /^[0-9a-f]{8}:((?: {1,2}[0-9a-f]{2}){1,16})/.exec(line);
    if (m?.[1] === undefined) continue;
    for (const hex of m[1].trim().split(/\s+/)) bytes.push(parseInt(hex, 16));
  }
  if (bytes.length !== length) throw new Error(`qemu-io ${image}: read ${bytes.length} bytes, expected ${length}\n${result.stdout}`);
  return Buffer.from(bytes);
}
