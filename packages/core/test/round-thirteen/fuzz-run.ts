import { flush } from '../fake-clock.js'
import { connectionError, refused, serverError } from '../fake-connection.js'
import { poolHarness } from '../fake-holder.js'
import { Model, ModelHolder, prng } from './model.js'

export interface RunResult {
  seed: number
  violations: string[]
  log: string[]
}

const pick = <T>(r: () => number, xs: readonly T[]): T | undefined =>
  xs.length === 0 ? undefined : xs[Math.floor(r() * xs.length)]

/** One seeded run: random steps against a pool on fake connections, invariants after each. */
export async function fuzzRun(seed: number, steps = 200, checkPipelinedHead = true): Promise<RunResult> {
  const r = prng(seed)
  const max = 1 + Math.floor(r() * 4)
  const opts = {
    max,
    maxWaiting: Math.floor(r() * 5),
    acquireTimeout: 100,
    idleTimeout: r() < 0.5 ? 0 : 400,
    leakDetectionThreshold: 300,
    statementTimeout: r() < 0.5 ? 0 : 200,
    connectTimeout: 150,
    closeTimeout: Math.floor(r() * 300),
    pipelineDepth: 1 + Math.floor(r() * 3),
    maxPreparedStatements: r() < 0.3 ? 2 : 0,
  }
  // The connector jitters its retry wait with Math.random (read when the pool is made): seeded
  // too, so a seed replays exactly.
  const realRandom = Math.random
  Math.random = prng(seed ^ 0x5bd1e995)
  const h = poolHarness(opts, (f) => {
    f.lifetimeMs = r() < 0.5 ? Number.POSITIVE_INFINITY : 700
  })
  const m = new Model(h)
  m.checkPipelinedHead = checkPipelinedHead
  m.note(`opts ${JSON.stringify(opts)}`)
  // A timer that re-arms itself forever (a busy loop on the clock) is a hang: stop it loudly.
  const setTimer = h.clock.setTimeout.bind(h.clock)
  h.clock.setTimeout = (fn, ms) => {
    if (h.clock.created > 50_000) {
      h.clock.setTimeout = setTimer
      throw new Error(
        `seed ${seed}: over 50000 timers set: a timer loop; due ${h.clock.dueIn().slice(0, 5)} stats ${JSON.stringify(h.pool.stats())}\n${m.log.slice(-40).join('\n')}`,
      )
    }
    return setTimer(fn, ms)
  }
  try {
    return await run(seed, steps, r, h, m, max)
  } finally {
    Math.random = realRandom
  }
}

