// SPDX-License-Identifier: MIT
/**
 * `synthvhd doctor [ROOT] [--probe-dir DIR] [--json]`: checks FUSE, libfuse, fusermount, the
 * native addon and, with ROOT, its file system (reflink probe outside the backup tree), the
 * backups found (served, incomplete, not served and why) and free space. Exits 1 when a check
 * failed (warnings do not count).
 */
import { runDoctor, type BackupState, type CheckStatus, type DoctorReport } from '../../doctor/doctor.js';
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { nestedJson } from '../json-output.js';

export interface DoctorCommandOptions {
  readonly json?: boolean;
  readonly probeDir?: string;
}

const STATUS_LABEL: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };
const STATE_LABEL: Record<BackupState, string> = { served: 'served    ', incomplete: 'incomplete', 'not-served': 'not served' };

/**
 * Writes byte for byte what `JSON.stringify(report, null, 2)` would, a few hundred backups at a
 * time: for 10 000 disks the report is some 6 MB of text, which as one string (and its UTF-8
 * copy on its way out) was the largest allocation of the whole run.
 */
async function writeReportJson(report: DoctorReport): Promise<void> {
  const marker = '\u0000backups\u0000';
  const [head = '', tail = ''] = JSON.stringify({ ...report, backups: marker }, null, 2).split(JSON.stringify(marker));
  const write = (text: string): Promise<void> =>
    new Promise((resolvePromise, reject) => {
      process.stdout.write(text, (error) => {
        if (error === null || error === undefined) resolvePromise();
        else reject(error);
      });
    });
  if (report.backups.length === 0) {
    await write(`${head}[]${tail}\n`);
    return;
  }
  let chunk = `${head}[`;
  for (const [index, entry] of report.backups.entries()) {
    chunk += `${index === 0 ? '' : ','}\n    ${nestedJson(entry, 2)}`;
    if (chunk.length >= 1 << 16) {
      await write(chunk);
      chunk = '';
    }
  }
  await write(`${chunk}\n  ]${tail}\n`);
}

export async function doctorCommand(root: string | undefined, options: DoctorCommandOptions): Promise<void> {
  const report = await runDoctor({ root, probeDir: options.probeDir });
  if (options.json === true) {
    await writeReportJson(report);
  } else {
    const width = Math.max(...report.checks.map(({ name }) => name.length));
    const lines = report.checks.map(({ name, status, detail }) => `${STATUS_LABEL[status]}  ${name.padEnd(width)}  ${detail}`);
    if (report.root !== null && report.backups.length > 0) {
      lines.push('', `backups under ${report.root}:`);
      for (const entry of report.backups) {
        const folder = entry.folder.startsWith(`${report.root}/`) ? entry.folder.slice(report.root.length + 1) : entry.folder;
        lines.push(`  ${STATE_LABEL[entry.state]}  ${folder} (${entry.format.toUpperCase()}): ${entry.detail}`);
        for (const note of entry.notes ?? []) lines.push(`              note: ${note}`);
      }
    }
    const warnings = report.checks.filter(({ status }) => status === 'warn').length;
    lines.push('', report.failed.length === 0 ? `no check failed${warnings === 0 ? '' : ` (${warnings} warning${warnings === 1 ? '' : 's'})`}` : `${report.failed.length} check${report.failed.length === 1 ? '' : 's'} failed`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (report.failed.length > 0) {
    throw new SynthvhdError('E_IO', `doctor: ${report.failed.length === 1 ? 'a check' : `${report.failed.length} checks`} failed: ${report.failed.join(', ')}`);
  }
}
