// feedback.mjs calls feedback.v1.FeedbackService from Node.js with nothing but the contract in the
// repository's protos/ directory: no generated code, no Python. It records an interaction, rates
// it, logs an event, reads the stats back, then sends a rating the server must refuse and decodes
// the google.rpc.Status details of the refusal.
//
// Each step prints one JSON line: {"step": ..., "ok": true|false, ...}. The process exits 1 when a
// step does not go as expected (the failing step's line says why), 0 otherwise.
//
// Environment:
//   FEEDBACK_ADDRESS      host:port of the server (default 127.0.0.1:50051)
//   FEEDBACK_API_KEY      API key, sent as `authorization: Bearer <key>` on every call
//   FEEDBACK_TLS=1        TLS, trusting the system's roots unless FEEDBACK_CA_FILE is set
//   FEEDBACK_CA_FILE      PEM certificate(s) of the CA to trust; implies TLS
//   FEEDBACK_CLIENT_CERT  PEM client certificate for mutual TLS (with FEEDBACK_CLIENT_KEY)
//   FEEDBACK_CLIENT_KEY   PEM private key of FEEDBACK_CLIENT_CERT
//   FEEDBACK_PROTOS_DIR   the protos/ directory, when this file is copied out of the repository

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const PROTOS_DIR =
  process.env.FEEDBACK_PROTOS_DIR || fileURLToPath(new URL("../../../protos", import.meta.url));
const ADDRESS = process.env.FEEDBACK_ADDRESS || "127.0.0.1:50051";
const API_KEY = process.env.FEEDBACK_API_KEY || "";
const DEADLINE_MS = 10_000;

