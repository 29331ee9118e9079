// Child of callbacks tests: registers the core with connection.onnotice/onclose as given by the
// scenario, raises a notice in a request and terminates the request's backend; prints one JSON line.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'

const [url, applicationName, scenario] = process.argv.slice(2)
const u = new URL(url)
const base = {
  host: u.hostname,
  port: Number(u.port),
  database: u.pathname.slice(1),
  user: decodeURIComponent(u.username),
  ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
}
const calls = { notice: 0, close: 0 }
const callbacks = {
  'throw-sync': {
    onnotice: () => {
      calls.notice++
      throw new Error('onnotice threw')
    },
    onclose: () => {
      calls.close++
      throw new Error('onclose threw')
    },
  },
  'reject-notice': {
    onnotice: async () => {
      calls.notice++
      throw new Error('onnotice rejected')
    },
  },
  'reject-close': {
    onclose: async () => {
      calls.close++
      throw new Error('onclose rejected')
    },
  },
}[scenario]
const app = Fastify()
await app.register(pgPoolCore, { connection: { ...base, ...callbacks }, pool: { max: 1, applicationName } })
app.get('/', async (request) => {
  await request.db.unsafe(`do $$ begin raise notice 'hello'; end $$`)
  return 'ok'
})
const status = (await app.inject('/')).statusCode
const admin = postgres(url, { max: 1, onnotice: () => {} })
await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}`
await admin.end()
await new Promise((resolve) => setTimeout(resolve, 500))
const after = (await app.inject('/')).statusCode
await app.close()
await new Promise((resolve) => setTimeout(resolve, 200))
console.log(JSON.stringify({ status, after, ...calls }))
