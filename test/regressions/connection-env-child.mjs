// Child: registers the core on argv[2] with the environment it was given (PGSSL), prints one JSON line.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const [url, form] = process.argv.slice(2)
const u = new URL(url)
const connection =
  form === 'url'
    ? url
    : {
        host: u.hostname,
        port: Number(u.port),
        database: u.pathname.slice(1),
        user: decodeURIComponent(u.username),
        ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      }
const app = Fastify()
try {
  await app.register(pgPoolCore, { connection, pool: { max: 1, connectTimeout: 3000 } })
  await app.ready()
  const [row] = await app.db`select coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl`
  console.log(JSON.stringify({ registered: true, ssl: row.ssl }))
} catch (error) {
  console.log(
    JSON.stringify({
      registered: false,
      code: error.code,
      cause: String(error.cause?.message ?? error.message).slice(0, 160),
    }),
  )
}
await app.close()
