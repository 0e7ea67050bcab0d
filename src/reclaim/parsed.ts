/** Outcome of a pure parser: the record, or why the bytes were not accepted. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export function accept<T>(value: T): Parsed<T> {
  return { ok: true, value };
}

export function refuse<T>(reason: string): Parsed<T> {
  return { ok: false, reason };
}
