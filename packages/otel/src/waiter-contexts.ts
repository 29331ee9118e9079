import type { AcquireMessage, PgPoolView } from '@fastify-pg-pool/core'
import { type Context, context } from '@opentelemetry/api'

interface HandOff {
  readonly pool: PgPoolView
  readonly context: Context
}

/**
 * The context a statement's span starts in. Usually the active one: the core publishes a start
 * message in the caller's async context. One case needs help: a lease that waited gets its
 * connection when another lease releases it, so the waiter's route BEGIN and its queued
 * statements are sent (and published) while the releasing request's context is active. The
 * core publishes the waiter's acquire end right before that hand-off, in the same synchronous
 * run: from then until the run ends (the next microtask), statements of that pool start in the
 * waiter's own context, captured when it began to wait.
 */
export class WaiterContexts {
  readonly #waiting = new WeakMap<AcquireMessage, Context>()
  #handOff: HandOff | undefined
  readonly #clear = () => {
    this.#handOff = undefined
  }

  started(message: AcquireMessage): void {
    this.#waiting.set(message, context.active())
  }

  ended(message: AcquireMessage): void {
    const waiter = this.#waiting.get(message)
    this.#waiting.delete(message)
    if (waiter === undefined || message.error !== undefined) return
    if (this.#handOff === undefined) queueMicrotask(this.#clear)
    this.#handOff = { pool: message.pool, context: waiter }
  }

  /** The context a message of `pool` published now belongs to. */
  active(pool: PgPoolView): Context {
    const handOff = this.#handOff
    return handOff !== undefined && handOff.pool === pool ? handOff.context : context.active()
  }
}
