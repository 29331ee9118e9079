// Round sixteen (second observability probe). What the user does: runs the umbrella with a read
// replica and loads examples/observability/prometheus-rules.yml, as the example says. The
// replica goes down (a standby restarted for maintenance, its node drained) between two lag
// samples: the reads routed to it in that moment cannot connect, and go to the primary instead
// (docs/replicas.md: "A read is never failed because a replica is down"). Every request is
// answered 200. What they got: PgPoolAcquireTimeouts, "Requests get no connection of pool
// replica-0 (503)", fired at once (no `for:`) and for five minutes: since this round the rule
// counts result="error" too, and the replica pool counts each acquire that failed to connect
// before the read fell back as pg_pool_acquires_total{pool="replica-0",result="error"}. No
// request got a 503; the replica being out is PgPoolReplicaUnusable's to say (after 5 minutes,
// on purpose). A replica pool's failed acquire (timeout or error) always falls back to the
// primary: it is never a request without a connection.
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'
import { prometheusTool } from '../../../support/tools.js'

const promtool = prometheusTool('promtool', 'replica fallback alert test')
const rules = new URL('../../../../examples/observability/prometheus-rules.yml', import.meta.url).pathname

const notes = useNotesCluster('second_observe_replica_fallback')
let proxy: TcpProxy | undefined
let app: FastifyInstance | undefined
let dir: string | undefined

beforeAll(async () => {
  proxy = await startTcpProxy(notes.cluster.standby.port)
})

afterEach(async () => {
  await app?.close()
  app = undefined
})

afterAll(async () => {
  await proxy?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** pg_pool_acquires_total of every pool and result, as /metrics has them. */
function acquires(text: string): Map<string, number> {
  const found = new Map<string, number>()
  for (const line of text.split('\n')) {
    const match = /^pg_pool_acquires_total\{([^}]*)\} (\S+)$/.exec(line)
    if (match) found.set(match[1] as string, Number(match[2]))
  }
  return found
}

// Skipped only without promtool outside CI: .ci/run sets REQUIRE_PROMETHEUS_TOOLS=1, which fails instead (test/support/tools.ts).
test.skipIf(promtool === undefined)(
  'a replica down between two lag samples: its reads fall back (200), and no alert says requests got no connection',
  async () => {
    const server = Fastify()
    app = server
    await server.register(pgPool, {
      connection: notes.database.primaryUrl,
      replicas: [(proxy as TcpProxy).urlFor(notes.database.standbyUrls[0] as string)],
      // The next sample is far: the replica is still taken for usable when it goes down.
      replica: { lagInterval: 60_000, maxLag: { seconds: 600 } },
      pool: { max: 2, connectTimeout: 2_000 },
    })
    server.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby`
      return row
    })
    await server.ready()
    const replica = server.pgPools.all()[1]
    await waitUntil(() => replica?.replica()?.usable === true, 'the replica to be usable', 20_000)
    expect((await server.inject('/where')).json()).toEqual({ standby: true })
    const before = acquires((await server.inject('/metrics')).body)

    // The standby goes away: its connections cut, new ones refused.
    ;(proxy as TcpProxy).setMode('reset')
    ;(proxy as TcpProxy).cutAll()
    await waitUntil(() => (replica?.stats().open ?? 0) === 0, 'the replica pool to notice', 20_000)
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) {
      const reply = await server.inject('/where')
      statuses.push(reply.statusCode)
      expect(reply.json()).toEqual({ standby: false })
    }
    expect(statuses).toEqual([200, 200, 200])
    const after = acquires((await server.inject('/metrics')).body)

    // The shipped rules, fed what /metrics said before and after (one scrape a minute).
    const series = [...after].map(([labels, value]) => {
      const was = before.get(labels) ?? 0
      return `      - series: 'pg_pool_acquires_total{job="app",instance="a:3000",${labels}}'\n        values: "${was} ${was} ${value} ${value} ${value}"`
    })
    dir = await mkdtemp(join(tmpdir(), 'r16-replica-fallback-'))
    const cases = join(dir, 'cases.yml')
    await writeFile(
      cases,
      [
        'rule_files:',
        `  - ${rules}`,
        'evaluation_interval: 1m',
        'tests:',
        '  - name: reads fell back to the primary, every request answered 200',
        '    interval: 1m',
        '    input_series:',
        ...series,
        '    alert_rule_test:',
        '      - eval_time: 3m',
        '        alertname: PgPoolAcquireTimeouts',
        '        exp_alerts: []',
        '',
      ].join('\n'),
    )
    const run = spawnSync(promtool as string, ['test', 'rules', cases], { encoding: 'utf8' })
    const output = `${run.stdout}${run.stderr}`
    expect(output).not.toContain('FAILED')
    expect(run.status).toBe(0)
  },
  120_000,
)
