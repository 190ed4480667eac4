// `listen.socket`: a unix socket for the local nginx, next to the TCP listener. Its connections are handed to the
// same HTTP server (same routes, limits and timeouts), marked so that their X-Forwarded-For is believed: only the
// agent's user and group may open the socket (0660), so a process on loopback cannot pose as the proxy.
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises'
import { connect, createServer, type Server } from 'node:net'
import { dirname } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { ConfigError } from '../errors.js'
import { markProxySocket } from './client.js'

export interface ProxySocket {
  /**
   * Stops accepting at once (Node removes the socket file); resolves when the last connection is gone. Those
   * connections belong to the HTTP server, so call it before `app.close()` and await it after.
   */
  close(): Promise<void>
}

/** Whether something accepts connections on `path` (a live agent), as opposed to a socket file left by a crash. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path)
    probe.once('connect', () => {
      probe.destroy()
      resolve(true)
    })
    probe.once('error', () => resolve(false))
  })
}

/** Removes a stale socket file; refuses to touch anything that is not a socket, or one another process serves. */
async function clearPath(path: string): Promise<void> {
  const stat = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null
    throw err
  })
  if (!stat) return
  if (!stat.isSocket()) throw new ConfigError([`listen.socket: ${path} exists and is not a socket; remove it or choose another path`])
  if (await answers(path)) throw new ConfigError([`listen.socket: another process already listens on ${path}`])
  await unlink(path)
}

export async function listenProxySocket(app: FastifyInstance, path: string): Promise<ProxySocket> {
  await mkdir(dirname(path), { recursive: true, mode: 0o750 })
  await clearPath(path)
  const server: Server = createServer((socket) => {
    markProxySocket(socket)
    app.server.emit('connection', socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => {
      server.off('error', reject)
      resolve()
    })
  })
  // Created with the process umask (0077 under systemd: owner only); the proxy's user gets in through the group.
  await chmod(path, 0o660)
  return {
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}
