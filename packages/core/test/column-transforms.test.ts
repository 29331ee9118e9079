import { describe, expect, test } from 'vitest'
import { firstValues } from '../src/lsn-source.js'
import { lsnOf } from '../src/write-position.js'

// The pool's own statements run on connections that carry the app's postgres.js options, its
// column transform included (`postgres.pascal` renames `lsn` to `Lsn`): their one-row answers are
// read by position, not by name.
describe('reading the pool’s own rows by position', () => {
  test('the write position, whatever the column is called', () => {
    expect(lsnOf([{ lsn: '0/16B3748' }])).toBe(0x16b3748n)
    expect(lsnOf([{ Lsn: '0/16B3748' }])).toBe(0x16b3748n)
    expect(lsnOf([{ a: '0/1', b: '0/2' }])).toBeUndefined()
    expect(lsnOf([])).toBeUndefined()
    expect(lsnOf(undefined)).toBeUndefined()
  })

  test("a replica's replay position, recovery and age, in column order", () => {
    expect(firstValues({ Replay: '0/10', Recovery: true, Age: 1.5 }, 3)).toEqual(['0/10', true, 1.5])
    expect(firstValues({ replay: '0/10' }, 3)).toEqual([])
    expect(firstValues(undefined, 1)).toEqual([])
  })
})
