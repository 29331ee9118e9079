// The lag monitor's seconds of lag on a fake clock and a fake source (no server, no real time):
// the unit side of lag-counts-idle-time.test.ts. A replica a few bytes behind a primary that
// writes WAL without committing is judged by the time since it was last seen to have everything
// the primary had, not by the age of its last replayed commit (the first two cases failed before
// the fix: 600.1 s). Held: a standby left on the old timeline by a failover, never moving again, is still
// judged by its last commit's age once the new primary passes its position (it has none of the new
// primary's commits, and must not look current).

import { describe, expect, test } from 'vitest'
import type { Lsn } from '../../../../packages/core/src/lsn.js'
import { type LsnSource, ReplicaMonitor, type ReplicaSample } from '../../../../packages/core/src/replica-monitor.js'
import { FakeClock } from '../../../../packages/core/test/fake-clock.js'

class FakeSource implements LsnSource {
  primaryLsn: Lsn = 1000n
  replay: Lsn = 1000n
  /** Seconds since the last commit it replayed was made, at the clock's start. */
  lastCommitAge = 600

  constructor(readonly clock: FakeClock) {}

  async primary(): Promise<Lsn> {
    return this.primaryLsn
  }

  async replica(): Promise<ReplicaSample> {
    return {
      replay: this.replay,
      replayAgeSeconds: this.lastCommitAge + (this.clock.now() - 1_000) / 1000,
      inRecovery: true,
    }
  }
}

const settle = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}
const INTERVAL = 100

async function monitorOn(source: FakeSource, clock: FakeClock): Promise<ReplicaMonitor> {
  const monitor = new ReplicaMonitor(clock, source, 1, INTERVAL)
  await monitor.start()
  return monitor
}

describe('seconds of lag', () => {
  test('WAL without a commit after a quiet spell: about one interval, not the spell', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock)
    const monitor = await monitorOn(source, clock)
    expect(monitor.lag(0)).toMatchObject({ bytes: 0, seconds: 0 })
    // An open transaction writes; replay holds a few bytes back.
    source.primaryLsn = 1100n
    clock.advance(INTERVAL)
    await settle()
    // Before the fix: 600.1 (the last replayed commit's age).
    expect(monitor.lag(0)?.bytes).toBe(100)
    expect(monitor.lag(0)?.seconds).toBeLessThanOrEqual((2 * INTERVAL) / 1000)
    monitor.stop()
  })

  test('a replica one round behind a primary writing without a commit for good (a bulk load) stays within two intervals', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock)
    const monitor = await monitorOn(source, clock)
    for (let round = 0; round < 100; round++) {
      source.replay = source.primaryLsn
      source.primaryLsn += 500n
      clock.advance(INTERVAL)
      await settle()
      expect(monitor.lag(0)?.seconds, `round ${round}`).toBeLessThanOrEqual((2 * INTERVAL) / 1000)
    }
    monitor.stop()
  })

  test('held: a replica whose replay stopped shows lag growing from the moment the primary moved on', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock)
    const monitor = await monitorOn(source, clock)
    source.primaryLsn = 1100n
    clock.advance(10 * INTERVAL)
    await settle()
    expect(monitor.lag(0)?.seconds).toBeGreaterThanOrEqual((9 * INTERVAL) / 1000)
    monitor.stop()
  })

  test('held: a standby left on the old timeline is judged by its last commit once the new primary passes it', async () => {
    const clock = new FakeClock()
    const source = new FakeSource(clock)
    // Before the failover it was behind the old primary; the new primary forked at 900.
    source.primaryLsn = 1000n
    source.replay = 920n
    source.lastCommitAge = 1
    const monitor = await monitorOn(source, clock)
    source.primaryLsn = 900n
    for (let lsn = 900n; lsn <= 960n; lsn += 5n) {
      source.primaryLsn = lsn
      clock.advance(INTERVAL)
      await settle()
    }
    // Past it now: 40 bytes behind, none of the new primary's commits, its own last commit ~2.3 s old.
    const lag = monitor.lag(0)
    expect(lag?.error).toBeUndefined()
    expect(lag?.seconds).toBeGreaterThan(2)
    monitor.stop()
  })
})
