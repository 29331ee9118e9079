// HELD (probe-machines): the WaitQueue against an array model, seeded: push, shift, remove of
// any entry (head, middle, tail, absent, already shifted), drain, and removal of entries while
// the caller walks what drain() returned, across the compaction past 1024 shifted entries.
// length/peek/order always match the model; nothing shifted or drained comes back.
import { expect, test } from 'vitest'
import { WaitQueue } from '../../src/wait-queue.js'
import { prng } from './model.js'

test('WaitQueue matches a FIFO model under random push/shift/remove/drain (100 seeds)', () => {
  for (let seed = 1; seed <= 100; seed++) {
    const r = prng(seed)
    const q = new WaitQueue<{ id: number }>()
    let model: { id: number }[] = []
    const gone: { id: number }[] = []
    let next = 0
    // Long runs of push/shift first (to pass the compaction threshold), then mixed.
    const steps = 8_000
    for (let step = 0; step < steps; step++) {
      const x = r()
      if (x < 0.45) {
        const item = { id: next++ }
        q.push(item)
        model.push(item)
      } else if (x < 0.75) {
        const got = q.shift()
        const want = model.shift()
        if (got !== want) throw new Error(`seed ${seed} step ${step}: shift ${got?.id} != ${want?.id}`)
        if (got !== undefined) gone.push(got)
      } else if (x < 0.95) {
        const pool = r() < 0.8 ? model : gone
        const item = pool[Math.floor(r() * pool.length)]
        if (item === undefined) continue
        const removed = q.remove(item)
        const i = model.indexOf(item)
        if (removed !== (i !== -1)) throw new Error(`seed ${seed} step ${step}: remove ${removed}`)
        if (i !== -1) {
          model.splice(i, 1)
          gone.push(item)
        }
      } else if (x < 0.9503) {
        const drained = q.drain()
        expect(drained).toEqual(model)
        // Removing what was drained (a holder that hangs up while its CLOSED is delivered) finds nothing.
        for (const item of drained) if (r() < 0.3) expect(q.remove(item)).toBe(false)
        gone.push(...drained)
        model = []
      }
      if (q.length !== model.length) throw new Error(`seed ${seed} step ${step}: length ${q.length} != ${model.length}`)
      if (q.peek() !== model[0]) throw new Error(`seed ${seed} step ${step}: peek differs`)
    }
    expect(q.drain()).toEqual(model)
  }
})
