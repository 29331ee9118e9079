export function startOtel(options?: { serviceName?: string; exportIntervalMillis?: number }): {
  /** Exports what is pending now. */
  flush(): Promise<void>
  /** Flushes and stops. */
  shutdown(): Promise<void>
}
