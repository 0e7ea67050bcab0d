import { expect } from 'chai';
import { parseSize } from '../../src/util/size';

describe('parseSize', () => {
  it('reads binary and decimal units', () => {
    expect(parseSize('10G')).to.equal(10 * 2 ** 30);
    expect(parseSize('512m')).to.equal(512 * 2 ** 20);
    expect(parseSize('1.5T')).to.equal(1.5 * 2 ** 40);
    expect(parseSize('4096')).to.equal(4096);
    expect(parseSize('1GB')).to.equal(1e9);
  });
  it('refuses nonsense with a message naming the input', () => {
    for (const bad of ['', 'G', '-1G', '10X', '1e3', '1 2']) expect(() => parseSize(bad)).to.throw(`bad size "${bad}"`);
  });
});
