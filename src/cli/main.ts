import yargs from 'yargs';
import { FsError } from '../util/errors';
import { backendCommand } from './commands/backend';
import { checkCommand } from './commands/check';
import { dfCommand } from './commands/df';
import { mapCommand } from './commands/map';
import { mountCommand } from './commands/mount';
import { poolCommand } from './commands/pool';
import { quickstartCommand } from './commands/quickstart';
import { layoutCommands } from './commands/layout';
import { reclaimCommand } from './commands/reclaim';
import { snapshotCommand } from './commands/snapshot';
import { statusCommand } from './commands/status';
import { volumeCommand } from './commands/volume';
import { DEFAULT_POOL, type GlobalArgs } from './context';

export async function main(argv: string[]): Promise<void> {
  let y = yargs(argv)
    .scriptName('thinvol')
    .usage('$0 [--pool DIR] <command>\n\nThin-provisioned block volumes served as sparse files over FUSE.')
    .option('pool', { type: 'string', default: process.env.THINVOL_POOL ?? DEFAULT_POOL, describe: 'pool directory (env THINVOL_POOL)', global: true })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output', global: true })
    .strict()
    .demandCommand(1, 'say which command; see --help')
    .recommendCommands()
    .epilog('A VOLUME is named by its name, or by its id written id:N.\nLogs: DEBUG=thinvol:* traces FUSE operations, allocation decisions and commits.')
    .fail((msg, err) => { throw err ?? new FsError('EINVAL', msg.replace(/\n\s*/g, ' ')); }) as unknown as yargs.Argv<GlobalArgs>;
  for (const add of [poolCommand, backendCommand, volumeCommand, snapshotCommand, mountCommand, dfCommand, mapCommand, checkCommand, reclaimCommand, layoutCommands, statusCommand, quickstartCommand]) y = add(y);
  await y.parseAsync();
}
