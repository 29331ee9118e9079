// Child: registers the core with the PG* environment it was given, exercises the pool, prints one JSON line.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const [url, appName] = process.argv.slice(2)
const seen = []
process.on('uncaughtException', (e) => seen.push(`uncaught ${String(e).slice(0, 120)}`))
process.on('unhandledRejection', (e) => seen.push(`unhandled ${String(e).slice(0, 120)}`))
const logs = []
const app = Fastify({ logger: { level: 'debug', stream: { write: (line) => logs.push(line) } } })
const out = {}
try {
  await app.register(pgPoolCore, { connection: url, pool: { max: 2, connectTimeout: 3000, applicationName: appName } })
  app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
  app.get('/mix', async (request) => {
    const db = request.db
    const settled = await Promise.allSettled([
      db`select pg_sleep(0.1), 'first' as v`,
      db`select ${'second'}::text as v`,
      db`select ${db.json({ big: 10n })}::jsonb as v`,
      db`select ${'fourth'}::text as v`,
    ])
    return settled.map((s) => (s.status === 'fulfilled' ? s.value[0].v : 'rejected'))
  })
  app.get(
    '/echo/:v',
    { config: { db: { pipeline: true } } },
    async (request) => (await request.db`select ${request.params.v}::text as v, pg_sleep(0.02)`)[0],
  )
  app.get('/secret', async (request) => request.db`select * from no_such_table where note = ${'topsecretvalue'}`)
  await app.ready()
  const first = (await app.inject('/pid')).json().pid
  await new Promise((resolve) => setTimeout(resolve, 1200))
  const second = (await app.inject('/pid')).json().pid
  out.samePid = first === second
  out.mix = (await app.inject('/mix')).json()
  const echoes = await Promise.all(Array.from({ length: 8 }, (_, i) => app.inject(`/echo/e${i}`)))
  out.echoes = echoes.every((r, i) => r.statusCode === 200 && r.json().v === `e${i}`)
  const secret = await app.inject('/secret')
  out.secretStatus = secret.statusCode
  out.secretLeaked = secret.body.includes('topsecretvalue') || logs.join('').includes('topsecretvalue')
  let heard
  const { unlisten } = await app.db.listen('envprobe', (payload) => {
    heard = payload.payload ?? payload
  })
  await app.db`select pg_notify('envprobe', 'hello')`
  for (let i = 0; i < 100 && heard === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  out.heard = heard
  await unlisten()
  out.ping = await app.pgPool.ping(2000).then(
    () => 'ok',
    (e) => e.code,
  )
} catch (error) {
  out.error = `${error.code}: ${String(error.cause?.message ?? error.message).slice(0, 160)}`
}
await app.close()
out.processErrors = seen
console.log(JSON.stringify(out))
