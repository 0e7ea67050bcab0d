import type { BackendRecord } from '../store/records';
import type { Backend } from './backend';

export type BackendOpener = (record: BackendRecord) => Promise<Backend>;

/** The open backends of a pool, opened on first use (a backend may be added while mounted). */
export class BackendSet {
  readonly #open = new Map<number, Promise<Backend>>();

  constructor(private readonly recordOf: (id: number) => BackendRecord, private readonly opener: BackendOpener) {}

  get(id: number): Promise<Backend> {
    let b = this.#open.get(id);
    if (!b) {
      b = this.opener(this.recordOf(id));
      b.catch(() => this.#open.delete(id));
      this.#open.set(id, b);
    }
    return b;
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.#open.values()].map(async (b) => (await b).flush()));
  }

  async closeAll(): Promise<void> {
    const all = [...this.#open.values()];
    this.#open.clear();
    await Promise.all(all.map(async (b) => (await b).close()));
  }
}
