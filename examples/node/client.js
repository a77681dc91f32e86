#!/usr/bin/env node
'use strict';
/**
 * A peer-grpc client in Node.js, step by step: the whole protocol with nothing but
 * @grpc/grpc-js, @grpc/proto-loader and the contract in ../../protos.
 *
 *   node client.js [--target HOST:PORT] [--peer-id ID] [--payload JSON] [--timeout SECONDS]
 *
 * Against `make serve` (127.0.0.1:50051, the default target) it:
 *
 *   1. opens a session with Handshake;
 *   2. makes sequenced calls, Describe, Ping x3, Heartbeat and Status, each carrying the
 *      `peer-session-id` and `peer-sequence` (1, 2, 3, ...) request metadata, and
 *      reads the server's own `peer-sequence` from each response's trailers;
 *   3. delegates an `echo` task and prints its result;
 *   4. replays an old sequence number on purpose and decodes the ABORTED error's
 *      SEQUENCE_ERROR (see rich_status.js);
 *   5. ends the session with Terminate.
 *
 * Human-readable progress goes to stderr. At the end, stdout gets ONE line of JSON
 * summing up what happened (the project's tests parse it). Any unexpected failure
 * exits with status 1.
 */

const path = require('path');
const { parseArgs } = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { decodeSequenceError, decodeStatus } = require('./rich_status');
const { toStruct, fromStruct } = require('./struct');

/** Where the contract lives: this repository's protos/ directory. */
const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

/** Request metadata keys of every call but Handshake (src/peer_grpc/metadata.py). */
const SESSION_ID_KEY = 'peer-session-id';
const SEQUENCE_KEY = 'peer-sequence'; // also the response key of the server's number

function log(...parts) {
  console.error('[peer-grpc node]', ...parts);
}

/** The command line, with defaults. */
function parseArguments() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: '127.0.0.1:50051' },
      'peer-id': { type: 'string', default: 'node-example' },
      payload: { type: 'string', default: '{"hello": "from node", "numbers": [1, 2, 3]}' },
      timeout: { type: 'string', default: '10' },
    },
  });
  const payload = JSON.parse(values.payload);
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new Error('--payload must be a JSON object');
  }
  return {
    target: values.target,
    peerId: values['peer-id'],
    payload,
    timeoutSeconds: Number(values.timeout),
  };
}

/**
 * The PeerService client constructor, from peer.proto at run time (no generated code).
 */
function loadPeerService() {
  const definition = protoLoader.loadSync('peer/v1/peer.proto', {
    includeDirs: [PROTOS], // like protoc -I; google/protobuf/*.proto come with proto-loader
    keepCase: true, // field names as in the .proto: session_id, not sessionId
    longs: String, // uint64 fields as decimal strings: no precision lost above 2^53
    enums: String, // enum values by name: 'TASK_STATE_COMPLETED'
    defaults: true, // fields the server left at their default are present anyway
    oneofs: true, // google.protobuf.Value's virtual `kind` names the member set
  });
  return grpc.loadPackageDefinition(definition).peer.v1.PeerService;
}

/**
 * One unary call as a promise of {response, trailers}.
 *
 * @grpc/grpc-js calls the callback with the response, and emits the trailing
 * metadata in a separate 'status' event just after it. peer-grpc puts its
 * `peer-sequence` in those trailers, so wait for both. A failed call rejects with
 * a ServiceError whose `metadata` holds the trailers (and the rich status).
 */
function unary(client, method, request, metadata, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    let response;
    let answered = false;
    let trailers = null;
    const settle = () => {
      if (answered && trailers !== null) {
        resolve({ response, trailers });
      }
    };
    const options = { deadline: Date.now() + timeoutSeconds * 1000 };
    const call = client[method](request, metadata, options, (error, value) => {
      if (error) {
        reject(error);
        return;
      }
      response = value;
      answered = true;
      settle();
    });
    call.on('status', (status) => {
      trailers = status.metadata;
      settle();
    });
  });
}

/** The server's `peer-sequence` in some metadata, as a BigInt, or null if absent. */
function serverSequence(metadata) {
  const values = metadata ? metadata.get(SEQUENCE_KEY) : [];
  return values.length > 0 ? BigInt(values[0].toString()) : null;
}

