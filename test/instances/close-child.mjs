// Child process for held-instances.test.ts: two instances (the named one in an encapsulated
// plugin, with LISTEN on both, a lease held by hand, a transaction), closes, prints 'closed';
// the parent checks that the process then exits by itself.
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const [mainUrl, otherUrl, appName] = process.argv.slice(2)
const app = Fastify()
await app.register(pgPool, { connection: mainUrl, pool: { max: 2, applicationName: appName, closeTimeout: 500 } })
await app.register(async (child) => {
  await child.register(pgPool, {
    name: 'other',
    connection: otherUrl,
    pool: { max: 2, applicationName: appName, closeTimeout: 500 },
  })
})
app.get('/q', async (request) => {
  await request.dbs.other`select 1`
  return request.db`select 2 as two`
})
await app.ready()
await app.db.listen('probe_chan', () => {})
await app.dbs.other.listen('probe_chan', () => {})
await app.inject('/q')
await app.dbs.other.transaction(async (sql) => sql`select 1`)
const lease = await app.dbs.other.lease()
await lease`select 1`
await lease.release()
await app.inject('/health')
await app.inject('/metrics')
process.stdout.write('ready\n')
process.stdin.once('data', async () => {
  process.stdin.destroy()
  await app.close()
  process.stdout.write('closed\n')
})