// keepCase: field names exactly as protos/ spells them (conversation_id, not conversationId), so
// the contract's comments, grpcurl -d and the Python client read the same. longs: String keeps
// int64 ids and counts exact past 2^53, as the proto3 JSON mapping does.
const LOADER_OPTIONS = {
  includeDirs: [PROTOS_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};
const TO_OBJECT = { longs: String, enums: String, defaults: false };

/** The FeedbackService client constructor, from protos/feedback/v1/feedback_service.proto. */
function loadFeedbackService() {
  const definition = protoLoader.loadSync("feedback/v1/feedback_service.proto", LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).feedback.v1.FeedbackService;
}

/** google.rpc.Status and the error details, from the vendored googleapis files in protos/. */
function loadErrorTypes() {
  // proto-loader hands out no message decoders, so the trailer is decoded with protobufjs, the
  // library proto-loader itself parses with (google/protobuf/any.proto and duration.proto are
  // bundled with it).
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(PROTOS_DIR, target);
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
  return root;
}

/** Plaintext, TLS or mutual TLS, from the FEEDBACK_* variables. */
function channelCredentials() {
  const caFile = process.env.FEEDBACK_CA_FILE;
  const certFile = process.env.FEEDBACK_CLIENT_CERT;
  const keyFile = process.env.FEEDBACK_CLIENT_KEY;
  if (Boolean(certFile) !== Boolean(keyFile)) {
    throw new Error("FEEDBACK_CLIENT_CERT and FEEDBACK_CLIENT_KEY must be set together");
  }
  const tls = /^(1|true|yes|on)$/i.test(process.env.FEEDBACK_TLS || "");
  if (!tls && !caFile && !certFile) {
    return grpc.credentials.createInsecure();
  }
  return grpc.credentials.createSsl(
    caFile ? readFileSync(caFile) : null, // null: Node's built-in root certificates
    keyFile ? readFileSync(keyFile) : null,
    certFile ? readFileSync(certFile) : null,
  );
}

/** Fresh metadata for one call. Call credentials (createFromMetadataGenerator) would be dropped
 * on a plaintext channel, by grpc-js as by every gRPC library, so the key goes in per call. */
function callMetadata() {
  const metadata = new grpc.Metadata();
  if (API_KEY) {
    metadata.set("authorization", `Bearer ${API_KEY}`);
  }
  return metadata;
}

const errorTypes = loadErrorTypes();
const Status = errorTypes.lookupType("google.rpc.Status");
const FeedbackService = loadFeedbackService();
const client = new FeedbackService(ADDRESS, channelCredentials());

/** One unary call with the key and a deadline, as a promise. */
function call(method, request) {
  return new Promise((resolve, reject) => {
    const options = { deadline: Date.now() + DEADLINE_MS };
    client[method](request, callMetadata(), options, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/** An Any detail as its proto3 JSON form, {"@type": url, ...fields}, when its type is known. */
function unpackAny(any) {
  const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
  const type = errorTypes.lookup(typeName);
  if (!(type instanceof protobuf.Type)) {
    return { "@type": any.type_url, value_base64: Buffer.from(any.value).toString("base64") };
  }
  return { "@type": any.type_url, ...type.toObject(type.decode(any.value), TO_OBJECT) };
}

/** A gRPC error as JSON fields: its code, message and the details of its google.rpc.Status,
 * which the server sends binary-encoded in the grpc-status-details-bin trailer. */
function describeError(error) {
  if (typeof error.code !== "number" || !(error.metadata instanceof grpc.Metadata)) {
    return { error: String(error?.stack || error) };
  }
  const [encoded] = error.metadata.get("grpc-status-details-bin"); // a Buffer: -bin is binary
  const status = encoded ? Status.decode(encoded) : null;
  return {
    code: error.code,
    code_name: grpc.status[error.code],
    message: error.details,
    details: status ? status.details.map(unpackAny) : [],
  };
}

function print(line) {
  console.log(JSON.stringify(line));
}

class StepFailed extends Error {}

/** Run one step and print its line; a failure is printed, then stops the run. */
async function step(name, action) {
  try {
    const fields = await action();
    print({ step: name, ok: true, ...fields });
    return fields;
  } catch (error) {
    print({ step: name, ok: false, ...describeError(error) });
    throw new StepFailed(name);
  }
}

/** Run one call that must fail with `expectedCode`, and print its decoded error. */
async function stepExpectingError(name, expectedCode, action) {
  let response;
  try {
    response = await action();
  } catch (error) {
    const fields = describeError(error);
    print({ step: name, ok: fields.code === expectedCode, ...fields });
    if (fields.code !== expectedCode) {
      throw new StepFailed(name);
    }
    return fields;
  }
  print({ step: name, ok: false, error: "the call succeeded", response });
  throw new StepFailed(name);
}

async function main() {
  // Fresh ids, so the example can run many times against one server: message_id is unique
  // across the service. request_id makes each write idempotent (AIP-155): reuse it on a retry.
  const run = randomUUID();
  const conversation_id = `node-${run}`;
  const message_id = `node-${run}-m1`;
  const user_id = `node-user-${run}`;

  await step("RecordInteraction", async () => {
    const { interaction } = await call("RecordInteraction", {
      conversation_id,
      message_id,
      user_id,
      model: "gpt-4o-mini",
      input_text: "How do I rotate an API key?", // only its SHA-256 is stored
      output_text: "Create a new key, deploy it, then revoke the old one.",
      latency_ms: 850,
      prompt_tokens: 12,
      completion_tokens: 48,
      request_id: randomUUID(),
    });
    return { interaction_id: interaction.id, conversation_id, message_id, user_id };
  });

  await step("SubmitFeedback", async () => {
    const { feedback } = await call("SubmitFeedback", {
      conversation_id,
      message_id,
      score: 5,
      text: "Clear and concise",
      request_id: randomUUID(),
    });
    return {
      feedback_id: feedback.id,
      interaction_id: feedback.interaction_id,
      score: feedback.score,
      user_id: feedback.user_id, // taken from the interaction
      model: feedback.model,
    };
  });

  await step("LogEvent", async () => {
    const { event } = await call("LogEvent", {
      user_id,
      event_type: "answer_copied",
      // google.protobuf.Struct in its protobuf shape: proto-loader has no JSON shortcut for it.
      details: { fields: { message_id: { string_value: message_id } } },
      request_id: randomUUID(),
    });
    return { event_id: event.id, event_type: event.event_type };
  });

  await step("GetStats", async () => {
    const stats = await call("GetStats", { user_id });
    return {
      feedback: {
        total_count: stats.feedback.total_count,
        score5_count: stats.feedback.score5_count,
        avg_score: stats.feedback.avg_score,
      },
      interactions: { total_count: stats.interactions.total_count },
      events: { total_count: stats.events.total_count, type_counts: stats.events.type_counts },
    };
  });

  await stepExpectingError("SubmitFeedbackInvalid", grpc.status.INVALID_ARGUMENT, () =>
    call("SubmitFeedback", { conversation_id, message_id, score: 9 }),
  );
}

try {
  await main();
} catch (error) {
  if (!(error instanceof StepFailed)) {
    print({ step: "main", ok: false, ...describeError(error) });
  }
  process.exitCode = 1;
} finally {
  client.close();
}
