'use strict';
/**
 * Decoding peer-grpc's rich errors in Node.js.
 *
 * Every error the server sends carries, besides its status code and message, a
 * `google.rpc.Status` serialized into the binary trailer `grpc-status-details-bin`.
 * Its `details` are `google.protobuf.Any` messages: a `google.rpc.ErrorInfo`
 * (domain "peer.v1" and a machine-readable `reason`) and, for some errors, a typed
 * detail of the contract's own. An out-of-order call fails with ABORTED and these
 * two details:
 *
 *   google.rpc.ErrorInfo  {reason: "SEQUENCE_ERROR", domain: "peer.v1", metadata: {...}}
 *   peer.v1.SequenceError {session_id, expected_sequence, received_sequence, kind, ...}
 *
 * @grpc/grpc-js hands that trailer over untouched in `error.metadata` (a
 * grpc.Metadata holding the trailing metadata), but it does not decode it. This
 * module does, with protobufjs and three .proto files:
 *
 *   - google/rpc/status.proto and google/rpc/error_details.proto, from the npm
 *     package google-proto-files (Google's own copy of the googleapis protos);
 *   - peer/v1/peer.proto, the contract, from this repository's protos/ directory.
 *
 * To reuse it elsewhere, copy this file and point PEER_PROTOS at your copy of
 * protos/ (the Python package ships one too, as peer_grpc/_proto/peer/v1/peer.proto).
 */

const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');
const { getProtoPath } = require('google-proto-files');

/** The directory that holds peer/v1/peer.proto. */
const PEER_PROTOS = path.resolve(__dirname, '..', '..', 'protos');
/** The directory that holds google/rpc/status.proto (getProtoPath() is its google/). */
const GOOGLE_PROTOS = path.dirname(getProtoPath());

/** The binary trailer that carries the serialized google.rpc.Status. */
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
/** gRPC's status code ABORTED: the code of every SEQUENCE_ERROR. */
const ABORTED = 10;

let cachedRoot = null;

/**
 * The protobufjs types of the three files, loaded once. Imports are looked up in
 * `includeDirs` in turn, like protoc's -I; google/protobuf/*.proto (Any, Duration,
 * ...) come bundled with protobufjs.
 */
function protoRoot(includeDirs = [PEER_PROTOS, GOOGLE_PROTOS]) {
  if (cachedRoot !== null) {
    return cachedRoot;
  }
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) {
        return candidate;
      }
    }
    return target; // not found: loadSync then fails with the file's name
  };
  // keepCase: field names as in the .proto files (type_url, expected_sequence).
  root.loadSync(
    ['google/rpc/status.proto', 'google/rpc/error_details.proto', 'peer/v1/peer.proto'],
    { keepCase: true },
  );
  cachedRoot = root;
  return root;
}

/** How decoded messages become plain objects: uint64 as strings, enums by name. */
const TO_OBJECT = { longs: String, enums: String, defaults: true };

/**
 * The google.rpc.Status of a failed call, its details unpacked, or null when the
 * error carries none (an error raised by gRPC itself, such as a connection failure).
 *
 * @param {{metadata?: {get(key: string): Array<string|Buffer>}}} error a @grpc/grpc-js
 *   ServiceError (the error a callback or a rejected promise receives).
 * @returns {null | {code: number, message: string,
 *   details: Array<{type: string, message: object | null}>}} each detail with its
 *   full type name (e.g. "google.rpc.ErrorInfo") and its fields, or message null for
 *   a type this module has no .proto of.
 */
function decodeStatus(error) {
  const values = error && error.metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
  if (values.length === 0 || !Buffer.isBuffer(values[0])) {
    return null;
  }
  const root = protoRoot();
  const Status = root.lookupType('google.rpc.Status');
  const status = Status.decode(values[0]);
  const details = status.details.map((any) => {
    // An Any's type_url is "type.googleapis.com/<full message name>".
    const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let messageType = null;
    try {
      messageType = root.lookupType(type);
    } catch {
      return { type, message: null };
    }
    return { type, message: messageType.toObject(messageType.decode(any.value), TO_OBJECT) };
  });
  return { code: status.code, message: status.message, details };
}

/**
 * The SEQUENCE_ERROR a failed call carries, or null when the error is anything else.
 *
 * Sequences come back as BigInt, the type a uint64 needs: `expected` is the number
 * to send next (a rejected call spent none), `received` the one the call carried.
 *
 * @param {object} error a @grpc/grpc-js ServiceError.
 * @returns {null | {expected: bigint, received: bigint, kind: string, sessionId: string,
 *   outsideWindow: boolean, replayWindow: number, reason: string | null,
 *   domain: string | null, errorInfoMetadata: object}}
 *   kind is "SEQUENCE_ERROR_KIND_GAP" (the call was ahead: calls are missing) or
 *   "SEQUENCE_ERROR_KIND_REPLAY" (it was behind: that number was used already);
 *   reason and domain come from the google.rpc.ErrorInfo beside it ("SEQUENCE_ERROR",
 *   "peer.v1").
 */
function decodeSequenceError(error) {
  if (!error || error.code !== ABORTED) {
    return null;
  }
  const status = decodeStatus(error);
  if (status === null) {
    return null;
  }
  const sequenceError = status.details.find((d) => d.type === 'peer.v1.SequenceError');
  if (!sequenceError || sequenceError.message === null) {
    return null;
  }
  const errorInfo = status.details.find((d) => d.type === 'google.rpc.ErrorInfo');
  const info = errorInfo ? errorInfo.message : null;
  const detail = sequenceError.message;
  return {
    expected: BigInt(detail.expected_sequence),
    received: BigInt(detail.received_sequence),
    kind: detail.kind,
    sessionId: detail.session_id,
    outsideWindow: detail.outside_window,
    replayWindow: detail.replay_window,
    reason: info ? info.reason : null,
    domain: info ? info.domain : null,
    errorInfoMetadata: info ? info.metadata : {},
  };
}

module.exports = {
  STATUS_DETAILS_KEY,
  decodeStatus,
  decodeSequenceError,
  protoRoot,
};
