// What the pipeline needs from git and the image engine, as narrow interfaces: GitMirror, TagLedger and
// DockerEngine are the real implementations; tests of decisions can pass fakes.
import type { BuildImageOptions } from '../docker/build.js'
import type { ImageDetails, ImageSummary, Labels, OneOffOptions, OneOffResult } from '../docker/types.js'
import type { ResolvedTag } from '../git/mirror.js'

export interface SourceRepo {
  fetch(): Promise<void>
  resolveTag(tag: string): Promise<ResolvedTag>
  resolveBranch(branch: string): Promise<string>
  isAncestor(commit: string, of: string): Promise<boolean>
  /** A tar stream of the tree at `commit` (below `subdir`). */
  archive(commit: string, subdir?: string): NodeJS.ReadableStream
}

export interface TagMemory {
  check(app: string, tag: string, commit: string): void
  record(app: string, tag: string, commit: string): Promise<void>
}

export interface ImageBuilder {
  buildImage(opts: BuildImageOptions): Promise<{ imageId: string }>
  inspectImage(ref: string): Promise<ImageDetails | null>
  runOneOff(opts: OneOffOptions): Promise<OneOffResult>
  listImages(labelFilter: Labels, reference?: string): Promise<ImageSummary[]>
  removeImage(ref: string): Promise<void>
}
