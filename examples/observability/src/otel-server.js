// The example app with OpenTelemetry: request spans from @fastify/otel, the pool's spans and
// metrics from @fastify-pg-pool/otel, exported over OTLP to the collector (otel-collector.yaml).
import { buildApp } from './app.js'
import { startOtel } from './otel.js'

const connection = process.env.DATABASE_URL
if (!connection) {
  console.error('Set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres')
  process.exit(1)
}
// Before the app: the plugin looks for the SDK when it registers.
const otel = startOtel()
const app = await buildApp({ connection, otel: true })
const address = await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
console.log(
  `app on ${address}; spans and metrics go to ${process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://localhost:4318'}`,
)

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await app.close()
    await otel.shutdown()
    process.exit(0)
  })
}
