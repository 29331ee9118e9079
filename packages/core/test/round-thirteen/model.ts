import type { Holder } from '../../src/pool.js'
import type { PoolConnection } from '../../src/server-connection.js'
import type { FakeConnection } from '../fake-connection.js'
import type { PoolHarness } from '../fake-holder.js'

/** mulberry32: a small deterministic PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export type HolderState = 'new' | 'waiting' | 'holding' | 'failed' | 'released'

let seq = 0

/**
 * A holder that behaves like a lease as the pool sees it (it re-acquires when rerouted, it comes
 * back when aborted) and records every rule the pool breaks towards it.
 */
export class ModelHolder implements Holder {
  readonly id = ++seq
  readonly route: string
  readonly pipelined: boolean
  waitSince = 0
  waitMessage: Holder['waitMessage'] = undefined
  resume: Holder['resume'] = undefined
  state: HolderState = 'new'
  conn: PoolConnection | undefined
  error: (Error & { code?: string }) | undefined
  queryStart = 0
  /** Order in which it joined the queue (for FIFO checks). */
  queuedAt = -1
  settles = 0
  aborts = 0
  /** Comes back when aborted (a lease whose statements end). */
  releaseOnAbort = true
  releaseInAcquired = false
  fallback = false
  readonly m: Model

  constructor(m: Model, pipelined: boolean) {
    this.m = m
    this.pipelined = pipelined
    this.route = pipelined ? '/p' : '/x'
  }

  oldestQueryStart(): number {
    return this.queryStart
  }

  acquired(conn: PoolConnection): void {
    if (this.state !== 'waiting') this.m.violate(`holder ${this.id} acquired() in state ${this.state}`)
    this.m.checkHandout(this, conn)
    this.m.checkFifo(this)
    this.state = 'holding'
    this.conn = conn
    // A lease whose request ended while it was being handed the connection gives it back at once.
    if (this.releaseInAcquired) {
      this.releaseInAcquired = false
      this.m.release(this, 'DISCARD ALL')
    }
  }

  acquireFailed(error: Error): void {
    if (this.state !== 'waiting') this.m.violate(`holder ${this.id} acquireFailed() in state ${this.state}`)
    const code = (error as { code?: string }).code
    if (typeof code !== 'string' || !code.startsWith('FST_PG_POOL_'))
      this.m.violate(`holder ${this.id} failed with uncoded ${String(code)}`)
    this.settles++
    this.state = 'failed'
    this.error = error
    // A replica lease falls back (here: the same pool) when its wait timed out or opening failed.
    if (this.fallback && (code === 'FST_PG_POOL_ACQUIRE_TIMEOUT' || code === 'FST_PG_POOL_CONNECT_FAILED')) {
      this.fallback = false
      this.settles = 0
      this.m.acquire(this)
    }
  }

  reroute(conn: PoolConnection): void {
    if (this.state !== 'holding' || this.conn !== conn)
      this.m.violate(`holder ${this.id} rerouted off conn it does not hold (state ${this.state})`)
    this.conn = undefined
    this.state = 'new'
    this.queryStart = 0
    this.m.acquire(this)
  }

  leaked(): void {}

  abort(): void {
    this.aborts++
    if (this.releaseOnAbort && this.state === 'holding') {
      queueMicrotask(() => {
        if (this.state === 'holding') this.m.release(this, 'ROLLBACK')
      })
    }
  }

  sharedSessionBroken(): void {}
}

export class Model {
  readonly h: PoolHarness
  readonly holders: ModelHolder[] = []
  readonly violations: string[] = []
  readonly log: string[] = []
  #queueSeq = 0
  lastConnectErrorAt = Number.NEGATIVE_INFINITY
  /** Off to look past the defect of pipelined-head-after-exclusive-served.test.ts. */
  checkPipelinedHead = true
  constructor(h: PoolHarness) {
    this.h = h
    h.pool.on('connectError', () => {
      this.lastConnectErrorAt = h.clock.now()
    })
  }

  violate(msg: string): void {
    this.violations.push(`${msg}  [after: ${this.log.slice(-8).join(' | ')}]`)
  }

  note(s: string): void {
    this.log.push(s)
  }

  acquire(holder: ModelHolder): void {
    const refuse = this.h.pool.wouldRefuse(holder.pipelined)
    const refuseAny = this.h.pool.wouldRefuse(true)
    const conn = this.h.pool.tryAcquire(holder)
    if (conn !== undefined) {
      // Admission reads wouldRefuse(true) for every request: it would have shed one served at once.
      if (refuseAny && this.h.pool.stats().accepting)
        this.violate(`wouldRefuse(true) said refuse but ${holder.id} got conn ${conn.id} at once`)
      this.checkHandout(holder, conn)
      holder.state = 'holding'
      holder.conn = conn
      return
    }
    let threw: string | undefined
    try {
      holder.state = 'waiting'
      holder.queuedAt = this.#queueSeq++
      this.h.pool.wait(holder)
    } catch (error) {
      holder.state = 'failed'
      holder.settles++
      threw = (error as { code?: string }).code
      if (threw !== 'FST_PG_POOL_QUEUE_FULL' && threw !== 'FST_PG_POOL_CLOSED')
        this.violate(`wait threw ${String(threw)}`)
      holder.error = error as Error
    }
    if (refuse !== (threw !== undefined))
      this.violate(`wouldRefuse(${holder.pipelined}) said ${refuse} but wait ${threw ?? 'queued'}`)
  }

