// Types of thonsync.js: writing Thôn Sync survey documents through a stock
// automerge-repo DocHandle (see docs/protocol.md, "automerge-repo clients").
import type { AutomergeUrl, DocHandle, Repo } from "@automerge/automerge-repo"

/** The UUID namespace of Thôn Sync document ids. */
export declare const UUID_NAMESPACE: string
/** Household fields that are counters, in their genesis's order. */
export declare const HOUSEHOLD_COUNTERS: readonly string[]
/** Fields whose values are text. */
export declare const TEXT_FIELDS: readonly string[]

/** A household id (`hh-001`), `{household: id}`, or `"facts"` for the village's own facts. */
export type Target = "facts" | string | { household: string }

/** A field value: whole numbers, booleans, texts; null or undefined unsets the field. */
export type FieldValue = number | boolean | string | null | undefined

/** The error shape of docs/protocol.md, as the server sends it for a refused message. */
export interface RefusalError {
  code: string
  message: string
  document: string | null
  field: string | null
  rule: string | null
  household?: string
  refused_upload?: number
}

/** The automerge-repo URL of a document id such as `village:nhu-co-01:2024-1`. */
export declare function documentUrl(documentId: string): Promise<AutomergeUrl>
/** The actor (hex) of a household's genesis change. */
export declare function householdActor(documentId: string, household: string): Promise<string>
/** A new device actor (hex) for the device id of the enrollment answer. */
export declare function deviceActor(deviceId: string): string
/** The Thôn Sync document id of a document's contents. */
export declare function documentIdOf(doc: unknown): string
/** Makes a household by its byte-exact genesis change; its hash, or null if it was there. */
export declare function createHousehold(handle: DocHandle<any>, id: string): Promise<string | null>
/** Sets fields as one change under `actor`; its hash (null when nothing changed). */
export declare function setFields(
  handle: DocHandle<any>,
  target: Target,
  fields: Record<string, FieldValue>,
  actor: string,
): Promise<string | null>
/** Adds `delta` to a counter field as one change under `actor`; its hash. */
export declare function increment(
  handle: DocHandle<any>,
  target: Target,
  field: string,
  delta: number,
  actor: string,
): Promise<string | null>
/** Calls `listener` when the server refuses this device's message for the document; returns an unsubscribe function. */
export declare function onRefusal(handle: DocHandle<any>, listener: (error: RefusalError) => void): () => void
/** `ws(s)://…/v1/repo?token=…` for a server URL (browsers cannot set headers on a WebSocket). */
export declare function repoSocketUrl(serverUrl: string, token: string): string
/**
 * Saves each document's sync state with a peer that has a storage id (the
 * server announces one), which automerge-repo 2.5 keeps for only one of the
 * documents that sync within 100 ms; returns a function that stops it.
 */
export declare function keepSyncStates(repo: Repo, delayMs?: number): () => void
