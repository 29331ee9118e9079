// What the default session reset costs PostgreSQL and Node, statement by statement: one
// connection, each message awaited on its own, CPU read from the backend's schedstat (ns) and
// process.cpuUsage(). `node bench/reset-cost.js` (RESET_COST_N messages per variant and round,
// default 5000; medians of 5 rounds). Needs Linux /proc and a server on this machine (the
// embedded one by default, or DATABASE_URL pointing at 127.0.0.1).
import { readFileSync } from 'node:fs'
import postgres from 'postgres'
import { prepareResetCheck, RESET_SQL } from '../packages/core/dist/session-reset.js'
import { startDatabase } from './postgres.js'

const UTILITIES = 'CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; UNLISTEN *'
const UNLOCK = 'SELECT WHERE pg_catalog.pg_advisory_unlock_all() IS NULL'
// What the reset ran until the check was prepared once per connection (RESET_CHECK).
const CHECK = 'SELECT FROM pg_catalog.pg_prepared_statement() s WHERE 1 / (s.from_sql::int - 1) = 0'
const PREVIOUS_RESET = `BEGIN ISOLATION LEVEL READ COMMITTED; ${UTILITIES}; ${UNLOCK}; ${CHECK}; COMMIT`

const variants = {
  'GET-by-id statement (reference)': null,
  'BEGIN; COMMIT (any fail-closed message)': 'BEGIN; COMMIT',
  'utilities (CLOSE ALL … UNLISTEN *)': `BEGIN; ${UTILITIES}; COMMIT`,
  'advisory unlock': `BEGIN; ${UNLOCK}; COMMIT`,
  'PREPARE check, planned in the message': `BEGIN; ${CHECK}; COMMIT`,
  'the reset before the check was prepared (unlock and check planned in the message)': PREVIOUS_RESET,
  'the suite reset (RESET_SQL: unlock and check prepared once per connection)': RESET_SQL,
  'DISCARD ALL (unusable: drops postgres.js statements)': 'DISCARD ALL',
}

// Measured on a connection of the pool's kind: the check prepared (connection-factory.ts) ...
const withCheck = new Set(['the suite reset (RESET_SQL: unlock and check prepared once per connection)'])

const db = await startDatabase()
async function connect(prepareCheck) {
  const sql = postgres(db.url, { max: 1, onnotice: () => {} })
  const [{ pid }] = await sql`select pg_backend_pid() as pid`
  // A few statements prepared, as postgres.js leaves on a connection an app has used.
  for (let i = 0; i < 5; i++) await sql`select ${i}::int + ${i} as ${sql(`x${i}`)}`
  if (prepareCheck) await sql.unsafe(prepareResetCheck()).simple()
  return { sql, pid }
}
// ... or on one without it, where the earlier check finds no SQL-level statement.
const plain = await connect(false)
const prepared = await connect(true)
const backendMicros = (pid) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000
const nodeMicros = () => {
  const { user, system } = process.cpuUsage()
  return user + system
}

const N = Number(process.env.RESET_COST_N ?? 5000)
const samples = {}
for (let round = 0; round < 5; round++) {
  for (const [name, text] of Object.entries(variants)) {
    const { sql, pid } = withCheck.has(name) ? prepared : plain
    const pg0 = backendMicros(pid)
    const node0 = nodeMicros()
    for (let i = 0; i < N; i++) {
      if (text === null) await sql`select name from fpp_bench_items where id = ${(i % 1000) + 1}`
      else await sql.unsafe(text).simple()
    }
    const pg = (backendMicros(pid) - pg0) / N
    const node = (nodeMicros() - node0) / N
    samples[name] = [...(samples[name] ?? []), [pg, node]]
  }
}
const median = (values) => values.sort((a, b) => a - b)[values.length >> 1]
console.log(`PostgreSQL ${db.version}, ${N} messages per variant and round, medians of 5 rounds`)
console.log('| message | PG CPU µs | Node CPU µs |\n|---|---|---|')
for (const [name, rows] of Object.entries(samples)) {
  const pg = median(rows.map((r) => r[0])).toFixed(1)
  const node = median(rows.map((r) => r[1])).toFixed(1)
  console.log(`| ${name} | ${pg} | ${node} |`)
}
await plain.sql.end()
await prepared.sql.end()
await db.stop()
