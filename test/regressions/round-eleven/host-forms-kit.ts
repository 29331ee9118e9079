import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import type { TestDatabase } from '../../support/database.js'

export const ENV_KEYS = ['PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD', 'DATABASE_URL']
export function restoreEnv(saved: NodeJS.ProcessEnv) {
  for (const k of ENV_KEYS) {
    if (saved[k] === undefined) delete process.env[k]
    else process.env[k] = saved[k]
  }
}
export function parts(db: TestDatabase) {
  const u = new URL(db.directUrl)
  return {
    host: u.hostname,
    port: Number(u.port),
    rest: {
      database: decodeURIComponent(u.pathname.slice(1)),
      username: decodeURIComponent(u.username),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    },
  }
}
export async function outcome(connection: unknown) {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1, connectTimeout: 5_000 } })
    app.get('/q', async (request) => (await request.db`select inet_server_port() as port`)[0])
    await app.ready()
    const res = await app.inject('/q')
    return {
      status: res.statusCode,
      serverPort: res.statusCode === 200 ? (res.json() as { port: number }).port : undefined,
      target: app.pgPool.target,
      endpoint: { ...app.pgPool.endpoint },
    }
  } catch (error) {
    const e = error as Error & { code?: string }
    return { refused: `${e.code}: ${e.message}` }
  } finally {
    await app.close().catch(() => {})
  }
}