async function run(
  seed: number,
  steps: number,
  r: () => number,
  h: ReturnType<typeof poolHarness>,
  m: Model,
  max: number,
): Promise<RunResult> {
  const resetAnswered = new Map<number, number>()
  let ended: Promise<void> | undefined
  let endDone = false

  for (let step = 0; step < steps; step++) {
    const x = r()
    const holding = m.holders.filter((y) => y.state === 'holding')
    const waiting = m.holders.filter((y) => y.state === 'waiting')
    if (x < 0.25) {
      const holder = new ModelHolder(m, r() < 0.35)
      holder.releaseOnAbort = r() < 0.8
      holder.releaseInAcquired = r() < 0.1
      holder.fallback = r() < 0.2
      m.holders.push(holder)
      m.note(`acq ${holder.id}${holder.pipelined ? 'p' : 'x'}`)
      m.acquire(holder)
    } else if (x < 0.45) {
      const holder = pick(r, holding)
      if (holder?.conn !== undefined) {
        const conn = holder.conn
        const y = r()
        if (y < 0.1) {
          m.note(`connfail ${conn.id}`)
          conn.markClosed('error')
        } else if (y < 0.2 && !holder.pipelined) {
          m.note(`cancel ${conn.id}`)
          conn.cancel()
        } else if (y < 0.25) {
          conn.noteEnded(true)
        }
        const reset = r() < 0.5 ? 'DISCARD ALL' : r() < 0.5 ? 'ROLLBACK' : undefined
        m.note(`rel ${holder.id} c${conn.id} ${reset ?? '-'}`)
        m.release(holder, reset)
      }
    } else if (x < 0.52) {
      const holder = pick(r, waiting)
      if (holder !== undefined) {
        m.note(`cancelWait ${holder.id}`)
        if (h.pool.cancelWait(holder)) {
          if (holder.state !== 'failed') m.violate(`cancelWait true but holder ${holder.id} not failed`)
        } else m.violate(`cancelWait false for waiting ${holder.id}`)
      }
    } else if (x < 0.67) {
      const ms = r() < 0.7 ? Math.floor(r() * 40) : (pick(r, [100, 150, 200, 300, 400, 700, 1200]) ?? 0)
      m.note(`adv ${ms}`)
      await h.clock.advanceAsync(ms)
    } else if (x < 0.74) {
      // A reset not answered yet fails (the server refused it).
      const conns = h.factory.connections.filter((c) => c.resets.length > (resetAnswered.get(c.id) ?? 0) && !c.closed)
      const conn = pick(r, conns)
      if (conn !== undefined) {
        resetAnswered.set(conn.id, conn.resets.length)
        if (r() < 0.7) {
          m.note(`resetfail ${conn.id}`)
          try {
            conn.failReset(r() < 0.8 ? serverError('25P02') : connectionError())
          } catch {}
        } else m.note(`resetok ${conn.id}`)
      }
    } else if (x < 0.78) {
      const conn = pick(
        r,
        h.factory.connections.filter((c) => c.cancelPending),
      )
      if (conn !== undefined) {
        m.note(`cancelDone ${conn.id}`)
        conn.cancelAnswered()
      }
    } else if (x < 0.82) {
      // A connection dies under whoever has it (or idle).
      const conn = pick(
        r,
        h.factory.connections.filter((c) => !c.closed),
      )
      if (conn !== undefined) {
        m.note(`die ${conn.id}`)
        conn.markClosed('error')
      }
    } else if (x < 0.85) {
      const y = r()
      if (y < 0.5) {
        m.note('openfail next')
        h.factory.failNext(1, refused())
      } else if (y < 0.75) {
        m.note('open slow')
        h.factory.script.push({ delayMs: 1 + Math.floor(r() * 200) })
      } else {
        m.note('open fail slow')
        h.factory.script.push({ delayMs: 1 + Math.floor(r() * 200), error: refused() })
      }
    } else if (x < 0.88) {
      // A statement starts (deadline).
      const holder = pick(r, holding)
      if (holder !== undefined && holder.queryStart === 0) {
        m.note(`query ${holder.id}`)
        holder.queryStart = h.clock.now()
      }
    } else if (x < 0.9) {
      // A holder asks whether its shared session is in a block: sharing pauses, then resumes.
      const holder = pick(
        r,
        holding.filter((y) => y.pipelined),
      )
      const conn = holder?.conn
      if (conn !== undefined) {
        if (conn.sharingPaused > 0 && r() < 0.7) {
          m.note(`resume c${conn.id}`)
          conn.sharingPaused--
          if (conn.sharingPaused === 0) h.pool.sharingResumed(conn)
        } else {
          m.note(`pause c${conn.id}`)
          conn.sharingPaused++
        }
      }
    } else if (x < 0.905 && ended === undefined) {
      m.note('END')
      ended = h.pool.end()
      void ended.then(() => {
        endDone = true
      })
    } else {
      await flush()
    }
    await flush()
    m.checkStats(max)
    if (m.violations.length > 0) break
  }

  // Wind down: release everyone, close, let time pass.
  if (m.violations.length === 0) {
    for (const holder of m.holders) if (holder.state === 'holding') m.release(holder, undefined)
    await flush()
    for (const c of h.factory.connections) if (c.cancelPending) c.cancelAnswered()
    ended ??= h.pool.end()
    void ended.then(() => {
      endDone = true
    })
    for (let i = 0; i < 20 && !endDone; i++) await h.clock.advanceAsync(1_000)
    for (const holder of m.holders) if (holder.state === 'holding') m.release(holder, undefined)
    for (let i = 0; i < 10 && !endDone; i++) await h.clock.advanceAsync(1_000)
    if (!endDone) m.violate('pool.end() never resolved')
    // Nothing of the pool is left scheduled once end() resolved (cancel-timer-after-close.test.ts).
    else if (h.clock.pending > 0) m.violate(`timers armed when end() resolved: due in ${h.clock.dueIn()}`)
    await h.clock.advanceAsync(10_000)
    const stuck = m.holders.filter((y) => y.state === 'waiting' || y.state === 'new')
    if (stuck.length > 0) m.violate(`holders never settled: ${stuck.map((y) => y.id).join(',')}`)
    for (const y of m.holders) if (y.settles > 1) m.violate(`holder ${y.id} settled ${y.settles} times`)
    const open = h.factory.connections.filter((c) => !c.closed)
    if (open.length > 0) m.violate(`connections left open after close: ${open.map((c) => c.id).join(',')}`)
    if (h.clock.pending > 0) m.violate(`timers left armed after close: ${h.clock.pending} due in ${h.clock.dueIn()}`)
    const s = h.pool.stats()
    if (s.open !== 0 || s.idle !== 0 || s.leased !== 0 || s.waiting !== 0)
      m.violate(`stats after close: ${JSON.stringify(s)}`)
  }
  return { seed, violations: m.violations, log: m.log }
}
