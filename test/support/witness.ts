import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'

/**
 * Everything a test's apps printed or answered, for "no secret anywhere" assertions: every log
 * line (trace level and up), every response's headers and body, and what the test adds itself
 * (error messages, causes, stacks).
 */
export class Witness {
  /** Every line and answer seen so far. */
  readonly seen: string[] = []
  #apps: FastifyInstance[] = []

  /** A Fastify app with a trace-level JSON logger whose lines land in `lines` and in `seen`. */
  loggedApp(): { app: FastifyInstance; lines: string[] } {
    const lines: string[] = []
    const seen = this.seen
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk))
        seen.push(String(chunk))
        callback()
      },
    })
    const app = Fastify({ logger: { level: 'trace', stream } })
    this.#apps.push(app)
    return { app, lines }
  }

  /** An app built elsewhere, closed with the others. */
  track(app: FastifyInstance): void {
    this.#apps.push(app)
  }

  /** GET `path`; its headers and body are witnessed. */
  async capture(app: FastifyInstance, path: string): Promise<LightMyRequestResponse> {
    const response = await app.inject(path)
    this.seen.push(JSON.stringify(response.headers), response.body)
    return response
  }

  /** Closes every app (what they log while closing is witnessed too). */
  async closeApps(): Promise<void> {
    const apps = this.#apps
    this.#apps = []
    await Promise.all(apps.map((app) => app.close().catch(() => {})))
  }
}
