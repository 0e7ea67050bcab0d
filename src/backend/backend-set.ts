import type { Pool } from '../pool/pool';
import { FileBackend } from './file-backend';

/** The open backends of a pool, opened on first use (a backend may be added while mounted). */
export class BackendSet {
  readonly #open = new Map<number, Promise<FileBackend>>();

  constructor(private readonly pool: Pool) {}

  get(id: number): Promise<FileBackend> {
    let b = this.#open.get(id);
    if (!b) {
      b = FileBackend.open(this.pool.backend(id));
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
