import { buildApp } from './app.js'

const connection = process.env.DATABASE_URL
if (!connection) {
  console.error('Set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres')
  process.exit(1)
}
const app = await buildApp({ connection, metricsToken: process.env.METRICS_TOKEN })
const address = await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
console.log(`metrics on ${address}/metrics`)

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await app.close()
    process.exit(0)
  })
}
