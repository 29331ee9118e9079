// HELD (probe-machines): the StallClock against the stalls the test made, seeded: random
// advances, process stalls (clock.stall) of every size (below and above the 5 ms threshold, one
// after another with no tick between, past the 32-stall ring), busy turning off and on (wake),
// and within(since, now) asked for random windows, including ones starting before the first tick
// and in the middle of a stall not yet seen by a tick. It never reports more stalled time than the
// process really stalled in the window (admission would take it off hold times and admit more),
// never a negative amount, and never more than the window.
import { expect, test } from 'vitest'
import { FakeClock } from '../../../core/test/fake-clock.js'
import { prng } from '../../../core/test/round-thirteen/model.js'
import { StallClock } from '../../src/stall-clock.js'

test('StallClock.within never exceeds the real stalls in the window (300 seeds x 300 steps)', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const r = prng(seed)
    const clock = new FakeClock(0)
    let busy = true
    const stalls = new StallClock(clock, () => busy)
    const real: [number, number][] = []
    stalls.wake()
    const realWithin = (since: number, now: number) =>
      real.reduce((sum, [a, b]) => sum + Math.max(0, Math.min(b, now) - Math.max(a, since)), 0)
    for (let step = 0; step < 300; step++) {
      const x = r()
      if (x < 0.4) clock.advance(Math.floor(r() * 30))
      else if (x < 0.6) {
        const ms = r() < 0.5 ? Math.floor(r() * 8) : Math.floor(r() * 300)
        real.push([clock.now(), clock.now() + ms])
        clock.stall(ms)
      } else if (x < 0.65) busy = !busy
      else if (x < 0.7) stalls.wake()
      const now = clock.now()
      for (let i = 0; i < 3; i++) {
        const since = now - Math.floor(r() * 600)
        const got = stalls.within(since, now)
        const truth = realWithin(since, now)
        if (!(got >= 0 && got <= now - since + 1e-9 && got <= truth + 1e-9)) {
          throw new Error(`seed ${seed} step ${step}: within(${since}, ${now}) = ${got}, real stalls ${truth}`)
        }
      }
    }
    stalls.stop()
    expect(clock.pending).toBe(0)
  }
})
