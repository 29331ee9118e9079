import type { Clock, PgPoolView } from '@fastify-pg-pool/core'
import { Admission, type AdmissionSettings, type PoolRefusal } from './admission.js'
import { errorBody, errors } from './errors.js'
import type { StallClock } from './stall-clock.js'

/**
 * Admission control of one pool (an instance's primary): the decision, fed by that pool's
 * acquires and releases, and the bodies of its refusals (the queue cap they name is that pool's).
 * A route is judged by the pool its `request.db` uses: a saturated pool refuses its own routes,
 * never another instance's.
 */
export class PoolAdmission {
  readonly view: PgPoolView
  readonly admission: Admission
  /** Serialized once: the refusal path does no work per request. */
  readonly bodies: Readonly<Record<PoolRefusal, string>>
  readonly #clock: Clock
  readonly #stalls: StallClock

  constructor(view: PgPoolView, settings: AdmissionSettings, clock: Clock, stalls: StallClock) {
    this.view = view
    this.admission = new Admission(view, settings, clock)
    this.bodies = Object.freeze({
      queue_full: errorBody(new errors.FST_PG_POOL_QUEUE_FULL(view.options.maxWaiting)),
      queue_delay: errorBody(new errors.FST_PG_POOL_OVERLOADED(settings.target)),
    })
    this.#clock = clock
    this.#stalls = stalls
    view.on('acquire', this.#onAcquire)
    view.on('release', this.#onRelease)
  }

  /** Whether the pool has work: the stall clock runs only while some pool has. */
  busy(): boolean {
    const stats = this.view.stats()
    return stats.leased > 0 || stats.waiting > 0
  }

  stop(): void {
    this.view.off('acquire', this.#onAcquire)
    this.view.off('release', this.#onRelease)
  }

  readonly #onAcquire = (waitMs: number): void => {
    this.#stalls.wake()
    this.admission.onAcquire(waitMs)
  }

  readonly #onRelease = (heldMs: number): void => {
    const now = this.#clock.now()
    this.admission.onRelease(heldMs, this.#stalls.within(now - heldMs, now))
  }
}
