import { describe, expect, test } from 'vitest'
import { SharedConnections } from '../src/shared-connections.js'
import { FakeClock } from './fake-clock.js'
import { FakeConnection } from './fake-connection.js'

function setup(depth: number) {
  const clock = new FakeClock()
  const shared = new SharedConnections<string>(depth)
  const [a, b] = [new FakeConnection(clock, 1), new FakeConnection(clock, 2)]
  return { shared, a, b }
}

describe('SharedConnections', () => {
  test('counts connections and holders; leastBusy picks the usable connection with the fewest holders below the depth', () => {
    const { shared, a, b } = setup(3)
    expect(shared.leastBusy()).toBeUndefined()
    shared.join(a, 'h1', 10)
    shared.join(a, 'h2', 11)
    shared.join(b, 'h3', 12)
    expect([shared.size, shared.holders, shared.sharersOf(a), shared.sharersOf(b)]).toEqual([2, 3, 2, 1])
    expect(shared.leastBusy()).toBe(b)
    b.markClosed('error')
    expect(shared.leastBusy()).toBe(a)
    expect(shared.hasRoom(b)).toBe(false)
    shared.join(a, 'h4', 13)
    expect(shared.hasRoom(a)).toBe(false)
    expect(shared.leastBusy()).toBeUndefined()
  })

  test('leave returns when the holder joined, only for a holder of that connection; the first reset asked for is owed', () => {
    const { shared, a, b } = setup(4)
    shared.join(a, 'h1', 10)
    shared.join(a, 'h2', 20)
    expect(shared.leave(b, 'h1', 'X')).toBeUndefined()
    expect(shared.leave(a, 'h1', 'RESET 1')).toBe(10)
    expect(shared.leave(a, 'h1', 'RESET 1')).toBeUndefined()
    expect(shared.leave(a, 'h2', 'RESET 2')).toBe(20)
    expect([shared.size, shared.holders, shared.has(a)]).toEqual([0, 0, false])
    expect(shared.takeReset(a)).toBe('RESET 1')
    expect(shared.takeReset(a)).toBeUndefined()
  })

  test('drop forgets a connection and returns its holders', () => {
    const { shared, a } = setup(4)
    shared.join(a, 'h1', 10)
    shared.join(a, 'h2', 20)
    shared.leave(a, 'h1', 'RESET')
    expect(shared.drop(a)).toEqual(['h2'])
    expect([shared.size, shared.holders, shared.takeReset(a)]).toEqual([0, 0, undefined])
    expect(shared.drop(a)).toEqual([])
    expect([...shared.entries()]).toEqual([])
  })

  test('a connection shared again after its holders left starts with no holder', () => {
    const { shared, a, b } = setup(4)
    shared.join(a, 'h1', 10)
    shared.leave(a, 'h1', undefined)
    shared.join(b, 'h2', 20)
    expect([...shared.entries()].map(([conn, holders]) => [conn.id, [...holders]])).toEqual([[2, [['h2', 20]]]])
  })
})
