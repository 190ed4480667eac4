// Who a request comes from, for the auth-failure limiter and the request log. Over TCP that is the socket peer,
// whatever headers it sends: every local process and container (host networking) shares loopback with a local
// nginx, so an X-Forwarded-For over TCP proves nothing. Only connections on `listen.socket`, which nginx alone may
// open (file mode 0660), are believed about the client they name.
import { BlockList, isIP, type Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'

const VIA_PROXY_SOCKET = Symbol('deploy-agent.viaProxySocket')

/** Marks a connection accepted on the proxy's unix socket (`listen.socket`). */
export function markProxySocket(socket: Socket): void {
  ;(socket as Socket & { [VIA_PROXY_SOCKET]?: true })[VIA_PROXY_SOCKET] = true
}

export interface ClientAddress {
  /** What the limiter counts against: the TCP peer's address, or `proxy:<address nginx named>` on the socket. */
  key: string
  /** For the log: the TCP peer, or "socket". */
  peer: string
  /** For the log: the client named by X-Forwarded-For, when the peer is the proxy socket or listed in trustProxy. */
  forwardedFor?: string
}

/** The last X-Forwarded-For entry: the one the nearest proxy appended (nginx sets exactly one). */
function forwardedAddress(raw: IncomingMessage): string | undefined {
  const header = raw.headers['x-forwarded-for']
  const last = (Array.isArray(header) ? header.at(-1) : header)?.split(',').at(-1)?.trim()
  return last && isIP(last) ? last : undefined
}

/** Matches `listen.trustProxy` (addresses and CIDR ranges, as validated by the config schema). */
export function trustList(entries: readonly string[] = []): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [address = '', bits] = entry.split('/')
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(bits), type)
  }
  return list
}

function listed(list: BlockList, address: string): boolean {
  const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
  return list.check(plain, isIP(plain) === 6 ? 'ipv6' : 'ipv4')
}

export function clientAddress(raw: IncomingMessage, trustProxy: BlockList): ClientAddress {
  const socket = raw.socket as Socket & { [VIA_PROXY_SOCKET]?: true }
  const forwardedFor = forwardedAddress(raw)
  if (socket[VIA_PROXY_SOCKET]) return { key: `proxy:${forwardedFor ?? 'unknown'}`, peer: 'socket', forwardedFor }
  const peer = socket.remoteAddress ?? 'unknown'
  return { key: peer, peer, ...(forwardedFor && listed(trustProxy, peer) && { forwardedFor }) }
}
