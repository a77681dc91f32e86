'use strict';
/**
 * Plain JSON <-> google.protobuf.Struct, as @grpc/proto-loader represents it.
 *
 * A task's payload and result are Structs: JSON objects. proto-loader does not
 * convert them for you; on the wire a Struct is a map of field name to
 * google.protobuf.Value, and a Value is a oneof (`kind`) of null, number, string,
 * bool, Struct and ListValue. These helpers assume the loader option oneofs (the
 * virtual `kind` field naming which member of the oneof is set).
 *
 * Mind the field names: camelCase (stringValue, structValue), even with keepCase.
 * protobufjs bundles google/protobuf/*.proto (Struct, Timestamp, Duration, ...) as
 * ready-made definitions whose names are camelCase already, and keepCase only
 * applies to .proto files it parses, such as peer.proto.
 */

/** A JSON value as a google.protobuf.Value. */
function toValue(value) {
  if (value === null || value === undefined) {
    return { nullValue: 'NULL_VALUE' };
  }
  if (Array.isArray(value)) {
    return { listValue: { values: value.map(toValue) } };
  }
  switch (typeof value) {
    case 'number':
      return { numberValue: value };
    case 'string':
      return { stringValue: value };
    case 'boolean':
      return { boolValue: value };
    case 'object':
      return { structValue: toStruct(value) };
    default:
      throw new TypeError(`cannot put a ${typeof value} in a google.protobuf.Value`);
  }
}

/** A JSON object as a google.protobuf.Struct. */
function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    fields[key] = toValue(value);
  }
  return { fields };
}

/** A google.protobuf.Value, as decoded by proto-loader, as a JSON value. */
function fromValue(value) {
  switch (value.kind) {
    case 'nullValue':
      return null;
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return fromStruct(value.structValue);
    case 'listValue':
      return (value.listValue.values || []).map(fromValue);
    default:
      return null; // no member set: protobuf's JSON mapping has no such value
  }
}

/** A google.protobuf.Struct, as decoded by proto-loader, as a JSON object (null: none). */
function fromStruct(struct) {
  if (!struct) {
    return null;
  }
  const object = {};
  for (const [key, value] of Object.entries(struct.fields || {})) {
    object[key] = fromValue(value);
  }
  return object;
}

module.exports = { toStruct, fromStruct, toValue, fromValue };
