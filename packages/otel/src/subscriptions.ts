import type { Channel } from 'node:diagnostics_channel'
import { diag } from '@opentelemetry/api'

/**
 * Channel subscriptions that can all be undone at once. A subscriber that throws would crash
 * the process (Node rethrows it as an uncaught exception), so each handler is guarded and a
 * failure goes to OpenTelemetry's diagnostic logger instead.
 */
export class Subscriptions {
  readonly #undo: (() => void)[] = []

  on<M>(channel: Channel, handler: (message: M) => void): void {
    const guarded = (message: unknown) => {
      try {
        handler(message as M)
      } catch (error) {
        diag.error(`@fastify-pg-pool/otel: ${channel.name.toString()} handler failed`, error)
      }
    }
    channel.subscribe(guarded)
    this.#undo.push(() => channel.unsubscribe(guarded))
  }

  /** Runs `undo` on close (listeners added elsewhere). */
  add(undo: () => void): void {
    this.#undo.push(undo)
  }

  close(): void {
    for (const undo of this.#undo.splice(0).reverse()) undo()
  }
}
