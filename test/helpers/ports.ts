import { createServer, type Server } from 'node:net'

function listenOnLoopback(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1)
  return port as number
}

/** `n` distinct free ports: all are held open together so the kernel cannot hand out one twice. */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < n; i++) servers.push(await listenOnLoopback())
    return servers.map((s) => {
      const address = s.address()
      if (address === null || typeof address === 'string') throw new Error('server has no TCP address')
      return address.port
    })
  } finally {
    await Promise.all(servers.map(close))
  }
}
