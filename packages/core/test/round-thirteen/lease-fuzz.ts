import { defaultErrorMapping } from '../../src/error-mapping.js'
import { Lease, type LeaseContext } from '../../src/lease.js'
import {
  type AdapterQuery,
  createHelpers,
  queryText,
  type TrackedQuery,
  trackedQueryClass,
} from '../../src/postgres-adapter.js'
import type { PgPoolView } from '../../src/types.js'
import { flush } from '../fake-clock.js'
import { connectionError, type FakeConnection, result, serverError } from '../fake-connection.js'
import { poolHarness } from '../fake-holder.js'
import { prng } from './model.js'

export const helpers = createHelpers(undefined, {})
const Query = trackedQueryClass(helpers)

interface LeaseRec {
  lease: Lease
  id: number
  kind: 'plain' | 'tx' | 'pipe'
  n: number
  finish?: Promise<void>
  finished: boolean
  committed: boolean
  commitFailed: boolean
  outcomes: { text: string; settled: number; value?: unknown; error?: unknown }[]
}

const pick = <T>(r: () => number, xs: readonly T[]): T | undefined =>
  xs.length === 0 ? undefined : xs[Math.floor(r() * xs.length)]

/** Answers `query` on `conn` as the server would, by its text. */
function answerFor(text: string): unknown {
  const t = text.trim().toUpperCase()
  if (t.startsWith('BEGIN') || t.startsWith('START')) return result('BEGIN')
  if (t.startsWith('COMMIT')) return result('COMMIT')
  if (t.startsWith('ROLLBACK')) return result('ROLLBACK')
  if (t.includes('WAL_INSERT_LSN')) return result('SELECT', [{ lsn: '0/1' }])
  if (t.startsWith('INSERT')) return result('INSERT')
  return result('SELECT', [{ q: text }])
}

