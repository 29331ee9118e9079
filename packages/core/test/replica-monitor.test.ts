import { describe, expect, test } from 'vitest'
import type { Lsn } from '../src/lsn.js'
import { type LsnSource, ReplicaMonitor } from '../src/replica-monitor.js'
import { FakeClock } from './fake-clock.js'

// The lag monitor's state machine on a fake clock and a fake source: no server, no real time.
// Each case failed before the fix named in it (found by hostile probing against real standbys:
// test/regressions/replica-ahead-after-failover and the frozen-replica tests in test/replicas).

type ReplicaAnswer = { replay: Lsn; replayAgeSeconds: number | null; inRecovery: boolean }

/** A source whose answers the test sets; a server that is "frozen" never answers (until its timeout). */
class FakeSource implements LsnSource {
  primaryLsn: Lsn = 1000n
  primaryCalls = 0
  readonly replicas: ReplicaAnswer[]
  readonly frozen = new Set<number>()
  readonly timeouts: (number | undefined)[] = []

  constructor(
    readonly clock: FakeClock,
    count: number,
  ) {
    this.replicas = Array.from({ length: count }, () => ({ replay: 1000n, replayAgeSeconds: 0, inRecovery: true }))
  }

  async primary(): Promise<Lsn> {
    this.primaryCalls++
    return this.primaryLsn
  }

  replica(index: number, timeoutMs?: number): Promise<ReplicaAnswer> {
    this.timeouts.push(timeoutMs)
    if (!this.frozen.has(index)) return Promise.resolve({ ...(this.replicas[index] as ReplicaAnswer) })
    // A frozen server: the source gives up after its bound (2 s by default, as ServerLsnSource).
    return new Promise((_, reject) =>
      this.clock.setTimeout(
        () => reject(Object.assign(new Error('no answer'), { code: 'SAMPLE_TIMEOUT' })),
        timeoutMs ?? 2_000,
      ),
    )
  }
}

/** Lets the promise callbacks the clock's timers started run. */
const settle = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

describe('ReplicaMonitor', () => {
  test('a frozen replica holds back only its own samples: the other stays fresh and usable', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 2)
    const monitor = new ReplicaMonitor(clock, source, 2, 100)
    await monitor.start()
    expect(monitor.fresh(0) && monitor.fresh(1)).toBe(true)
    source.frozen.add(1)
    // Before the fix, one round waited for every replica: replica 0's sample went stale (older
    // than three intervals) for most of each 2 s that replica 1 took to time out.
    for (let step = 0; step < 50; step++) {
      clock.advance(100)
      await settle()
      expect(monitor.fresh(0), `replica 0 fresh at ${step * 100} ms`).toBe(true)
      expect(monitor.lag(0)?.error).toBeUndefined()
    }
    expect(monitor.lag(1)?.error).toBe('unreachable (SAMPLE_TIMEOUT)')
    monitor.stop()
  })

  test('a replica past the primary position read after its own is unusable (left on another timeline)', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 2)
    source.primaryLsn = 5000n
    ;(source.replicas[0] as ReplicaAnswer).replay = 9000n
    ;(source.replicas[1] as ReplicaAnswer).replay = 4000n
    const monitor = new ReplicaMonitor(clock, source, 2, 100)
    await monitor.start()
    // Before the fix: bytes max(0, 5000 - 9000) = 0, seconds 0, no error: "caught up".
    expect(monitor.lag(0)?.error).toBe('ahead of the primary (left on another timeline by a failover)')
    expect(monitor.lag(0)?.bytes).toBe(Number.POSITIVE_INFINITY)
    expect(monitor.lag(1)).toMatchObject({ bytes: 1000, error: undefined })
    monitor.stop()
  })

  test('a replica ahead of a primary sample taken before its own, but not of one taken after, is fine (writes in between)', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 1)
    source.primaryLsn = 5000n
    ;(source.replicas[0] as ReplicaAnswer).replay = 6000n
    // The second read of the primary (after the replica's) sees the writes made meanwhile.
    const primary = source.primary.bind(source)
    source.primary = async () => (source.primaryCalls === 0 ? primary() : (await primary()) + 2000n)
    const monitor = new ReplicaMonitor(clock, source, 1, 100)
    await monitor.start()
    expect(monitor.lag(0)).toMatchObject({ bytes: 0, seconds: 0, error: undefined })
    monitor.stop()
  })

  test("waitReplayed bounds each poll by what is left of maxWait: a frozen replica gives up at maxWait, not the source's 2 s", async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 1)
    const monitor = new ReplicaMonitor(clock, source, 1, 1_000)
    await monitor.start()
    source.frozen.add(0)
    const started = clock.now()
    let answer: boolean | undefined
    void monitor.waitReplayed(0, 2000n, 100).then((value) => {
      answer = value
    })
    for (let waited = 0; answer === undefined && waited < 3_000; waited += 10) {
      clock.advance(10)
      await settle()
    }
    expect(answer).toBe(false)
    // Before the fix the poll waited for the source's own 2 s bound.
    expect(clock.now() - started).toBeLessThanOrEqual(110)
    monitor.stop()
  })

  test('reads waiting on one replica share one poll at a time; one that stops waiting leaves it to the others', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 1)
    const monitor = new ReplicaMonitor(clock, source, 1, 60_000)
    await monitor.start()
    const before = source.timeouts.length
    // The replica answers slowly: each poll takes 50 ms.
    const replica = source.replica.bind(source)
    source.replica = (index: number) =>
      new Promise((resolve, reject) => clock.setTimeout(() => replica(index).then(resolve, reject), 50))
    const answers: boolean[] = []
    for (let i = 0; i < 1_000; i++) {
      void monitor.waitReplayed(0, 2000n, i === 0 ? 20 : 500).then((answer) => answers.push(answer))
    }
    for (let waited = 0; waited < 40; waited += 10) {
      clock.advance(10)
      await settle()
    }
    // The first gave up at its 20 ms; the poll it started went on for the 999 others.
    expect(answers).toEqual([false])
    ;(source.replicas[0] as ReplicaAnswer).replay = 2000n
    for (let waited = 0; waited < 300 && answers.length < 1_000; waited += 10) {
      clock.advance(10)
      await settle()
    }
    expect(answers.filter((answer) => answer)).toHaveLength(999)
    // A few polls in all, not one per read every 10 ms (before: about 10 000 here).
    expect(source.timeouts.length - before).toBeLessThanOrEqual(5)
    monitor.stop()
  })

  test('stop(): no sample starts afterwards, and a round in flight schedules none', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock, 1)
    const monitor = new ReplicaMonitor(clock, source, 1, 100)
    await monitor.start()
    monitor.stop()
    const calls = source.primaryCalls
    clock.advance(1_000)
    await settle()
    expect(source.primaryCalls).toBe(calls)
    expect(clock.pending).toBe(0)
  })
})
