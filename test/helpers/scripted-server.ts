import { createServer } from 'node:http'

export interface Scripted {
  url: string
  hits: () => number
}

/** A loopback server answering its n-th request with script[n] (the last entry repeats); 'hang' never answers. */
export async function scripted(
  t: { teardown: (fn: () => unknown) => void },
  script: Array<number | 'hang'>,
  path = '/',
): Promise<Scripted> {
  let n = 0
  const server = createServer((_req, res) => {
    const step = script[Math.min(n++, script.length - 1)]
    if (step === 'hang' || step === undefined) return
    res.statusCode = step
    res.end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { url: `http://127.0.0.1:${address.port}${path}`, hits: () => n }
}
