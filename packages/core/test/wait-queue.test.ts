import { describe, expect, test } from 'vitest'
import { WaitQueue } from '../src/wait-queue.js'

describe('WaitQueue', () => {
  test('first in, first out; remove takes an entry from anywhere; drain empties it in order', () => {
    const queue = new WaitQueue<number>()
    expect([queue.length, queue.peek(), queue.shift()]).toEqual([0, undefined, undefined])
    for (let i = 1; i <= 5; i++) queue.push(i)
    expect(queue.shift()).toBe(1)
    expect(queue.remove(3)).toBe(true)
    expect(queue.remove(3)).toBe(false)
    // Already shifted: not in the queue any more.
    expect(queue.remove(1)).toBe(false)
    expect([queue.length, queue.peek()]).toEqual([3, 2])
    expect(queue.drain()).toEqual([2, 4, 5])
    expect(queue.length).toBe(0)
    queue.push(6)
    expect(queue.shift()).toBe(6)
  })

  test('keeps its order across compaction (past 1024 entries shifted)', () => {
    const queue = new WaitQueue<number>()
    let next = 0
    let expected = 0
    const shifted: (number | undefined)[] = []
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 1_500; i++) queue.push(next++)
      for (let i = 0; i < 1_200; i++) shifted.push(queue.shift())
    }
    expect(shifted).toEqual(Array.from({ length: 6_000 }, (_, i) => i))
    expected = 6_000
    expect(queue.length).toBe(next - expected)
    expect(queue.peek()).toBe(expected)
    expect(queue.remove(expected + 1)).toBe(true)
    expect(queue.drain()).toEqual(
      Array.from({ length: next - expected }, (_, i) => expected + i).filter((x) => x !== expected + 1),
    )
  })
})