/**
 * A session: its id, and the sequence number of its next call.
 *
 * Sequences are uint64, so they are BigInt here, and travel as decimal strings.
 * The server must see exactly the next number on each call (strict mode, the
 * default), so send one sequenced call at a time, as this example does.
 */
class PeerSession {
  constructor(client, handshake, timeoutSeconds) {
    this.client = client;
    this.sessionId = handshake.session_id;
    this.nextSequence = BigInt(handshake.next_sequence); // always 1 after a Handshake
    this.timeoutSeconds = timeoutSeconds;
    /** The server's `peer-sequence` of every answered call, in order. */
    this.serverSequences = [];
    /** The `peer-sequence` of every call the server admitted, in order. */
    this.sentSequences = [];
  }

  /** The request metadata of a sequenced call. */
  metadata(sequence) {
    const metadata = new grpc.Metadata();
    metadata.set(SESSION_ID_KEY, this.sessionId);
    metadata.set(SEQUENCE_KEY, sequence.toString()); // decimal text: "1", "2", ...
    return metadata;
  }

  /**
   * Make a sequenced call under the session's next number.
   *
   * The number is spent when the server admitted the call, which it says by
   * answering with its own `peer-sequence`, even when the method then failed. A
   * call refused before admission (bad metadata, an ended session, an out-of-order
   * sequence) spent nothing, and the next call reuses its number.
   *
   * Not shown: after UNAVAILABLE or DEADLINE_EXCEEDED the call's fate is unknown.
   * Resending it with the SAME sequence and the SAME request bytes is always safe:
   * the server answers a resend from its record of the original, without running
   * the method twice ("Retry is not replay" in the README).
   */
  async call(method, request) {
    const sequence = this.nextSequence;
    try {
      const { response, trailers } = await unary(
        this.client,
        method,
        request,
        this.metadata(sequence),
        this.timeoutSeconds,
      );
      this.admitted(sequence, serverSequence(trailers));
      return response;
    } catch (error) {
      const answered = serverSequence(error.metadata);
      if (answered !== null) {
        this.admitted(sequence, answered); // admitted, then failed: the number is spent
      }
      throw error;
    }
  }

  admitted(sequence, serverNumber) {
    this.nextSequence = sequence + 1n;
    this.sentSequences.push(sequence);
    if (serverNumber !== null) {
      this.serverSequences.push(serverNumber);
    }
  }

  /**
   * Send a call under a number of our choosing, bypassing the session's count:
   * only for showing what the server does with a bad one.
   */
  callWithSequence(method, request, sequence) {
    return unary(this.client, method, request, this.metadata(sequence), this.timeoutSeconds);
  }
}

/** A readable one-line description of a failed call. */
function describeError(error) {
  const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code);
  const status = decodeStatus(error);
  const reasons = status
    ? status.details.filter((d) => d.type === 'google.rpc.ErrorInfo').map((d) => d.message.reason)
    : [];
  return `${name || error.code}: ${error.details || error.message}${reasons.length ? ` (${reasons.join(', ')})` : ''}`;
}

