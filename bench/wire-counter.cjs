// Preloaded into a bench/server.js process by bench/wire.js (`node --require`): counts, per
// request served, the writes and reads on the database sockets and the HTTP writes, the time from
// a write on a database socket to its next read (the round trip as the event loop sees it), and
// the process's CPU. Written as one JSON line to WIRE_OUT when the process gets SIGTERM.
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')

const counts = { requests: 0, dbWrites: 0, dbBytes: 0, dbReads: 0, httpWrites: 0 }
const roundTrips = []
const sentAt = Symbol('sentAt')
// Sockets a server accepted carry `server`; the database sockets are the ones this process opened.
const isDatabase = (socket) => !socket.server

const write = net.Socket.prototype._writeGeneric
net.Socket.prototype._writeGeneric = function (writev, data, encoding, callback) {
  if (isDatabase(this)) {
    counts.dbWrites++
    counts.dbBytes += writev ? data.reduce((sum, x) => sum + (x.chunk ?? x).length, 0) : data.length
    if (this[sentAt] === undefined) this[sentAt] = process.hrtime.bigint()
  } else counts.httpWrites++
  return write.call(this, writev, data, encoding, callback)
}
const emit = net.Socket.prototype.emit
net.Socket.prototype.emit = function (event, ...args) {
  if (event === 'data' && isDatabase(this)) {
    counts.dbReads++
    if (this[sentAt] !== undefined) {
      roundTrips.push(Number(process.hrtime.bigint() - this[sentAt]) / 1000)
      this[sentAt] = undefined
    }
  }
  return emit.call(this, event, ...args)
}
const serverEmit = http.Server.prototype.emit
http.Server.prototype.emit = function (event, ...args) {
  if (event === 'request') counts.requests++
  return serverEmit.call(this, event, ...args)
}

let cpuAtReset = process.cpuUsage()
// SIGUSR2: a measurement starts (bench/wire.js sends it after its warm-up); the counts restart.
process.on('SIGUSR2', () => {
  for (const key of Object.keys(counts)) counts[key] = 0
  roundTrips.length = 0
  cpuAtReset = process.cpuUsage()
})
process.on('SIGTERM', () => {
  const cpu = process.cpuUsage(cpuAtReset)
  fs.writeFileSync(process.env.WIRE_OUT, `${JSON.stringify({ ...counts, cpuUs: cpu.user + cpu.system, roundTrips })}\n`)
  process.exit(0)
})
