/** `<code>: <message>` of the `kind` of error `fn` throws, or 'accepted'; any other error is rethrown. */
export function refused(fn: () => unknown, kind: abstract new (...args: never[]) => Error & { code: string }): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof kind) return `${err.code}: ${err.message}`
    throw err
  }
  return 'accepted'
}
