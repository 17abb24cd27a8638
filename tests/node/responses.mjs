// Runs one openai SDK (Node) Responses API call against a sluice server's /v1/responses,
// the way users write it, and prints one JSON document to stdout: the request bodies the
// SDK sent and what the SDK returned. Driven by tests/e2e/test_responses_npm.py, which
// checks the shapes strictly.
//
//   node responses.mjs <call> <server url>
//
// Calls: create (whole), create-stream (`stream: true`, every event), stream-helper
// (`responses.stream` with its `.on` listeners and `finalResponse()`), follow-up
// (`previous_response_id`, retrieve, `inputItems.list`, delete, then the 404s) and
// tool-round-trip (a required function call, its output sent back by
// `previous_response_id` and again as the whole conversation, each answered in text).
import OpenAI from "openai";

const [call, url] = process.argv.slice(2);
// Small answers, greedy; a function call's JSON takes more tokens than a short answer.
const settings = { model: "tgi", temperature: 0, max_output_tokens: 40 };
const TOOL_TOKENS = 60;
const WEATHER = {
  type: "function", name: "get_weather", description: "The current weather in a city", strict: true,
  parameters: {
    type: "object", additionalProperties: false, required: ["city", "unit"],
    properties: { city: { type: "string", maxLength: 30 }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
  },
};
const QUESTION = [{ role: "user", content: "What is the weather like in Paris today?" }];

// Every request the SDK sends, in order, so the test sees what went over the wire.
const requests = [];
async function recordingFetch(input, init) {
  const { pathname, search } = new URL(String(input));
  const body = init?.body ? JSON.parse(init.body) : null;
  requests.push({ method: init?.method ?? "GET", path: pathname + search, body });
  return fetch(input, init);
}
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, fetch: recordingFetch });

/** The error a call fails with, as the SDK reports it (the test expects NotFoundError). */
async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (error) {
    return { name: error.constructor.name, status: error.status, notFound: error instanceof OpenAI.NotFoundError,
             error: error.error ?? null };
  }
}

async function createStream() {
  const stream = await client.responses.create({ ...settings, input: "Say hello.", stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  return { events };
}

async function streamHelper() {
  const stream = client.responses.stream({ ...settings, input: "Say hello." });
  const types = [], deltas = [], snapshots = [];
  stream.on("event", (event) => types.push(event.type));
  stream.on("response.output_text.delta", (event) => {
    deltas.push(event.delta);
    snapshots.push(event.snapshot);
  });
  const final = await stream.finalResponse();
  return { types, deltas, snapshots, final };
}

async function followUp() {
  const first = await client.responses.create({ ...settings, input: "My name is Olivier.", metadata: { turn: "1" } });
  const second = await client.responses.create({
    ...settings, input: "What is my name?", previous_response_id: first.id });
  const retrieved = await client.responses.retrieve(second.id);
  const page = await client.responses.inputItems.list(second.id);  // the first page: newest first
  // Two a page, oldest first: the SDK follows `after` through every page.
  const items = [];
  for await (const item of client.responses.inputItems.list(second.id, { limit: 2, order: "asc" })) items.push(item);
  const deleted = await client.responses.delete(second.id);
  return {
    first, second, retrieved, page: page.body, items, deleted: deleted ?? null,
    retrieveDeleted: await failure(client.responses.retrieve(second.id)),
    listDeleted: await failure(client.responses.inputItems.list(second.id)),
    firstStillThere: (await client.responses.retrieve(first.id)).id,
  };
}

async function toolRoundTrip() {
  const tools = [WEATHER];
  const called = await client.responses.create({
    ...settings, max_output_tokens: TOOL_TOKENS, input: QUESTION, tools, tool_choice: "required" });
  const functionCall = called.output.find((item) => item.type === "function_call");
  if (!functionCall) throw new Error(`no function_call item: ${JSON.stringify(called.output)}`);
  const { city, unit } = JSON.parse(functionCall.arguments);
  const result = { type: "function_call_output", call_id: functionCall.call_id,
                   output: JSON.stringify({ city, unit, temperature: unit === "celsius" ? 21 : 70 }) };
  // The result, answered in text: once continuing the stored conversation, once sent whole.
  const answer = { ...settings, tools, tool_choice: "none" };
  const chained = await client.responses.create({ ...answer, input: [result], previous_response_id: called.id });
  const whole = await client.responses.create({ ...answer, input: [...QUESTION, ...called.output, result] });
  const items = [];
  for await (const item of client.responses.inputItems.list(chained.id, { order: "asc" })) items.push(item);
  return { called, result, chained, whole, items };
}

async function run() {
  if (call === "create") {
    return { response: await client.responses.create({ ...settings, input: "What is the capital of France?",
                                                       instructions: "Answer in one sentence." }) };
  } else if (call === "create-stream") {
    return createStream();
  } else if (call === "stream-helper") {
    return streamHelper();
  } else if (call === "follow-up") {
    return followUp();
  } else if (call === "tool-round-trip") {
    return toolRoundTrip();
  }
  throw new Error(`unknown call ${call}`);
}

run().then((result) => {
  process.stdout.write(JSON.stringify({ requests, ...result }));
}).catch((error) => {
  // What a user would see, plus the HTTP details the SDK keeps (APIError).
  console.error(`${error.name}: ${error.message}`);
  if (error.status) console.error(`HTTP ${error.status}: ${JSON.stringify(error.error)}`);
  console.error(JSON.stringify(requests));
  process.exit(1);
});