async function run(client, args) {
  // 1. Handshake: no session metadata. The response names the session, the first
  //    sequence to send (1) and how often to heartbeat. Its session_token resumes
  //    the session after a restart (HandshakeRequest.resume); it is a secret, and
  //    later calls do not need it: they carry only the session id and a sequence.
  const { response: handshake } = await unary(
    client,
    'Handshake',
    { peer_id: args.peerId, protocol_versions: ['1.0'], capabilities: ['tasks'] },
    new grpc.Metadata(),
    args.timeoutSeconds,
  );
  const session = new PeerSession(client, handshake, args.timeoutSeconds);
  log(
    `handshake: session ${session.sessionId.slice(0, 8)}..., protocol ${handshake.protocol_version},`,
    `${handshake.sequence_mode}, next sequence ${handshake.next_sequence},`,
    `heartbeat every ${handshake.heartbeat_interval ? handshake.heartbeat_interval.seconds : '?'} s`,
  );

  // 2. Sequenced calls. First, what this peer can do: Describe names every task
  //    type with the JSON Schemas of its payload and result, and the limits to
  //    respect. A real client heartbeats on a timer, every
  //    handshake.heartbeat_interval, for as long as it keeps the session.
  const described = await session.call('Describe', {});
  const taskTypes = described.task_types.map((taskType) => taskType.name);
  log(`describe: ${described.server_peer_id} (peer-grpc ${described.server_version})`,
    `runs ${taskTypes.join(', ')}; requests up to ${described.limits.max_request_bytes} bytes`);
  let pings = 0;
  for (let i = 1; i <= 3; i += 1) {
    const payload = Buffer.from(`ping ${i}`);
    const pong = await session.call('Ping', { payload });
    if (!Buffer.from(pong.payload).equals(payload)) {
      throw new Error(`Ping ${i} came back with another payload`);
    }
    pings += 1;
    log(`ping ${i}: sent peer-sequence ${session.sentSequences.at(-1)},`,
      `server peer-sequence ${session.serverSequences.at(-1)}`);
  }
  const heartbeat = await session.call('Heartbeat', {});
  log(`heartbeat: the session now expires at ${heartbeat.expires_at.seconds} (Unix seconds)`);
  const status = await session.call('Status', {});
  log(`status: server ${status.server_peer_id} ${status.server_version},`,
    `session ${status.session.state}, expects sequence ${status.session.expected_sequence}`);

  // 3. Delegate a task. payload is a google.protobuf.Struct (see struct.js). The
  //    call waits for the task's end unless return_immediately is set; echo ends
  //    at once, COMPLETED with its payload as its result.
  const delegated = await session.call('DelegateTask', {
    task_type: 'echo',
    payload: toStruct(args.payload),
  });
  const task = delegated.task;
  const result = fromStruct(task.result);
  log(`task ${task.task_id} (${task.task_type}): ${task.state}, result ${JSON.stringify(result)}`);

  // 4. A replay, on purpose: send sequence 2 again. Not with the same method and
  //    bytes as the original (that would be a *resend*, answered from the server's
  //    record with the original response), but with a different payload: a
  //    different message reusing a number. The server refuses it with ABORTED and
  //    a SequenceError detail; the rejected call changes nothing in the session.
  const replayed = 2n;
  let sequenceError = null;
  try {
    await session.callWithSequence('Ping', { payload: Buffer.from('replayed') }, replayed);
  } catch (error) {
    sequenceError = decodeSequenceError(error);
    if (sequenceError === null) {
      throw error; // some other failure: not what this step expects
    }
    log(`replayed sequence ${replayed}: ${describeError(error)};`,
      `${sequenceError.kind}, expected ${sequenceError.expected},`,
      `received ${sequenceError.received}`);
  }
  if (sequenceError === null) {
    throw new Error(`the server accepted replayed sequence ${replayed}`);
  }
  // The SequenceError says where to go on from: a client that lost count would
  // set session.nextSequence = sequenceError.expected. Here the count is right.
  if (sequenceError.expected !== session.nextSequence) {
    throw new Error(`the server expects ${sequenceError.expected}, the client ${session.nextSequence}`);
  }

  // 5. Terminate. The session is gone from then on (its running tasks are
  //    canceled); a later call on it fails UNAUTHENTICATED, SESSION_TERMINATED.
  const terminated = await session.call('Terminate', { reason: 'node example done' });
  log(`terminate: ${terminated.state}`);

  return {
    session_id_prefix: session.sessionId.slice(0, 8),
    protocol_version: handshake.protocol_version,
    sequence_mode: handshake.sequence_mode,
    task_types: taskTypes,
    pings,
    client_sequences: session.sentSequences.map(Number),
    server_sequences: session.serverSequences.map(Number),
    status: {
      session_state: status.session.state,
      expected_sequence: Number(status.session.expected_sequence),
    },
    task: {
      task_id: task.task_id,
      task_type: task.task_type,
      state: task.state,
      result,
    },
    sequence_error: {
      expected: Number(sequenceError.expected),
      received: Number(sequenceError.received),
      kind: sequenceError.kind,
      reason: sequenceError.reason,
      domain: sequenceError.domain,
    },
    terminated: terminated.state === 'SESSION_STATE_TERMINATED',
  };
}

async function main() {
  const args = parseArguments();
  const PeerService = loadPeerService();
  // Plaintext, for loopback development. Against a TLS server use
  // grpc.credentials.createSsl(caPem, keyPem, certPem) (the key and certificate
  // for mutual TLS only).
  const client = new PeerService(args.target, grpc.credentials.createInsecure());
  try {
    const summary = await run(client, args);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    client.close();
  }
}

main().catch((error) => {
  log(error.code !== undefined ? describeError(error) : error.stack || String(error));
  process.exitCode = 1;
});
