import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { outcome, parts, restoreEnv } from './host-forms-kit.js'

// Host lists in options form that connect to the right port and show it (held, round twelve probe).
let db: TestDatabase
const saved = { ...process.env }
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})
afterEach(() => restoreEnv(saved))

test('list forms connect and show the right target', async () => {
  const { host, port, rest } = parts(db)
  const two = `${host}:${port},${host}:${port}/${rest.database}`
  const cases: [unknown, string][] = [
    [{ ...rest, host: [host], port }, `${host}:${port}/${rest.database}`],
    [{ ...rest, host: [`${host}:${port}`] }, `${host}:${port}/${rest.database}`],
    [{ ...rest, host: `${host},${host}`, port: String(port) }, two],
    [{ ...rest, host: [host, host], port: [String(port)] }, two],
    [{ ...rest, host: ` ${host} , ${host}:${port}`, port }, two],
  ]
  for (const [connection, target] of cases) {
    const r = await outcome(connection)
    expect(r).toMatchObject({ status: 200, serverPort: port, target })
  }
  process.env.PGPORT = String(port)
  expect(await outcome({ ...rest, host: [host, host] })).toMatchObject({ status: 200, serverPort: port, target: two })
})

test('a host list entry with user:password@ is refused without quoting it', async () => {
  const r = await outcome({ database: 'x', host: ['127.0.0.1', 'app:hunter2pw@127.0.0.1'] })
  expect((r as { refused: string }).refused).toMatch(/^FST_PG_POOL_INVALID_OPTION/)
  expect((r as { refused: string }).refused).not.toContain('hunter2')
})
