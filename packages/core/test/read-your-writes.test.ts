import { describe, expect, test } from 'vitest'
import { parseLsn } from '../src/lsn.js'
import { ReadYourWrites, type ReadYourWritesSettings } from '../src/read-your-writes.js'

const settings: ReadYourWritesSettings = {
  secret: 'one-secret-for-the-whole-app',
  header: 'x-pg-read-after',
  cookie: false,
  maxWait: 200,
}
const lsn = parseLsn('16/B374D848')

describe('read-your-writes tokens', () => {
  test('a token verifies under the scope (instance and database) that issued it', () => {
    const tokens = new ReadYourWrites(settings, '\0notes')
    expect(lsn).toBeDefined()
    const token = tokens.token(lsn as NonNullable<typeof lsn>)
    expect(tokens.verify(token)).toEqual(lsn)
  })

  test("another scope's token, under the same secret, is ignored like a forged one", () => {
    const notes = new ReadYourWrites(settings, '\0notes')
    const events = new ReadYourWrites(settings, 'events\0app')
    const token = events.token(lsn as NonNullable<typeof lsn>)
    expect(notes.verify(token)).toBeUndefined()
    // The same instance with another database is another scope too.
    expect(new ReadYourWrites(settings, 'events\0other').verify(token)).toBeUndefined()
  })

  test('missing, malformed and forged tokens are ignored', () => {
    const tokens = new ReadYourWrites(settings, '\0notes')
    const good = tokens.token(lsn as NonNullable<typeof lsn>)
    for (const bad of [undefined, '', '.', 'x', '16/B374D848', `${good}x`, `FF/0.${good.split('.')[1]}`, 42]) {
      expect(tokens.verify(bad)).toBeUndefined()
    }
  })
})
