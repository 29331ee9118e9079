/**
 * PostgreSQL write-ahead log positions (`pg_lsn`, `16/B374D848`): two 32-bit hex halves of a
 * 64-bit byte position. Compared and subtracted as bigints.
 */
export type Lsn = bigint

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/

/** The position a `pg_lsn` text names, or undefined when it is not one. */
export function parseLsn(text: unknown): Lsn | undefined {
  if (typeof text !== 'string') return undefined
  const match = LSN.exec(text)
  if (match === null) return undefined
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}
