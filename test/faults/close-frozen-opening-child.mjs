// Child: registers core through the proxy, starts an opening whose onConnect freezes, closes.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const say = (line) => process.stdout.write(`${line}\n`)
const app = Fastify()
await app.register(pgPoolCore, {
  connection: process.env.PROBE_URL,
  pool: { max: 1, lazy: true, connectTimeout: Number(process.env.PROBE_CONNECT_TIMEOUT), acquireTimeout: 60_000 },
  onConnect: async (sql) => {
    say('onconnect')
    await new Promise((r) => setTimeout(r, 300))
    await sql`select 1`
  },
})
app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
const pending = app.inject('/q')
await new Promise((r) => setTimeout(r, 1_000))
await app.close()
say(`closed ${Date.now()}`)
await pending.catch(() => {})
process.on('exit', () => say(`exit ${Date.now()}`))
