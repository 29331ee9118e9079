import v8 from 'node:v8'
import vm from 'node:vm'

/**
 * Counting what stays alive, deterministically: a full GC on demand (without starting Node with
 * --expose-gc) and live-object counts by constructor (v8.queryObjects, which collects first).
 */
v8.setFlagsFromString('--expose-gc')
const fullGc = vm.runInNewContext('gc') as () => void

// v8.queryObjects prints an ExperimentalWarning once; it is no finding of ours.
const quiet = process.emitWarning
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const text = typeof warning === 'string' ? warning : warning.message
  if (text.includes('queryObjects')) return
  return (quiet as (...args: unknown[]) => void).call(process, warning, ...rest)
}) as typeof process.emitWarning

const queryObjects = (v8 as unknown as { queryObjects(ctor: unknown, options: { format: 'count' }): number })
  .queryObjects

/** Runs a full garbage collection (twice: finalizers and weak callbacks of the first). */
export async function collectGarbage(): Promise<void> {
  fullGc()
  await new Promise((resolve) => setImmediate(resolve))
  fullGc()
}

/** Live objects whose prototype chain holds `ctor.prototype`, after a full GC. */
export function liveObjects(ctor: abstract new (...args: never[]) => unknown): number {
  return queryObjects(ctor, { format: 'count' })
}

/** Node's Timeout class (timers, unref'd ones included: getActiveResourcesInfo omits those). */
export const Timeout = (() => {
  const timer = setTimeout(() => {}, 0)
  clearTimeout(timer)
  return timer.constructor as abstract new (
    ...args: never[]
  ) => unknown
})()

/** process.getActiveResourcesInfo() as counts by type. */
export function activeResources(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const kind of process.getActiveResourcesInfo()) out[kind] = (out[kind] ?? 0) + 1
  return out
}

/** Listener counts of the process events an app could leave behind. */
export function processListeners(): Record<string, number> {
  const events = ['SIGTERM', 'SIGINT', 'beforeExit', 'exit', 'uncaughtException', 'unhandledRejection', 'warning']
  return Object.fromEntries(events.map((event) => [event, process.listenerCount(event)]))
}
