// Shared by probe-streams' tests: process-level errors seen during one test, and an HTTP exchange
// that reports what the client got (a status and body, a cut body, or no answer at all).

/** Collects uncaught exceptions and unhandled rejections from `start()` until `stop()`. */
export function processErrors(): { start(): void; stop(): string[] } {
  const seen: string[] = []
  const collect = (error: unknown) => {
    seen.push(error instanceof Error ? `${error.name}: ${error.message}` : String(error))
  }
  return {
    start() {
      process.on('uncaughtException', collect)
      process.on('unhandledRejection', collect)
    },
    stop() {
      process.off('uncaughtException', collect)
      process.off('unhandledRejection', collect)
      return seen.splice(0)
    },
  }
}

export interface Exchange {
  /** The status, or 'no answer' when none came within the client's patience. */
  status: number | 'no answer' | 'error'
  body: string
  /** The body ended whole (false: cut after the status). */
  whole: boolean
}

/** One request with `fetch`, given up after `patienceMs` (the client hangs up then). */
export async function exchange(url: string, method = 'POST', patienceMs = 8_000): Promise<Exchange> {
  const signal = AbortSignal.timeout(patienceMs)
  let res: Response
  try {
    res = await fetch(url, { method, signal })
  } catch (error) {
    return { status: (error as Error).name === 'TimeoutError' ? 'no answer' : 'error', body: '', whole: false }
  }
  try {
    return { status: res.status, body: await res.text(), whole: true }
  } catch {
    return { status: res.status, body: '', whole: false }
  }
}
