// Debug aid (CHAOS_TRACE_WRITES=1): remembers where each postgres.js `nextWrite` immediate was
// scheduled from, and prints it when one throws, so that a crash in postgres.js's write path
// names the caller that wrote on a closed connection.
const original = globalThis.setImmediate
export function traceWrites(): void {
  const patched = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
    if (callback.name !== 'nextWrite') return original(callback, ...args)
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 60
    const scheduled = new Error('nextWrite scheduled here').stack
    Error.stackTraceLimit = limit
    return original(() => {
      try {
        callback(...args)
      } catch (error) {
        console.error('[chaos trace] nextWrite threw; it was scheduled at:\n', scheduled)
        throw error
      }
    })
  }) as unknown as typeof setImmediate
  globalThis.setImmediate = patched
}
