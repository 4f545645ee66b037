// SPDX-License-Identifier: MIT
import type { FixtureDisk, FixtureSet } from '../../fixtures/build-fixtures.js';

/** The fixture disk called `name` ('uefi-gpt-run1', 'bios-mbr', …); a missing one fails the test. */
export function fixtureDisk(fixtures: FixtureSet, name: string): FixtureDisk {
  const disk = fixtures.disks.find((candidate) => candidate.name === name);
  if (disk === undefined) throw new Error(`fixture disk ${name} missing`);
  return disk;
}
