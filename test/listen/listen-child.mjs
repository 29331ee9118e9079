// Child process for listen-end.test.ts. argv: url applicationName scenario delayMs
// Listens on a channel through a proxy of its own (so the connection can be cut or frozen), then
// loses the LISTEN connection (terminated, cut, frozen) `delayMs` around ending it (app.close() or
// the last unlisten; a negative delay ends first). Prints one JSON line, then must exit by itself.
import net from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'

const [url, applicationName, scenario, delayText] = process.argv.slice(2)
const delay = Number(delayText)
const listenName = `${applicationName}/listen`
const target = new URL(url)

// A proxy: 'pass', 'cut' (both sides destroyed), 'freeze' (nothing forwarded, the client's FIN
// ignored: a dropped network path).
let mode = 'pass'
/** Freeze every connection, not only the LISTEN one. */
const freezeAll = scenario.includes('all')
/** Freeze the pool's connections only. */
const freezePool = scenario.includes('pool')
const pipes = new Set()
const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect(Number(target.port || 5432), target.hostname)
  const pipe = { client, upstream }
  // The proxy's own sockets keep nothing alive: only the app's can.
  client.unref()
  upstream.unref()
  pipes.add(pipe)
  client.on('error', () => {})
  upstream.on('error', () => {})
  const frozen = () => mode === 'freeze' && (freezePool ? !pipe.listen : pipe.listen || freezeAll)
  client.on('data', (chunk) => {
    if (pipe.listen === undefined) pipe.listen = chunk.includes(Buffer.from('/listen'))
    if (!frozen()) upstream.write(chunk)
  })
  upstream.on('data', (chunk) => !frozen() && client.write(chunk))
  client.on('end', () => !frozen() && upstream.end())
  upstream.on('end', () => !frozen() && client.end())
  client.on('close', () => !frozen() && upstream.destroy())
  upstream.on('close', () => !frozen() && client.destroy())
})
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
proxy.unref()
const proxied = new URL(url)
proxied.hostname = '127.0.0.1'
proxied.port = String(proxy.address().port)

const admin = postgres(url, { max: 1, onnotice: () => {} })
const listenBackends = async () =>
  (await admin`select count(*)::int as n from pg_stat_activity where application_name = ${listenName}`)[0].n
const app = Fastify()
await app.register(pgPoolCore, {
  connection: proxied.toString(),
  pool: { max: 1, applicationName, pgbouncer: false, connectTimeout: 2000, closeTimeout: 300 },
})
app.get('/sleep', async (request) => request.db`select pg_sleep(10)`)
await app.ready()

const lose = async () => {
  if (scenario.startsWith('terminate')) {
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${listenName}`
  } else if (scenario.startsWith('cut')) {
    mode = 'cut'
    for (const { client, upstream, listen } of pipes) {
      if (!listen) continue
      client.destroy()
      upstream.destroy()
    }
    mode = 'pass'
  } else if (scenario.startsWith('freeze')) {
    mode = 'freeze'
  }
}
const after = (ms, fn) => (ms <= 0 ? fn() : new Promise((resolve) => setTimeout(resolve, ms)).then(fn))

const result = { scenario, delay }
if (scenario.endsWith('opening-close')) {
  // A listen still opening when app.close() runs (and the connection lost meanwhile).
  const pending = app.db.listen('probe_channel', () => {}).catch((error) => error.code)
  await Promise.all([after(delay, () => app.close()), after(Math.max(0, -delay), lose)])
  result.listen = await pending
} else {
  const listening = await app.db.listen('probe_channel', () => {})
  if (scenario.endsWith('second-close')) void app.db.listen('probe_other', () => {}).catch(() => {})
  if (scenario.includes('query')) {
    // A request's statement running on the pool's connection when the path freezes.
    void app.inject('/sleep')
    while (app.pgPool.stats().leased === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const end = scenario.includes('unlisten') ? () => listening.unlisten() : () => app.close()
  // delay > 0: lose first, end `delay` ms later; delay < 0: end first, lose |delay| ms later.
  await Promise.all([after(delay, end), after(-delay, lose)])
  if (scenario.includes('unlisten')) {
    // The last channel was unlistened: nothing may reconnect (postgres.js backoff is at most 2 s here).
    await new Promise((resolve) => setTimeout(resolve, 3000))
    result.afterUnlisten = await listenBackends()
    result.stats = app.pgPool.listener()
    await app.close()
  }
}
result.closed = true
if (mode === 'freeze') {
  // The frozen path stays frozen: only the server side is let go (the test server's backend).
  for (const { upstream, listen } of pipes) if (freezePool ? !listen : listen || freezeAll) upstream.destroy()
}
await new Promise((resolve) => setTimeout(resolve, 3000))
result.afterClose = await listenBackends()
await admin.end({ timeout: 1 })
proxy.close()
// Diagnostic: what is still open.
setTimeout(() => {
  const handles = process
    ._getActiveHandles()
    .map((h) => `${h?.constructor?.name}:${h?.remotePort ?? ''}:${h?.localPort ?? ''}`)
  process.stderr.write(`[listen-child] ${scenario} ${delay} handles after close: ${JSON.stringify(handles)}\n`)
}, 2000).unref()
process.stdout.write(`${JSON.stringify(result)}\n`)
