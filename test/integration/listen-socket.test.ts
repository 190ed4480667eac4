// listen.socket against a real `deploy-agent serve`: the unix socket nginx uses is the one place X-Forwarded-For
// names the client (issue 9, item 5). Through it each named client has its own failure count; over TCP the header
// is ignored, so a local process can neither blame another address nor escape its own limit by rotating it.
import { lstat, readFile, writeFile } from 'node:fs/promises'
import { Agent } from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { startServe } from '../helpers/cli.js'
import { freePorts } from '../helpers/ports.js'
import { httpRequest, signedHeaders } from '../helpers/probe.js'
import { tempDir } from '../helpers/tmp.js'

t.test('listen.socket: X-Forwarded-For counts on the socket, never over TCP', async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const [port] = (await freePorts(1)) as [number]
  const socket = join(dir, 'run', 'agent.sock')
  const configPath = join(dir, 'agent.yaml')
  await writeFile(
    configPath,
    stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port, socket, trustProxy: ['127.0.0.1'] } }),
  )
  const url = `http://127.0.0.1:${port}`
  const agent = await startServe(configPath, url)
  t.teardown(() => agent.stop('SIGKILL'))
  t.equal((await lstat(socket)).mode & 0o777, 0o660, 'the socket is open to the agent user and group only')

  const bad = () => ({ ...signedHeaders(keys, 'GET', '/v1/status'), 'deploy-signature': 'v1=AAAA' })
  const viaSocket = (headers: Record<string, string>, client: string) =>
    httpRequest('http://agent/v1/status', { socketPath: socket, headers: { ...headers, 'x-forwarded-for': client } })
  const viaTcp = (headers: Record<string, string>, forwardedFor: string) =>
    httpRequest(`${url}/v1/status`, { localAddress: '127.0.0.1', headers: { ...headers, 'x-forwarded-for': forwardedFor } })

  t.equal((await viaSocket(signedHeaders(keys, 'GET', '/v1/status'), '198.51.100.1')).status, 200, 'a signed request through the socket')
  for (let i = 0; i < 20; i++) {
    const res = await viaSocket(bad(), '198.51.100.1')
    if (res.status !== 401) t.fail(`failure ${i + 1} answered ${res.status}`)
  }
  t.equal((await viaSocket(bad(), '198.51.100.1')).status, 429, 'the client nginx names is limited')
  t.equal((await viaSocket(bad(), '198.51.100.2')).status, 401, 'another client behind the same socket is not')

  // Over TCP a local process claims 198.51.100.2 (and rotates the claim): only its own peer address is counted.
  const tcp: number[] = []
  for (let i = 0; i < 21; i++) tcp.push((await viaTcp(bad(), i % 2 ? '198.51.100.2' : `203.0.113.${i}`)).status)
  t.same(tcp, [...Array(20).fill(401), 429], 'the TCP peer is limited whatever it claims')
  t.equal((await viaSocket(bad(), '198.51.100.2')).status, 401, 'the client it blamed is not')
  t.equal(
    (await viaSocket(signedHeaders(keys, 'GET', '/v1/status'), '198.51.100.1')).status,
    200,
    'a valid signature passes even for a limited client',
  )

  // An idle keep-alive connection on the socket (as nginx keeps) must not hold up a graceful stop.
  const keepAlive = new Agent({ keepAlive: true })
  t.equal((await httpRequest('http://agent/healthz', { socketPath: socket, agent: keepAlive })).status, 200)
  const stopping = Date.now()
  t.equal(await agent.stop('SIGTERM'), 0, 'SIGTERM stops the agent cleanly')
  t.ok(Date.now() - stopping < 3000, `the stop took ${Date.now() - stopping} ms (idle connections are closed, not waited for)`)
  keepAlive.destroy()
  await t.rejects(lstat(socket), { code: 'ENOENT' }, 'a clean stop removes the socket')
})

t.test('listen.socket: a stale socket is replaced; a file that is not a socket is refused by name', async (t) => {
  const dir = await tempDir(t)
  await writeTestKeys(dir)
  const [port] = (await freePorts(1)) as [number]
  const socket = join(dir, 'agent.sock')
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port, socket } }))
  const first = await startServe(configPath, `http://127.0.0.1:${port}`)
  await first.stop('SIGKILL') // leaves the socket file behind
  t.ok((await lstat(socket)).isSocket(), 'a killed agent leaves its socket file')
  const second = await startServe(configPath, `http://127.0.0.1:${port}`)
  t.equal((await httpRequest('http://agent/healthz', { socketPath: socket })).status, 200, 'the restarted agent serves on the same path')
  await second.stop('SIGTERM')

  const regular = join(dir, 'not-a-socket')
  await writeFile(regular, 'keep me')
  await writeFile(configPath, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port, socket: regular } }))
  const refused = await startServe(configPath, `http://127.0.0.1:${port}`, {}, 30_000).then(
    async (agent) => `started: ${await agent.stop('SIGKILL')}`,
    (err: Error) => err.message,
  )
  t.match(refused, `listen.socket: ${regular} exists and is not a socket`, 'serve exits naming the key and the path')
  t.equal(await readFile(regular, 'utf8'), 'keep me', 'the file is left alone')
})
