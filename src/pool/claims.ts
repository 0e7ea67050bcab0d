import type { MetaStore } from '../store/meta-store';
import type { Holder } from '../store/records';
import { FsError } from '../util/errors';
import { holderAlive, holderId } from './holder';

/** Write claims: one writer per volume across all the processes of a pool. */
export class Claims {
  constructor(private readonly store: MetaStore) {}

  /** Takes the write claim of a volume for `holder`; refused while another live process holds it. */
  claim(volumeId: number, holder: Holder): void {
    this.store.txn(() => {
      const cur = this.store.claims.get(volumeId);
      if (cur && holderId(cur) !== holderId(holder) && holderAlive(cur)) {
        throw new FsError('EBUSY', `volume ${volumeId} is being written by another thinvol process (pid ${cur.pid})`);
      }
      this.store.claims.put(volumeId, holder);
    });
  }

  unclaim(volumeId: number, holder: Holder): void {
    this.store.txn(() => {
      const cur = this.store.claims.get(volumeId);
      if (cur && holderId(cur) === holderId(holder)) this.store.claims.remove(volumeId);
    });
  }

  /** The live process holding a volume's write claim, if any. */
  claimant(volumeId: number): Holder | undefined {
    const cur = this.store.claims.get(volumeId);
    return cur && holderAlive(cur) ? cur : undefined;
  }
}
