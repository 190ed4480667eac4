// Who a request comes from (agent/http/client.ts): over TCP the socket peer, whatever it sends; on the proxy's
// unix socket the address nginx names. trustProxy only decides whether a TCP peer's header is logged.
import type { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import t from 'tap'
import { clientAddress, markProxySocket, trustList } from '../../agent/http/client.js'

function message(remoteAddress: string | undefined, forwardedFor?: string | string[], viaProxy = false): IncomingMessage {
  const socket = new Socket()
  Object.defineProperty(socket, 'remoteAddress', { value: remoteAddress })
  if (viaProxy) markProxySocket(socket)
  return { socket, headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor } } as unknown as IncomingMessage
}

t.test('Client address: over TCP the key is the socket peer, whatever X-Forwarded-For says', async (t) => {
  const trusted = trustList(['127.0.0.0/8', '::1'])
  t.same(
    clientAddress(message('127.0.0.1', '203.0.113.7'), trusted),
    { key: '127.0.0.1', peer: '127.0.0.1', forwardedFor: '203.0.113.7' },
    'a listed peer: header logged only',
  )
  t.same(
    clientAddress(message('10.1.2.3', '203.0.113.7'), trusted),
    { key: '10.1.2.3', peer: '10.1.2.3' },
    'an unlisted peer: header not even logged',
  )
  t.same(
    clientAddress(message('::ffff:127.0.0.5', '203.0.113.7'), trusted).forwardedFor,
    '203.0.113.7',
    'IPv4-mapped peers match IPv4 ranges',
  )
  t.same(clientAddress(message('::1', 'not-an-ip'), trusted), { key: '::1', peer: '::1' }, 'a header that is no address is dropped')
  t.same(
    clientAddress(message('127.0.0.1', '203.0.113.7'), trustList()),
    { key: '127.0.0.1', peer: '127.0.0.1' },
    'no trustProxy: nothing logged',
  )
})

t.test('Client address: on the proxy socket the key is the address nginx appended', async (t) => {
  const none = trustList()
  t.same(clientAddress(message(undefined, '198.51.100.1', true), none), {
    key: 'proxy:198.51.100.1',
    peer: 'socket',
    forwardedFor: '198.51.100.1',
  })
  t.equal(
    clientAddress(message(undefined, '6.6.6.6, 198.51.100.1', true), none).key,
    'proxy:198.51.100.1',
    'the last entry, the one the proxy added',
  )
  t.equal(clientAddress(message(undefined, ['6.6.6.6', '2001:db8::1'], true), none).key, 'proxy:2001:db8::1')
  t.equal(clientAddress(message(undefined, undefined, true), none).key, 'proxy:unknown', 'no header: one bucket for the proxy')
  t.equal(
    clientAddress(message('127.0.0.1', '198.51.100.1'), none).key,
    '127.0.0.1',
    'an unmarked (TCP) socket is never the proxy, even from loopback',
  )
  t.equal(clientAddress(message(undefined, '198.51.100.1'), none).key, 'unknown', 'a TCP socket already gone is not the proxy either')
})
