// A real Prometheus (Debian's package) scraping a test app and evaluating rule files.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './embedded-server.js'

export interface PromSeries {
  metric: Record<string, string>
  value: [number, string]
}

export interface Prometheus {
  /** Its HTTP API, `http://127.0.0.1:<port>`. */
  readonly api: string
  /** An instant query; throws on Prometheus's error. */
  query(promql: string): Promise<PromSeries[]>
  /** Stops it and removes its data. */
  stop(): Promise<void>
}

/**
 * Starts `bin` scraping `target` (host:port) every second under the job `job`, evaluating
 * `rules` (a rule file's path) every second; resolves once it answers ready.
 */
export async function startPrometheus(bin: string, target: string, rules: string, job = 'app'): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'fpp-prometheus-'))
  const port = await freePort()
  const api = `http://127.0.0.1:${port}`
  const config = join(dir, 'prometheus.yml')
  await writeFile(
    config,
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: ['${rules}']`,
      'scrape_configs:',
      `  - job_name: ${job}`,
      `    static_configs: [{ targets: ['${target}'] }]`,
      '',
    ].join('\n'),
  )
  const child: ChildProcess = spawn(
    bin,
    [
      `--config.file=${config}`,
      `--web.listen-address=127.0.0.1:${port}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      '--log.level=error',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
    await rm(dir, { recursive: true, force: true })
  }
  const query = async (promql: string) => {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`)
    const body = (await response.json()) as { status: string; error?: string; data: { result: PromSeries[] } }
    if (body.status !== 'success') throw new Error(`${promql}: ${body.error}`)
    return body.data.result
  }
  const deadline = Date.now() + 30_000
  for (;;) {
    const ready = await fetch(`${api}/-/ready`).then(
      (response) => response.status === 200,
      () => false,
    )
    if (ready) break
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop()
      throw new Error('Prometheus did not get ready within 30 s')
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return { api, query, stop }
}
