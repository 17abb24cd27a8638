// Runs one Vercel AI SDK call (`ai` with `@ai-sdk/openai-compatible`) against a sluice
// server's /v1/chat/completions, the way users write it, and prints one JSON document to
// stdout: the request bodies the SDK sent and what the SDK returned. Driven by
// tests/e2e/test_ai_sdk.py, which checks them against its own JSON Schemas.
//
//   node ai_sdk.mjs <call> <server url> [<schema name>]
//
// Calls: object <nested|array|enum|required> (generateObject with a zod schema: OpenAI's
// response_format json_schema), any-object (generateObject with output "no-schema":
// json_object), tool-steps (generateText with an executed tool, two steps) and
// tool-stream (the same through streamText, its fullStream read part by part).
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [call, url, schemaName] = process.argv.slice(2);
const settings = { maxOutputTokens: 200, temperature: 0, maxRetries: 0 };

// The same shapes tests/e2e/test_ai_sdk.py writes in JSON Schema; strings and arrays are
// bounded so that a small model's answer completes well within maxOutputTokens.
const SCHEMAS = {
  nested: z.object({
    name: z.string().max(30),
    age: z.number().int().min(0).max(120),
    address: z.object({ city: z.string().max(30), country: z.string().max(30) }),
  }),
  array: z.object({
    fruits: z.array(z.object({ name: z.string().max(20), count: z.number().int().min(0).max(99) })).min(1).max(3),
  }),
  enum: z.object({
    color: z.enum(["red", "green", "blue"]),
    size: z.enum(["small", "medium", "large"]),
  }),
  required: z.object({
    id: z.number().int().min(1).max(9999),
    title: z.string().max(40),
    done: z.boolean(),
    note: z.string().max(20).optional(),
  }),
};
const PROMPTS = {
  nested: "Describe a person who lives in Paris as JSON.",
  array: "List some fruits in a basket as JSON.",
  enum: "Pick a color and a size for a T-shirt, as JSON.",
  required: "Describe a task from a to-do list as JSON.",
};
const QUESTION = "What is the weather like in Paris today?";

// Every request body the SDK sends, in order, so the test sees what went over the wire.
const requests = [];
async function recordingFetch(input, init) {
  requests.push(JSON.parse(init.body));
  return fetch(input, init);
}
const sluice = createOpenAICompatible({
  name: "sluice", baseURL: `${url}/v1`, apiKey: "unused", supportsStructuredOutputs: true, fetch: recordingFetch,
});
const model = sluice.chatModel("tgi");

// The tool's execute runs in this process; its result is derived from the call's input, and
// every input it saw is recorded so the test can tell it ran.
const executed = [];
const weather = tool({
  description: "The current weather in a city",
  inputSchema: z.object({ city: z.string().max(30), unit: z.enum(["celsius", "fahrenheit"]) }),
  execute: async ({ city, unit }) => {
    executed.push({ city, unit });
    return { city, unit, temperature: unit === "celsius" ? 21 : 70 };
  },
});
const toolCall = {
  model, tools: { get_weather: weather }, prompt: QUESTION, stopWhen: stepCountIs(2), ...settings,
  // The first step must call a tool; after its result, the model chooses (text or a call).
  prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? "required" : "auto" }),
};

function stepSummary(step) {
  return {
    finishReason: step.finishReason, text: step.text,
    toolCalls: step.toolCalls.map(({ toolCallId, toolName, input }) => ({ toolCallId, toolName, input })),
    toolResults: step.toolResults.map(({ toolCallId, toolName, output }) => ({ toolCallId, toolName, output })),
  };
}

async function toolStream() {
  const result = streamText(toolCall);
  const parts = [];
  for await (const part of result.fullStream) {
    if (part.type === "error") throw part.error;
    const { type, id, toolCallId, toolName, input, delta, text, output, finishReason } = part;
    parts.push({ type, id, toolCallId, toolName, input, delta, text, output, finishReason });
  }
  return { parts, steps: (await result.steps).map(stepSummary) };
}

async function run() {
  if (call === "object") {
    const { object, finishReason } = await generateObject({
      model, schema: SCHEMAS[schemaName], prompt: PROMPTS[schemaName], ...settings });
    return { object, finishReason };
  } else if (call === "any-object") {
    const { object, finishReason } = await generateObject({
      model, output: "no-schema", prompt: "Describe a cat as a JSON object.", ...settings });
    return { object, finishReason };
  } else if (call === "tool-steps") {
    const { steps, text } = await generateText(toolCall);
    return { steps: steps.map(stepSummary), text, executed };
  } else if (call === "tool-stream") {
    return { ...(await toolStream()), executed };
  }
  throw new Error(`unknown call ${call}`);
}

run().then((result) => {
  process.stdout.write(JSON.stringify({ requests, ...result }));
}).catch((error) => {
  // What a user would see, plus the HTTP details the SDK keeps (APICallError).
  console.error(`${error.name}: ${error.message}`);
  if (error.statusCode) console.error(`HTTP ${error.statusCode}: ${error.responseBody}`);
  if (error.text) console.error(`model text: ${error.text}`);
  console.error(JSON.stringify(requests));
  process.exit(1);
});
