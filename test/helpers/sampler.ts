/**
 * Looks at something every `everyMs` until stopped (e.g. which schedulers run): how many looks, the most items one
 * look saw, and every look that saw more than one.
 */
export function sampleEvery(look: () => Promise<string[]>, everyMs = 50) {
  let stopped = false
  let looks = 0
  let most = 0
  const seen: string[][] = []
  const loop = (async () => {
    while (!stopped) {
      const now = await look()
      looks++
      most = Math.max(most, now.length)
      if (now.length > 1) seen.push(now)
      await new Promise((r) => setTimeout(r, everyMs))
    }
  })()
  return {
    async stop() {
      stopped = true
      await loop
      return { looks, most, seen }
    },
  }
}
