// A TCP forwarder for the two-node swarm rig (scripts/swarm-rig.sh): `node swarm-rig-forward.js LISTEN TARGET`, each
// `host:port`. The rig runs one on the host (veth address → the registry on 127.0.0.1) and one inside the worker's
// network namespace (127.0.0.1 → the host's veth address), so every node pulls `127.0.0.1:<port>/…`. No socat here.
import { connect, createServer } from 'node:net'

function parse(arg) {
  const m = /^(.+):(\d+)$/.exec(arg ?? '')
  if (!m) {
    process.stderr.write(`usage: swarm-rig-forward.js LISTEN_HOST:PORT TARGET_HOST:PORT (got ${arg})\n`)
    process.exit(2)
  }
  return { host: m[1], port: Number(m[2]) }
}

const listen = parse(process.argv[2])
const target = parse(process.argv[3])

const server = createServer((client) => {
  const upstream = connect(target.port, target.host)
  // Either side closing or failing closes the other: no half-open pairs left behind.
  const close = () => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', close).on('close', close)
  upstream.on('error', close).on('close', close)
  client.pipe(upstream)
  upstream.pipe(client)
})
server.on('error', (err) => {
  process.stderr.write(`swarm-rig-forward: ${err.message}\n`)
  process.exit(1)
})
server.listen(listen.port, listen.host, () => process.stdout.write(`forwarding ${process.argv[2]} -> ${process.argv[3]}\n`))
process.on('SIGTERM', () => process.exit(0))
