// A throwaway self-signed certificate for 127.0.0.1 (P-256), made by openssl as an operator would.
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface SelfSigned {
  certFile: string
  keyFile: string
  /** the certificate, which is its own CA: pass it as `ca` or NODE_EXTRA_CA_CERTS */
  cert: Buffer
}

/** Writes `<name>.crt` and `<name>.key` (unencrypted) into `dir`. */
export async function selfSignedCert(dir: string, name = 'agent'): Promise<SelfSigned> {
  const certFile = join(dir, `${name}.crt`)
  const keyFile = join(dir, `${name}.key`)
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ])
  return { certFile, keyFile, cert: await readFile(certFile) }
}
