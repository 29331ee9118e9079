import { describe, expect, test } from 'vitest'
import { FakeClock } from '../../core/test/fake-clock.js'
import { StallClock } from '../src/stall-clock.js'

function setup() {
  const clock = new FakeClock(0)
  let busy = true
  const stalls = new StallClock(clock, () => busy)
  return {
    clock,
    stalls,
    setBusy: (value: boolean) => {
      busy = value
    },
  }
}

describe('StallClock', () => {
  test('ticks every 10 ms while the pool is busy, stops when it is not, and starts again on wake', () => {
    const { clock, stalls, setBusy } = setup()
    expect(clock.pending).toBe(0)
    stalls.wake()
    stalls.wake()
    expect(clock.dueIn()).toEqual([10])
    clock.advance(100)
    expect(clock.dueIn()).toEqual([10])
    setBusy(false)
    clock.advance(10)
    expect(clock.pending).toBe(0)
    setBusy(true)
    stalls.wake()
    expect(clock.dueIn()).toEqual([10])
    stalls.stop()
    expect(clock.pending).toBe(0)
    stalls.wake()
    expect(clock.pending).toBe(0)
  })

  test('a tick more than 5 ms late is a stall; within() counts its overlap with a hold', () => {
    const { clock, stalls } = setup()
    stalls.wake()
    clock.advance(20)
    // The loop is blocked 200 ms from t=25: the tick due at 30 runs at 225.
    clock.advance(5)
    clock.stall(200)
    clock.advance(0)
    expect(clock.now()).toBe(225)
    // The stall is [30, 225] as the timer sees it.
    expect(stalls.within(0, 225)).toBe(195)
    expect(stalls.within(100, 225)).toBe(125)
    clock.advance(75)
    expect(stalls.within(225, 300)).toBe(0)
    // A hold shorter than the stall is all stall.
    expect(stalls.within(200, 210)).toBe(10)
    expect(stalls.within(0, clock.now())).toBe(195)
  })

  test('lateness of 5 ms or less is timer jitter, not a stall', () => {
    const { clock, stalls } = setup()
    stalls.wake()
    clock.stall(15)
    clock.advance(0)
    expect(stalls.within(0, clock.now())).toBe(0)
    clock.stall(16)
    clock.advance(0)
    expect(stalls.within(0, clock.now())).toBe(6)
  })

  test('counts a stall that has just ended and whose tick has not run yet', () => {
    const { clock, stalls } = setup()
    stalls.wake()
    clock.advance(10)
    clock.stall(100)
    // A lease released right after the stall, before the timers of the next turn.
    expect(stalls.within(50, clock.now())).toBe(60)
    expect(stalls.within(0, clock.now())).toBe(100 - 10)
  })

  test('remembers the last 32 stalls', () => {
    const { clock, stalls } = setup()
    stalls.wake()
    for (let i = 0; i < 40; i++) {
      // Each tick runs 10 ms late.
      clock.stall(20)
      clock.advance(0)
    }
    expect(stalls.within(0, clock.now())).toBe(32 * 10)
    expect(stalls.within(clock.now() - 20, clock.now())).toBe(10)
  })
})
