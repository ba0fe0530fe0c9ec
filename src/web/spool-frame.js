/**
 * @module spool-frame
 * Chunk frames of the Spool wire protocol, version 1 (the protocol document, src/protocol.md):
 *
 *   offset 0  u8   version = 1
 *   offset 1  u8   flags: bit 0 = the chunk starts a new recorder stream
 *   offset 2  u32  chunk index, big-endian
 *   offset 6  u32  CRC-32C of the payload, big-endian
 *   offset 10 ...  payload (1..max_chunk_bytes bytes)
 */

export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 10;
/** Flag bit 0: the payload carries a container header (chunk 0, or first chunk of a new MediaRecorder). */
export const FLAG_NEW_STREAM = 0x01;

// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, one 256-entry table.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32C of a byte array, as the server checks it.
 * @param {Uint8Array} bytes
 * @returns {number} unsigned 32-bit checksum
 */
export function crc32c(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * Builds the binary frame for one chunk.
 * @param {number} index chunk index (u32)
 * @param {number} flags FLAG_NEW_STREAM or 0
 * @param {Uint8Array} payload the chunk's bytes, not empty
 * @returns {ArrayBuffer} header followed by payload, ready for `WebSocket.send`
 */
export function encodeFrame(index, flags, payload) {
  if (!Number.isInteger(index) || index < 0 || index > 0xffffffff) {
    throw new RangeError(`chunk index out of range: ${index}`);
  }
  if (payload.length === 0) throw new RangeError("a chunk payload cannot be empty");
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, FRAME_VERSION);
  view.setUint8(1, flags & FLAG_NEW_STREAM);
  view.setUint32(2, index, false);
  view.setUint32(6, crc32c(payload), false);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame.buffer;
}

/**
 * Reads a frame back (for tests and debugging; the client itself only encodes).
 * @param {ArrayBuffer | Uint8Array} frame
 * @returns {{ version: number, flags: number, index: number, crc: number, payload: Uint8Array }}
 */
export function decodeFrame(frame) {
  const bytes = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  if (bytes.length <= FRAME_HEADER_BYTES) throw new RangeError("frame too short");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    version: view.getUint8(0),
    flags: view.getUint8(1),
    index: view.getUint32(2, false),
    crc: view.getUint32(6, false),
    payload: bytes.subarray(FRAME_HEADER_BYTES),
  };
}
