import { expect } from 'chai';
import { RangeLock } from '../../src/volume/range-lock';

describe('range lock', () => {
  it('lets shared holders overlap, makes exclusive ones wait, and keeps order', async () => {
    const lock = new RangeLock();
    const order: string[] = [];
    const r1 = await lock.acquire(0, 100, false);
    const r2 = await lock.acquire(50, 150, false);
    const w = lock.acquire(90, 95, true).then((rel) => { order.push('w'); return rel; });
    const r3 = lock.acquire(0, 10, false).then((rel) => { order.push('r3'); return rel; });
    const late = lock.acquire(92, 93, false).then((rel) => { order.push('late'); return rel; });
    await new Promise((r) => setImmediate(r));
    expect(order).to.deep.equal(['r3']);
    r1();
    r2();
    (await w)();
    (await late)();
    (await r3)();
    expect(order).to.deep.equal(['r3', 'w', 'late']);
    expect(lock.idle).to.equal(true);
  });
});