  release(holder: ModelHolder, reset: string | undefined): void {
    const conn = holder.conn
    if (conn === undefined || holder.state !== 'holding') return
    holder.state = 'released'
    holder.conn = undefined
    holder.queryStart = 0
    this.h.pool.release(conn, holder, reset)
  }

  checkHandout(holder: ModelHolder, conn: PoolConnection): void {
    const fake = conn as FakeConnection
    if (!conn.usable) this.violate(`holder ${holder.id} got unusable conn ${conn.id} (${conn.closeReason})`)
    if (fake.ends.length > 0 || fake.closed) this.violate(`holder ${holder.id} got ended conn ${conn.id}`)
    if (conn.cancelPending) this.violate(`holder ${holder.id} got conn ${conn.id} with a cancel on its way`)
    for (const other of this.holders) {
      if (other === holder || other.state !== 'holding' || other.conn !== conn) continue
      if (!holder.pipelined || !other.pipelined)
        this.violate(
          `conn ${conn.id} held by ${other.id}(${other.pipelined ? 'p' : 'x'}) and given to ${holder.id}(${holder.pipelined ? 'p' : 'x'})`,
        )
    }
  }

  checkFifo(holder: ModelHolder): void {
    for (const other of this.holders) {
      if (other === holder || other.state !== 'waiting') continue
      if (other.queuedAt < holder.queuedAt)
        this.violate(`holder ${holder.id} served before ${other.pipelined ? 'p' : 'x'} ${other.id} that queued earlier`)
    }
  }

  /** Invariants on the published counts. */
  checkStats(max: number): void {
    const s = this.h.pool.stats()
    for (const [k, v] of Object.entries(s)) {
      if (typeof v === 'number' && v < 0) this.violate(`stats.${k} negative: ${v}`)
    }
    if (s.open > max) this.violate(`open ${s.open} > max ${max}`)
    if (s.idle + s.leased > s.open - s.connecting)
      this.violate(`idle ${s.idle} + leased ${s.leased} > open ${s.open - s.connecting}`)
    const waiting = this.holders.filter((x) => x.state === 'waiting').length
    if (s.waiting !== waiting) this.violate(`stats.waiting ${s.waiting} != model ${waiting}`)
    // Past closeTimeout the pool cuts what holders did not bring back: no longer theirs.
    const live = this.holders.filter((x) => x.state === 'holding')
    const heldConns = new Set(live.map((x) => x.conn))
    const awaitingCancel = this.h.factory.connections.filter(
      (c) => c.cancelPending && !c.closed && ![...heldConns].includes(c),
    ).length
    // Past closeTimeout the pool cuts what holders did not bring back: then only an upper bound.
    if ((s.accepting && s.leased < heldConns.size) || s.leased > heldConns.size + awaitingCancel)
      this.violate(`stats.leased ${s.leased} vs held ${heldConns.size} (+${awaitingCancel} cancel pending)`)
    const pip = live.filter((x) => x.pipelined).length
    if (s.accepting && s.idle > 0 && s.waiting > 0) this.violate(`idle ${s.idle} while ${s.waiting} wait`)
    const head = this.holders.filter((x) => x.state === 'waiting').sort((a, b) => a.queuedAt - b.queuedAt)[0]
    if (this.checkPipelinedHead && s.accepting && head?.pipelined) {
      const by = new Map<PoolConnection, number>()
      for (const x of live) if (x.pipelined && x.conn) by.set(x.conn, (by.get(x.conn) ?? 0) + 1)
      for (const [conn, n] of by) {
        const o = this.h.pool.options
        const retiring =
          this.h.clock.now() >= conn.expiresAt ||
          (o.maxPreparedStatements > 0 && conn.prepared >= o.maxPreparedStatements)
        if (n < o.pipelineDepth && conn.usable && conn.sharingPaused === 0 && !retiring)
          this.violate(
            `pipelined ${head.id} waits at the head while shared conn ${conn.id} has ${n}/${o.pipelineDepth}`,
          )
      }
    }
    if (s.accepting && s.waiting > 0 && s.open < max && s.connecting === 0) {
      // A failed opening leaves a retry wait (up to 1 s) during which nothing opens.
      if (this.h.clock.now() - this.lastConnectErrorAt > 1_000)
        this.violate(`${s.waiting} wait, ${s.open}/${max} open, nothing opening`)
    }

    if (s.accepting ? s.pipelined !== pip : s.pipelined > pip)
      this.violate(`stats.pipelined ${s.pipelined} != model ${pip}`)
  }
}
