// Child process for close-keeps-process-alive.test.ts: registers the pool with one replica, holds
// a lag sample (the parent's proxy blackholes the primary once told), closes, and prints 'closed'.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const [primaryUrl, standbyUrl] = process.argv.slice(2)
const app = Fastify()
await app.register(pgPoolCore, {
  connection: primaryUrl,
  replicas: [standbyUrl],
  replica: { lagInterval: 10 },
  pool: { max: 1, applicationName: 'probe-close-child', closeTimeout: 200 },
})
await app.ready()
process.stdout.write('ready\n')
process.stdin.once('data', async () => {
  // stdin must not keep the process alive itself.
  process.stdin.destroy()
  await app.close()
  process.stdout.write('closed\n')
  // Diagnostic: what is still open a moment later (an unref'd timer: it keeps nothing alive).
  setTimeout(() => {
    const sockets = process._getActiveHandles().filter((h) => h?.constructor?.name === 'Socket' && h.remotePort)
    process.stderr.write(
      `[close-child] open sockets after close: ${JSON.stringify(sockets.map((s) => s.remotePort))}\n`,
    )
  }, 1_000).unref()
})
