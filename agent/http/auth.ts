// Route-level authentication. Each route declares `config.auth`; two hooks enforce it: cheap checks (status token,
// query string, a blocked client's screen) on request, the signature after the raw body has been read. The limiter
// counts per `request.client` (http/client.ts), set before these hooks run.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Authenticator } from '../auth/authenticator.js'
import type { LoadedKey } from '../auth/keyring.js'
import { ValidationError } from '../errors.js'
import type { ClientAddress } from './client.js'

export type AuthMode = 'none' | 'token' | 'signed' | 'token-or-signed'

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthMode
  }
  interface FastifyRequest {
    rawBody?: Buffer
    signedBy?: LoadedKey
    client: ClientAddress
  }
}

const EMPTY = Buffer.alloc(0)

function usesSignature(request: FastifyRequest, mode: AuthMode): boolean {
  return mode === 'signed' || (mode === 'token-or-signed' && Authenticator.looksSigned(request.raw.rawHeaders))
}

export function registerAuth(app: FastifyInstance, authenticator: Authenticator): void {
  app.addHook('onRequest', async (request) => {
    const mode = request.routeOptions.config.auth ?? 'none'
    if (mode === 'none') return
    if (usesSignature(request, mode)) {
      authenticator.screenSigned(request.raw.rawHeaders, request.client.key)
      // The signed path is the whole request target; a query string would be unsigned input.
      if (request.url.includes('?')) throw new ValidationError('a signed request must not have a query string')
      return
    }
    authenticator.verifyStatusToken(request.headers.authorization, request.client.key)
  })

  app.addHook('preValidation', async (request) => {
    const mode = request.routeOptions.config.auth ?? 'none'
    if (!usesSignature(request, mode)) return
    request.signedBy = await authenticator.verifySigned(
      { rawHeaders: request.raw.rawHeaders, method: request.method, path: request.url, body: request.rawBody ?? EMPTY },
      request.client.key,
    )
  })
}

/** The key that signed this request; routes with `auth: 'signed'` always have one. */
export function signer(request: FastifyRequest): LoadedKey {
  if (!request.signedBy) throw new Error('route is not declared with auth: signed')
  return request.signedBy
}
