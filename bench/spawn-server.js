// Starts one bench/server.js process and waits for the port it prints.
import { spawn } from 'node:child_process'

/**
 * `env` is added to this process's environment; `cwd` is the checkout whose bench/server.js runs
 * (an earlier one for a baseline); `nodeArgs` go before the script (e.g. --cpu-prof).
 * Resolves with `{ base, pid, stop() }` once the server listens.
 */
export async function spawnServer({ cwd, env, nodeArgs = [], label }) {
  const child = spawn(process.execPath, [...nodeArgs, 'bench/server.js'], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]).port)
    })
    child.once('exit', (code) => reject(new Error(`server ${label} exited with ${code}`)))
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return {
    base: `http://127.0.0.1:${port}`,
    pid: child.pid,
    async stop() {
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 3_000)
      await exited
      clearTimeout(killer)
    },
  }
}
