/** Prints a command's result: the object as JSON with --json, else the human lines. */
export function emit(json: boolean, value: unknown, human: () => string[]): void {
  const text = json ? JSON.stringify(value, null, 2) : human().join('\n');
  if (text) process.stdout.write(`${text}\n`);
}

export function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd());
}
