import type { Clock, TimerHandle } from './clock.js'
import { formatLsn, type Lsn } from './lsn.js'

/** How far a replica is behind its primary, as last sampled. */
export interface ReplicaLag {
  /** Bytes of WAL the replica has not replayed yet (0 when caught up). */
  readonly bytes: number
  /**
   * Seconds behind: 0 when caught up, else how long ago the last transaction it replayed was
   * committed on the primary (`now() - pg_last_xact_replay_timestamp()`).
   */
  readonly seconds: number
  /** The position it has replayed (`pg_last_wal_replay_lsn()`). */
  readonly replayLsn: string
  /** When it was sampled, on the pool's clock. */
  readonly at: number
  /** Why the replica cannot serve reads, when it cannot: unreachable, no longer a standby. */
  readonly error: string | undefined
}

/** What a replica's sample reads. */
export interface ReplicaSample {
  readonly replay: Lsn
  /** The age of its last replayed commit, seconds; null before it replayed one. */
  readonly replayAgeSeconds: number | null
  /** Whether it is a standby (`pg_is_in_recovery()`). */
  readonly inRecovery: boolean
  /**
   * It belongs to another cluster than the primary (their system identifiers differ): its
   * positions are another WAL stream's, its rows another server's.
   */
  readonly otherCluster?: boolean
}

/** Where the monitor reads positions (dedicated connections outside the lease pools). */
export interface LsnSource {
  /** The primary's current WAL position (`pg_current_wal_lsn()`). */
  primary(): Promise<Lsn>
  /** A replica's replay position, the age of its last replayed commit, and whether it is a standby. */
  replica(index: number): Promise<ReplicaSample>
}

/** A primary's sample: its position, and when it was asked for (on the monitor's clock). */
interface PrimarySample {
  readonly lsn: Lsn
  readonly asked: number
}

/** How often replay positions are polled while a read waits for its write (read-your-writes). */
export const CATCH_UP_POLL_MS = 10

/**
 * Samples, every `interval`, the primary's WAL position and each replica's replay position:
 * the lag that routing reads against `maxLag`, and the replayed position that read-your-writes
 * waits for. Each server is sampled on its own: one that does not answer (frozen, each sample
 * bounded by the source) holds back only its own samples, not the other replicas' (their samples
 * would grow stale and take them out of routing too).
 */
export class ReplicaMonitor {
  readonly #clock: Clock
  readonly #source: LsnSource
  readonly #interval: number
  readonly #lags: (ReplicaLag | undefined)[]
  readonly #replayed: Lsn[]
  #timer: TimerHandle | undefined
  #stopped = false
  #sampling: Promise<void> | undefined
  /** The primary's sample in flight (its position, when it was asked for), shared by its round's replica samples. */
  #primaryInFlight: Promise<PrimarySample | undefined> | undefined
  readonly #replicaInFlight: boolean[]
  /** read-your-writes polls in flight, per replica (#poll). */
  readonly #polls: (Promise<void> | undefined)[]
  /**
   * Per replica, the newest time it is known to have had every commit made before (#sampleReplica),
   * and the newest primary sample it was seen at or behind, which it may reach later.
   */
  readonly #caughtUpAt: (number | undefined)[]
  readonly #toReach: (PrimarySample | undefined)[]
  /** Seen past the primary (another timeline): judged by its last commit's age alone until out of reach. */
  readonly #diverged: boolean[]

  constructor(clock: Clock, source: LsnSource, replicas: number, interval: number) {
    this.#clock = clock
    this.#source = source
    this.#interval = interval
    this.#lags = Array.from({ length: replicas }, () => undefined)
    this.#replayed = Array.from({ length: replicas }, () => 0n)
    this.#replicaInFlight = Array.from({ length: replicas }, () => false)
    this.#polls = Array.from({ length: replicas }, () => undefined)
    this.#caughtUpAt = Array.from({ length: replicas }, () => undefined)
    this.#toReach = Array.from({ length: replicas }, () => undefined)
    this.#diverged = Array.from({ length: replicas }, () => false)
  }

  /** Samples now, then every interval. */
  start(): Promise<void> {
    this.#sampling ??= this.sample()
    return this.#sampling
  }

