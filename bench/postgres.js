// The database the benchmark runs on: DATABASE_URL when set, else the demo's throwaway
// embedded PostgreSQL (examples/basic/src/database.js), seeded with the benchmark's table.
import postgres from 'postgres'
import { startDatabase as startDemoDatabase } from '../examples/basic/src/database.js'

export const ITEMS = 10_000

/** Starts (or connects to) PostgreSQL and seeds `fpp_bench_items`; resolves with { url, kind, version, admin, stop }. */
export async function startDatabase() {
  const kind = process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded'
  const server = await startDemoDatabase({ info: () => {} })
  const admin = postgres(server.url, { max: 2, onnotice: () => {} })
  await admin`create table if not exists fpp_bench_items (id int primary key, name text not null)`
  await admin`
    insert into fpp_bench_items select g, 'item ' || g from generate_series(1, ${ITEMS}) g
    on conflict (id) do nothing`
  await admin`analyze fpp_bench_items`
  const [{ version }] = await admin`select current_setting('server_version') as version`
  return {
    url: server.url,
    kind,
    version,
    admin,
    async stop() {
      await admin.end({ timeout: 1 })
      await server.stop().catch(() => {})
    },
  }
}
