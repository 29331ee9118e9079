'use strict'
// Check (c) of the consumer leg: a CommonJS app loads the ESM packages with require() (Node >=
// 20.19), gets every plugin as a named and a default export, one core shared by all of them,
// and can register the umbrella and answer a probe against the database in DATABASE_URL.
const assert = require('node:assert/strict')
const Fastify = require('fastify')
const umbrella = require('fastify-pg-pool')

assert.equal(typeof umbrella.default, 'function', 'the default export is the plugin')
assert.equal(umbrella.pgPool, umbrella.default, 'pgPool is the default export')
assert.equal(umbrella.default[Symbol.for('plugin-meta')]?.name, 'fastify-pg-pool', 'fastify-plugin metadata')
assert.equal(typeof umbrella.errors, 'object', 'errors')

const parts = [
  ['@fastify-pg-pool/core', 'pgPoolCore'],
  ['@fastify-pg-pool/health', 'pgPoolHealth'],
  ['@fastify-pg-pool/metrics', 'pgPoolMetrics'],
  ['@fastify-pg-pool/backpressure', 'pgPoolBackpressure'],
]
for (const [name, plugin] of parts) {
  const part = require(name)
  assert.equal(typeof part.default, 'function', `${name}: default export`)
  assert.equal(part[plugin], part.default, `${name}: ${plugin} is the default export`)
  assert.equal(umbrella[plugin], part.default, `fastify-pg-pool re-exports ${name}'s ${plugin}, not a copy`)
  assert.equal(part.default[Symbol.for('plugin-meta')]?.name, name, `${name}: fastify-plugin metadata`)
}

async function main() {
  const app = Fastify()
  await app.register(umbrella, { connection: process.env.DATABASE_URL, pool: { max: 2 } })
  try {
    const ready = await app.inject('/health/ready')
    assert.equal(ready.statusCode, 200, `GET /health/ready: ${ready.statusCode} ${ready.body}`)
    const [row] = await app.db`select 1 as one`
    assert.equal(row.one, 1, 'app.db')
  } finally {
    await app.close()
  }
  console.log(`require(): fastify-pg-pool exports ${Object.keys(umbrella).sort().join(', ')}`)
}
main().catch((error) => {
  console.error(error)
  process.exit(1)
})
