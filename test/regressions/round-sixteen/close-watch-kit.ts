// Round sixteen's tests of connections the server closes: a connection object (from a test URL)
// whose onclose counts, so that a handler can wait until the pool saw its connection go
// (the core calls an app's onclose after its own).

/** postgres.js options for `url`, with an onclose that counts; `closes()` reads the count. */
export function connectionSeeingCloses(url: string): { connection: Record<string, unknown>; closes: () => number } {
  const parsed = new URL(url)
  let closes = 0
  return {
    connection: {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: decodeURIComponent(parsed.pathname.slice(1)),
      user: decodeURIComponent(parsed.username),
      ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
      onclose: () => {
        closes++
      },
    },
    closes: () => closes,
  }
}
