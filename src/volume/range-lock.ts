interface Holder { start: number; end: number; exclusive: boolean; grant?: () => void }

function conflicts(a: Holder, b: Holder): boolean {
  return a.start < b.end && b.start < a.end && (a.exclusive || b.exclusive);
}

/**
 * Shared/exclusive locks on byte ranges of one volume. A request waits for any conflicting
 * holder and for any conflicting earlier waiter, so writers are not starved by readers.
 */
export class RangeLock {
  readonly #active = new Set<Holder>();
  readonly #waiting: Holder[] = [];

  acquire(start: number, end: number, exclusive: boolean): Promise<() => void> {
    const h: Holder = { start, end, exclusive };
    const release = (): void => {
      this.#active.delete(h);
      this.#wake();
    };
    if (!this.#blocked(h, this.#waiting.length)) {
      this.#active.add(h);
      return Promise.resolve(release);
    }
    return new Promise((resolve) => {
      h.grant = () => resolve(release);
      this.#waiting.push(h);
    });
  }

  get idle(): boolean {
    return this.#active.size === 0 && this.#waiting.length === 0;
  }

  #blocked(h: Holder, waitersBefore: number): boolean {
    for (const a of this.#active) if (conflicts(a, h)) return true;
    for (let i = 0; i < waitersBefore; i++) if (conflicts(this.#waiting[i]!, h)) return true;
    return false;
  }

  #wake(): void {
    for (let i = 0; i < this.#waiting.length;) {
      const h = this.#waiting[i]!;
      if (this.#blocked(h, i)) { i++; continue; }
      this.#waiting.splice(i, 1);
      this.#active.add(h);
      h.grant?.();
    }
  }
}
