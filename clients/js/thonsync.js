// Thôn Sync for automerge-repo clients: write survey documents through a
// stock `@automerge/automerge-repo` DocHandle so that Thôn Sync's server
// (`GET /v1/repo`) admits the changes.
//
// The server admits only (see docs/protocol.md):
// - households made by their deterministic genesis change: actor derived
//   from (document, household), time 0, only dependency the document's
//   genesis, ops exactly as the server makes them (`createHousehold`);
// - every other change under the device's own actor, `tsd/<device>/` + 8
//   random bytes (`deviceActor`), never the handle's random actor
//   (`setFields`, `increment`);
// - values of the field's type (texts are plain strings, not collaborative
//   text).
// Documents are never created by a client: `documentUrl(id)` names a
// document of the registry and `repo.find(url)` gets it from the server.
//
// Plain ES module; works in Node >= 20 and browsers (Web Crypto).

import * as A from "@automerge/automerge"
import { stringifyAutomergeUrl } from "@automerge/automerge-repo"

/** The UUID namespace of Thôn Sync document ids (docs/vectors/genesis.json). */
export const UUID_NAMESPACE = "d746dba2-404f-4af5-b894-7a4dd4e196aa"

/** Household fields that are counters, in the order their genesis makes them. */
export const HOUSEHOLD_COUNTERS = ["qr_codes_issued"]

/** Fields whose values are text (plain strings, never collaborative text). */
export const TEXT_FIELDS = ["head_name", "surveyed_by"]

const encoder = new TextEncoder()

function hex(bytes) {
  return Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("")
}

function fromHex(text) {
  const out = new Uint8Array(text.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16)
  return out
}

async function digest(algorithm, parts) {
  const total = parts.reduce((n, p) => n + p.length, 0)
  const all = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    all.set(p, at)
    at += p.length
  }
  return new Uint8Array(await globalThis.crypto.subtle.digest(algorithm, all))
}

/**
 * The automerge-repo URL of a Thôn Sync document id such as
 * `village:nhu-co-01:2024-1`: the RFC 4122 version 5 UUID of the id in
 * `UUID_NAMESPACE`, base58check, after `automerge:`.
 */
export async function documentUrl(documentId) {
  const hash = await digest("SHA-1", [fromHex(UUID_NAMESPACE.replaceAll("-", "")), encoder.encode(documentId)])
  const bytes = hash.slice(0, 16)
  bytes[6] = (bytes[6] & 0x0f) | 0x50
  bytes[8] = (bytes[8] & 0x3f) | 0x80
  return stringifyAutomergeUrl(bytes)
}

/** The actor (hex) of a household's genesis change. */
export async function householdActor(documentId, household) {
  const parts = ["thonsync/household", documentId, household].flatMap(p => [encoder.encode(p), new Uint8Array([0])])
  return hex((await digest("SHA-256", parts)).slice(0, 16))
}

/**
 * A new device actor (hex) for the device `deviceId` (the `device` of the
 * enrollment answer): `tsd/<device>/` and 8 random bytes. Mint one per
 * install (or per session) and never share it between two replicas.
 */
export function deviceActor(deviceId) {
  const random = globalThis.crypto.getRandomValues(new Uint8Array(8))
  return hex(encoder.encode(`tsd/${deviceId}/`)) + hex(random)
}

/** The Thôn Sync id of the document a handle holds (`village:place:round`). */
export function documentIdOf(doc) {
  const text = v => (v === undefined ? undefined : String(v))
  const [kind, place, round] = [text(doc.kind), text(doc.place), text(doc.round)]
  if (!kind || !place || !round) throw new Error("not a Thôn Sync document (no kind, place or round): find it with documentUrl(id) first")
  return `${kind}:${place}:${round}`
}

/** Applies a change made elsewhere to the handle's document. */
function applyTo(handle, change) {
  handle.update(doc => A.applyChanges(doc, [change])[0])
}

/** The document's genesis change: its one change without dependencies. */
function genesisOf(doc) {
  for (const bytes of A.getAllChanges(doc)) {
    if (A.decodeChange(bytes).deps.length === 0) return bytes
  }
  throw new Error("the document has no genesis yet: wait for `handle.whenReady()` after `repo.find(url)`")
}

/**
 * Makes household `id` with its genesis change, byte for byte the one every
 * replica makes, unless the document has it. Returns the change's hash, or
 * null when the household was there already.
 */