  stop(): void {
    this.#stopped = true
    this.#clock.clearTimeout(this.#timer)
  }

  lag(index: number): ReplicaLag | undefined {
    return this.#lags[index]
  }

  /** The position replica `index` was last seen to have replayed. */
  replayed(index: number): Lsn {
    return this.#replayed[index] ?? 0n
  }

  /** Whether the last sample is recent: older than three intervals, a replica counts as unknown. */
  fresh(index: number, now = this.#clock.now()): boolean {
    const lag = this.#lags[index]
    return lag !== undefined && now - lag.at <= 3 * this.#interval
  }

  /** One round: the primary and each replica not still answering the last round; the next is scheduled at once. */
  sample(): Promise<void> {
    this.#clock.clearTimeout(this.#timer)
    if (this.#stopped) return Promise.resolve()
    // Each replica is read after the primary answered: a replay position read before the primary's
    // would be compared with writes made after it, and a caught-up replica idle for a while would
    // read as far behind (bytes > 0, seconds since its last replayed commit).
    const primary = this.#samplePrimary()
    const round = primary.then(() =>
      this.#stopped ? [] : Promise.all(this.#lags.map((_, index) => this.#sampleReplica(index, primary))),
    )
    this.#timer = this.#clock.setTimeout(() => void this.sample(), this.#interval)
    return round.then(() => {})
  }

  #samplePrimary(): Promise<PrimarySample | undefined> {
    if (this.#primaryInFlight !== undefined) return this.#primaryInFlight
    const asked = this.#clock.now()
    const sampling = this.#source.primary().then(
      (lsn) => ({ lsn, asked }),
      () => undefined,
    )
    this.#primaryInFlight = sampling
    void sampling.then(() => {
      if (this.#primaryInFlight === sampling) this.#primaryInFlight = undefined
    })
    return sampling
  }

  async #sampleReplica(index: number, primarySample: Promise<PrimarySample | undefined>): Promise<void> {
    if (this.#replicaInFlight[index] === true) return
    this.#replicaInFlight[index] = true
    const at = this.#clock.now()
    try {
      const { replay, replayAgeSeconds, inRecovery, otherCluster } = await this.#source.replica(index)
      let caughtUpAt = this.#caughtUpAt[index]
      const toReach = this.#toReach[index]
      // Anything but a sample of a standby at or behind the primary forgets both (below).
      this.#caughtUpAt[index] = undefined
      this.#toReach[index] = undefined
      if (otherCluster === true) {
        // A standby of another cluster (a URL reaching the wrong server): its rows are not the
        // primary's, and its position is no position of the primary's WAL.
        this.#replayed[index] = 0n
        this.#lags[index] = {
          bytes: Number.POSITIVE_INFINITY,
          seconds: Number.POSITIVE_INFINITY,
          replayLsn: formatLsn(replay),
          at,
          error: "another cluster (its system identifier is not the primary's)",
        }
        return
      }
      // What it shows now, not the most it ever showed: a standby restarted after a crash takes
      // reads from its consistency point on, which can be behind what it had replayed before.
      this.#replayed[index] = replay
      if (!inRecovery) {
        this.#lags[index] = { bytes: 0, seconds: 0, replayLsn: formatLsn(replay), at, error: 'not a standby' }
        return
      }
      const round = await primarySample
      const primary = round?.lsn
      if (primary !== undefined && replay > primary && (await this.#aheadOfPrimary(replay))) {
        this.#diverged[index] = true
        this.#lags[index] = {
          bytes: Number.POSITIVE_INFINITY,
          seconds: Number.POSITIVE_INFINITY,
          replayLsn: formatLsn(replay),
          at,
          error: 'ahead of the primary (left on another timeline by a failover)',
        }
        return
      }
      const bytes = primary === undefined ? Number.POSITIVE_INFINITY : Math.max(0, Number(primary - replay))
      // A standby seen at or behind the primary's position P (asked for at time t), and at or past
      // P since, has every commit made before t: it is at most now - t behind in time, whatever
      // the age of the last commit it replayed. WAL without commits (a transaction still open, a
      // bulk load, VACUUM) after a quiet spell is not the spell's age. Not from a sample that found
      // it past the primary, nor for a standby once seen past it: one left on the old timeline by a
      // failover is at positions of the new primary's WAL without having any of its commits.
      if (round !== undefined && this.#diverged[index] !== true) {
        if (toReach !== undefined && replay >= toReach.lsn) caughtUpAt = Math.max(caughtUpAt ?? 0, toReach.asked)
        if (replay === round.lsn) caughtUpAt = round.asked
        this.#caughtUpAt[index] = caughtUpAt
        this.#toReach[index] = replay < round.lsn ? round : toReach
      }
      const sinceCaughtUp =
        caughtUpAt === undefined ? Number.POSITIVE_INFINITY : Math.max(0, this.#clock.now() - caughtUpAt) / 1000
      const seconds = bytes === 0 ? 0 : Math.min(replayAgeSeconds ?? Number.POSITIVE_INFINITY, sinceCaughtUp)
      this.#lags[index] = {
        bytes,
        seconds,
        replayLsn: formatLsn(replay),
        at,
        error: primary === undefined ? 'primary unreachable' : undefined,
      }
    } catch (error) {
      // Out of reach, it may come back rebuilt (pg_rewind, a new base backup).
      this.#diverged[index] = false
      const replayed = this.#replayed[index] ?? 0n
      // Out of reach, it may be restarting: it is trusted with no position until sampled again.
      this.#replayed[index] = 0n
      this.#lags[index] = {
        bytes: Number.POSITIVE_INFINITY,
        seconds: Number.POSITIVE_INFINITY,
        replayLsn: formatLsn(replayed),
        at,
        error: `unreachable (${String((error as { code?: unknown } | null)?.code ?? 'error')})`,
      }
    } finally {
      this.#replicaInFlight[index] = false
    }
  }

  /**
   * A standby never replays past its primary: past the primary's position read after its own
   * (the round's primary sample may have been read before it, with writes in between), it holds
   * WAL the primary does not (a failover promoted another standby, and this one stayed on the old
   * timeline). Its rows may differ from the primary's: it gets no reads.
   */
  async #aheadOfPrimary(replay: Lsn): Promise<boolean> {
    const after = await this.#source.primary().catch(() => undefined)
    return after !== undefined && replay > after
  }

  /**
   * Waits (polling every CATCH_UP_POLL_MS) until replica `index` has replayed `lsn`, for at most
   * `maxWaitMs`; true once it has.
   */
  async waitReplayed(index: number, lsn: Lsn, maxWaitMs: number): Promise<boolean> {
    const deadline = this.#clock.now() + maxWaitMs
    for (;;) {
      if (this.replayed(index) >= lsn) return true
      if (this.#stopped || this.#clock.now() >= deadline) return false
      await new Promise<void>((resolve) =>
        this.#clock.setTimeout(resolve, Math.min(CATCH_UP_POLL_MS, deadline - this.#clock.now())),
      )
      const left = deadline - this.#clock.now()
      if (this.#stopped || left <= 0) return this.replayed(index) >= lsn
      // Waited for no longer than what is left of maxWait (a frozen replica must not hold the
      // read longer); the poll itself goes on for the other waiters, on its own bound.
      let timer: TimerHandle | undefined
      const outcome = await Promise.race([
        this.#poll(index).then(
          () => 'polled' as const,
          () => 'failed' as const,
        ),
        new Promise<'late'>((resolve) => {
          timer = this.#clock.setTimeout(() => resolve('late'), left)
        }),
      ])
      this.#clock.clearTimeout(timer)
      if (outcome === 'failed') return false
      if (outcome === 'late') return this.replayed(index) >= lsn
    }
  }

  /**
   * One poll of replica `index`'s replay position at a time, shared by every read waiting on it:
   * a thousand reads waiting for their writes cost one statement per poll, not a thousand, and a
   * read that stops waiting leaves the poll (and the monitor's connection) to the others.
   */
  #poll(index: number): Promise<void> {
    let polling = this.#polls[index]
    if (polling === undefined) {
      polling = this.#source.replica(index).then(
        ({ replay }) => {
          this.#polls[index] = undefined
          // Answers on the monitor's one connection come in the order asked: this is the newest.
          this.#replayed[index] = replay
        },
        (error: unknown) => {
          this.#polls[index] = undefined
          throw error
        },
      )
      this.#polls[index] = polling
    }
    return polling
  }
}