export async function leaseFuzz(seed: number, steps = 150): Promise<string[]> {
  const r = prng(seed)
  const realRandom = Math.random
  Math.random = prng(seed ^ 0x1234567)
  const violations: string[] = []
  const log: string[] = []
  const violate = (s: string) => violations.push(`seed ${seed}: ${s} [${log.slice(-10).join(' | ')}]`)
  const opts = {
    max: 1 + Math.floor(r() * 3),
    acquireTimeout: 200,
    statementTimeout: r() < 0.5 ? 0 : 300,
    closeTimeout: Math.floor(r() * 200),
    pipelineDepth: 1 + Math.floor(r() * 3),
    sessionReset: pick(r, ['always', 'rollback', 'never'] as const) ?? 'always',
  }
  const h = poolHarness(opts)
  const ctx: LeaseContext = {
    pool: h.pool,
    clock: h.clock,
    options: h.pool.options,
    Query,
    surface: { statementTimeout: h.pool.options.statementTimeout, retryAfter: 1, mapping: defaultErrorMapping },
    view: () => ({}) as PgPoolView,
    onLeak: () => {},
  }
  const leases: LeaseRec[] = []
  let nextId = 0
  let ended = false
  const owners = new Map<FakeConnection, { sent: number; seq: { id: number; pipe: boolean }[] }>()

  const run = (rec: LeaseRec, text: string) => {
    const out: LeaseRec['outcomes'][number] = { text, settled: 0 }
    rec.outcomes.push(out)
    const q = rec.lease.query([text], [], undefined)
    void q.then(
      (value: unknown) => {
        out.settled++
        out.value = value
      },
      (error: unknown) => {
        out.settled++
        out.error = error
      },
    )
  }

  /** Per connection: how many resets it had queued when a statement was last answered on it. */
  const answeredAfter = new Map<FakeConnection, number>()
  const answerOne = (conn: FakeConnection, fail: number) => {
    const query = conn.pending[0] as AdapterQuery | undefined
    if (query === undefined) return
    answeredAfter.set(conn, conn.resets.length)
    const text = queryText(query)
    const owner = (query as TrackedQuery).owner as Lease
    const rec = leases.find((x) => x.lease === owner)
    const upper = text.trim().toUpperCase()
    if (fail < 0.1) {
      log.push(`fail c${conn.id} ${text.slice(0, 20)}`)
      if (upper.startsWith('COMMIT') && rec) rec.commitFailed = true
      conn.fail(serverError(pick(r, ['40001', '23505', '57014', '25P02']) ?? '40001'), query)
    } else if (fail < 0.13) {
      log.push(`drop c${conn.id} ${text.slice(0, 20)}`)
      if (upper.startsWith('COMMIT') && rec) rec.commitFailed = true
      conn.markClosed('error')
      conn.fail(connectionError(), query)
    } else {
      log.push(`ans c${conn.id} ${text.slice(0, 20)}`)
      if (upper.startsWith('COMMIT') && rec) rec.committed = true
      conn.answer(answerFor(text), query)
    }
  }

  const checkOwners = () => {
    for (const conn of h.factory.connections) {
      const o = owners.get(conn) ?? { sent: 0, seq: [] }
      owners.set(conn, o)
      for (; o.sent < conn.sent.length; o.sent++) {
        const owner = (conn.sent[o.sent] as TrackedQuery).owner as Lease
        const rec = leases.find((x) => x.lease === owner)
        if (rec === undefined) continue
        const last = o.seq.at(-1)
        if (last?.id === rec.id) continue
        // An earlier exclusive owner coming back after another one: two holders on one session.
        const earlier = o.seq.findIndex((x) => x.id === rec.id)
        if (earlier !== -1) {
          const between = o.seq.slice(earlier + 1)
          if (!(rec.kind === 'pipe' && between.every((x) => x.pipe)))
            violate(`conn ${conn.id}: lease ${rec.id} (${rec.kind}) sent again after ${between.map((x) => x.id)}`)
        }
        o.seq.push({ id: rec.id, pipe: rec.kind === 'pipe' })
      }
    }
  }

  try {
    for (let step = 0; step < steps && violations.length === 0; step++) {
      const x = r()
      const open = leases.filter((l) => l.finish === undefined)
      if ((x < 0.15 || open.length < 2) && !ended) {
        const kind = pick(r, ['plain', 'tx', 'pipe'] as const) ?? 'plain'
        const id = ++nextId
        const lease = new Lease(ctx, {
          route: `/${kind}`,
          begin: kind === 'tx' ? 'BEGIN' : undefined,
          pipelined: kind === 'pipe',
        })
        leases.push({ lease, id, kind, n: 0, finished: false, committed: false, commitFailed: false, outcomes: [] })
        log.push(`new L${id} ${kind}`)
      } else if (x < 0.35) {
        const rec = pick(r, open)
        if (rec !== undefined) {
          const text = r() < 0.2 ? `INSERT INTO t VALUES ('L${rec.id}-${++rec.n}')` : `select 'L${rec.id}-${++rec.n}'`
          log.push(`run L${rec.id} ${text.slice(0, 30)}`)
          run(rec, text)
        }
      } else if (x < 0.6) {
        const conn = pick(
          r,
          h.factory.connections.filter((c) => c.pending.length > 0),
        )
        if (conn !== undefined) answerOne(conn, r())
      } else if (x < 0.68) {
        const conn = pick(
          r,
          // A reset fails only before anything behind it was answered (the server refuses it all).
          h.factory.connections.filter((c) => !c.closed && c.resets.length > (answeredAfter.get(c) ?? 0)),
        )
        if (conn !== undefined) {
          log.push(`resetfail c${conn.id}`)
          try {
            conn.failReset()
          } catch {}
        }
      } else if (x < 0.78) {
        const rec = pick(r, open)
        if (rec !== undefined) {
          const mode = r() < 0.7 ? 'commit' : r() < 0.5 ? 'rollback' : 'abort'
          log.push(`finish L${rec.id} ${mode}`)
          rec.finish = rec.lease.finish(mode)
          rec.finish.then(
            () => {
              rec.finished = true
            },
            () => {
              rec.finished = true
            },
          )
        }
      } else if (x < 0.86) {
        const ms = r() < 0.8 ? Math.floor(r() * 30) : (pick(r, [200, 300, 1500]) ?? 0)
        log.push(`adv ${ms}`)
        await h.clock.advanceAsync(ms)
      } else if (x < 0.875) {
        for (const c of h.factory.connections) if (c.cancelPending && r() < 0.5) c.cancelAnswered()
      } else if (x < 0.89) {
        // The server goes away under a connection: whatever runs on it fails as a lost connection.
        const conn = pick(
          r,
          h.factory.connections.filter((c) => !c.closed),
        )
        if (conn !== undefined) {
          log.push(`kill c${conn.id}`)
          for (const q of conn.pending) {
            const t = queryText(q).trim().toUpperCase()
            const rec = leases.find((l) => l.lease === (q as TrackedQuery).owner)
            if (t.startsWith('COMMIT') && rec) rec.commitFailed = true
          }
          void conn.end('error', 0)
        }
      } else if (x < 0.9 && !ended && step > steps * 0.7) {
        log.push('END')
        ended = true
        void h.pool.end()
      }
      await flush()
      checkOwners()
    }

    // Wind down: finish everything, answer everything, close, and let time pass.
    for (const rec of leases) {
      if (rec.finish === undefined) {
        rec.finish = rec.lease.finish('commit')
        rec.finish.then(
          () => {
            rec.finished = true
          },
          () => {
            rec.finished = true
          },
        )
      }
    }
    let endDone = false
    for (let i = 0; i < 200; i++) {
      await flush()
      for (const c of h.factory.connections) {
        if (c.cancelPending) c.cancelAnswered()
        while (c.pending.length > 0) answerOne(c, 1)
      }
      checkOwners()
      if (i === 20) {
        void h.pool.end().then(() => {
          endDone = true
        })
      }
      await h.clock.advanceAsync(100)
      if (endDone && leases.every((l) => l.finished)) break
    }
    await h.clock.advanceAsync(5_000)
    if (!endDone) violate('pool.end() never resolved')
    for (const rec of leases) {
      if (!rec.finished) violate(`lease ${rec.id} (${rec.kind}) never finished`)
      for (const out of rec.outcomes) {
        if (out.settled !== 1) violate(`L${rec.id} ${out.text}: settled ${out.settled} times`)
        const rows = out.value as { q?: string }[] | undefined
        if (rows !== undefined && rows[0]?.q !== undefined && rows[0].q !== out.text)
          violate(`L${rec.id} ${out.text} got the answer of ${rows[0].q}`)
        const code = (out.error as { code?: unknown } | undefined)?.code
        if (out.error !== undefined && typeof code !== 'string')
          violate(`L${rec.id} ${out.text}: uncoded error ${String(out.error)}`)
      }
      // A route transaction answered as committed must have had its COMMIT answered.
      if (rec.kind === 'tx' && rec.outcomes.some((o) => o.settled === 1 && o.error === undefined)) {
        const nc = rec.lease.notCommitted()
        if (nc === undefined && !rec.committed) violate(`L${rec.id}: notCommitted() undefined but no COMMIT succeeded`)
      }
    }
    const open = h.factory.connections.filter((c) => !c.closed)
    if (open.length > 0) violate(`connections left open: ${open.map((c) => c.id)}`)
    const s = h.pool.stats()
    if (s.open !== 0 || s.leased !== 0 || s.waiting !== 0) violate(`stats after close ${JSON.stringify(s)}`)
  } finally {
    Math.random = realRandom
  }
  return violations
}