export async function createHousehold(handle, id) {
  const doc = handle.doc()
  if (doc.households === undefined) throw new Error("only village documents have households")
  if (doc.households[id] !== undefined) return null
  const actor = await householdActor(documentIdOf(doc), id)
  let base = A.init({ actor })
  ;[base] = A.applyChanges(base, [genesisOf(doc)])
  base = A.change(base, { time: 0 }, d => {
    d.households[id] = Object.fromEntries(HOUSEHOLD_COUNTERS.map(name => [name, new A.Counter(0)]))
  })
  const change = A.getLastLocalChange(base)
  applyTo(handle, change)
  return A.decodeChange(change).hash
}

function record(d, target) {
  if (target === "facts") return d.facts
  const household = typeof target === "string" ? target : target.household
  const r = d.households?.[household]
  if (r === undefined) throw new Error(`household ${household} does not exist: createHousehold first`)
  return r
}

function value(field, v) {
  if (typeof v === "string" || TEXT_FIELDS.includes(field)) return new A.ImmutableString(String(v))
  if (typeof v === "number" && !Number.isInteger(v)) throw new Error(`${field}: whole numbers only`)
  return v
}

/** One change under the device's actor, applied to the handle. */
function writeAs(handle, actor, edit) {
  let mine = A.clone(handle.doc(), { actor })
  mine = A.change(mine, { time: Date.now() }, edit)
  const change = A.getLastLocalChange(mine)
  if (change !== undefined) applyTo(handle, change)
  return change === undefined ? null : A.decodeChange(change).hash
}

/**
 * Sets fields of a household (`target`: its id, or `{household: id}`) or of
 * the village (`"facts"`), as one change under `actor` (see `deviceActor`).
 * A household that does not exist yet is created first. Returns the hash.
 */
export async function setFields(handle, target, fields, actor) {
  if (target !== "facts") await createHousehold(handle, typeof target === "string" ? target : target.household)
  return writeAs(handle, actor, d => {
    const r = record(d, target)
    for (const [field, v] of Object.entries(fields)) {
      if (v === null || v === undefined) delete r[field]
      else r[field] = value(field, v)
    }
  })
}

/** Adds `delta` to a counter field, as one change under `actor`. */
export async function increment(handle, target, field, delta, actor) {
  if (target !== "facts") await createHousehold(handle, typeof target === "string" ? target : target.household)
  return writeAs(handle, actor, d => {
    record(d, target)[field].increment(delta)
  })
}

/**
 * Calls `onRefusal(error)` with the error shape of docs/protocol.md
 * (`{code, message, document, field, rule, household, refused_upload}`)
 * when the server refuses this device's message for the document. The
 * server tells it once per connection and then ignores the document's
 * messages on that connection.
 */
export function onRefusal(handle, onRefusal) {
  const listener = ({ message }) => {
    if (message && typeof message === "object" && message.error) onRefusal(message.error)
  }
  handle.on("ephemeral-message", listener)
  return () => handle.off("ephemeral-message", listener)
}

/** The socket address of a server's `/v1/repo` with the token in the query (browsers cannot set headers). */
export function repoSocketUrl(serverUrl, token) {
  const url = new URL("/v1/repo", serverUrl.replace(/^http/, "ws"))
  url.searchParams.set("token", token)
  return url.toString()
}

/**
 * Saves the sync state with each peer that has a storage id (the server
 * announces one) for every document, so a Repo started again on the same
 * storage resumes each document's sync from where it stopped. automerge-repo
 * 2.5 saves these through one throttle per peer's storage id, which keeps
 * only the last of the documents that synced within 100 ms: most
 * documents of a commune that sync together would otherwise start again
 * from nothing (their first message then carries a Bloom filter of their
 * whole history). Call it once, after `new Repo({storage, …})`; returns a
 * function that stops it.
 */
export function keepSyncStates(repo, delayMs = 100) {
  const storage = repo.storageSubsystem
  if (!storage) return () => {}
  const pending = new Map()
  const listener = ({ documentId, peerId, syncState }) => {
    const { storageId, isEphemeral } = repo.peerMetadataByPeerId[peerId] ?? {}
    if (!storageId || isEphemeral) return
    const key = `${documentId}\u0000${storageId}`
    clearTimeout(pending.get(key))
    const save = () => {
      pending.delete(key)
      void storage.saveSyncState(documentId, storageId, syncState).catch(() => {})
    }
    pending.set(key, setTimeout(save, delayMs))
  }
  repo.synchronizer.on("sync-state", listener)
  return () => repo.synchronizer.off("sync-state", listener)
}
