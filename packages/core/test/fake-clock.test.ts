import { describe, expect, test } from 'vitest'
import { FakeClock } from './fake-clock.js'

describe('FakeClock', () => {
  test('runs due timers in order of due time, then of creation, each at its due time', () => {
    const clock = new FakeClock(0)
    const ran: [string, number][] = []
    clock.setTimeout(() => ran.push(['b', clock.now()]), 20)
    clock.setTimeout(() => ran.push(['a', clock.now()]), 10)
    clock.setTimeout(() => ran.push(['c', clock.now()]), 20)
    const cleared = clock.setTimeout(() => ran.push(['x', clock.now()]), 5)
    clock.clearTimeout(cleared)
    clock.advance(19)
    expect(ran).toEqual([['a', 10]])
    expect(clock.now()).toBe(19)
    clock.advance(100)
    expect(ran).toEqual([
      ['a', 10],
      ['b', 20],
      ['c', 20],
    ])
    expect([clock.now(), clock.pending]).toEqual([119, 0])
  })

  test('runs timers set by timers when they fall due within the same step', () => {
    const clock = new FakeClock(0)
    const ran: number[] = []
    const tick = () => {
      ran.push(clock.now())
      if (ran.length < 5) clock.setTimeout(tick, 10)
    }
    clock.setTimeout(tick, 10)
    clock.advance(35)
    expect(ran).toEqual([10, 20, 30])
    clock.advance(100)
    expect(ran).toEqual([10, 20, 30, 40, 50])
    // A zero delay runs in the same step, after the timer that set it.
    clock.setTimeout(() => clock.setTimeout(() => ran.push(-clock.now()), 0), 0)
    clock.advance(0)
    expect(ran.at(-1)).toBe(-135)
  })

  test('stall moves time without running timers: the ones due run late, at the next advance', () => {
    const clock = new FakeClock(0)
    const ran: number[] = []
    clock.setTimeout(() => ran.push(clock.now()), 10)
    clock.stall(200)
    expect(ran).toEqual([])
    clock.advance(0)
    expect(ran).toEqual([200])
    // A timer that stalls: the timers due meanwhile run right after it, late; time never goes back.
    clock.setTimeout(() => clock.stall(100), 10)
    clock.setTimeout(() => ran.push(clock.now()), 20)
    clock.advance(50)
    expect(ran).toEqual([200, 310])
    expect(clock.now()).toBe(310)
  })

  test('advanceAsync lets promise callbacks run between timers', async () => {
    const clock = new FakeClock(0)
    const ran: string[] = []
    clock.setTimeout(() => {
      ran.push('first')
      void Promise.resolve().then(() => ran.push('its promise'))
    }, 10)
    clock.setTimeout(() => ran.push('second'), 10)
    await clock.advanceAsync(10)
    expect(ran).toEqual(['first', 'its promise', 'second'])
  })
})
