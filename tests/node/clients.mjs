// Runs one @huggingface/inference call against a sluice server, the way users write it,
// and writes what the user would see to stdout. Driven by tests/e2e/test_openai_clients.py.
//
//   node clients.mjs <call> <server url> <prompt> <max new tokens>
//
// Calls: text-generation, text-generation-stream, chat-completion-stream (the latest
// package: OpenAI routes) and legacy-text-generation-stream (4.13.16: TGI's native `/`).
// The stream calls run the loop from TGI's streaming page unchanged:
//   for await (const r of stream) process.stdout.write(r.token.text)
import { InferenceClient } from "@huggingface/inference";
import { InferenceClient as LegacyInferenceClient } from "hf-inference-4.13.16";

const [call, url, prompt, maxNewTokens] = process.argv.slice(2);
// Greedy on both paths: temperature 0 on the OpenAI route; the native route is greedy
// whenever `parameters` is present without sampling options.
const latestParameters = { max_new_tokens: Number(maxNewTokens), temperature: 0 };
const legacyParameters = { max_new_tokens: Number(maxNewTokens) };

async function main() {
  if (call === "text-generation") {
    const hf = new InferenceClient().endpoint(url);
    const output = await hf.textGeneration({ inputs: prompt, parameters: latestParameters });
    process.stdout.write(output.generated_text);
  } else if (call === "text-generation-stream") {
    const hf = new InferenceClient().endpoint(url);
    const stream = hf.textGenerationStream({ inputs: prompt, parameters: latestParameters });
    for await (const r of stream) process.stdout.write(r.token.text);
  } else if (call === "legacy-text-generation-stream") {
    const hf = new LegacyInferenceClient().endpoint(url);
    const stream = hf.textGenerationStream({ inputs: prompt, parameters: legacyParameters });
    for await (const r of stream) process.stdout.write(r.token.text);
  } else if (call === "chat-completion-stream") {
    const hf = new InferenceClient().endpoint(url);
    const stream = hf.chatCompletionStream({
      messages: [{ role: "user", content: prompt }], max_tokens: Number(maxNewTokens), temperature: 0,
    });
    for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
  } else {
    throw new Error(`unknown call ${call}`);
  }
}

main().catch((error) => {
  // What a user would see, plus the HTTP details the client keeps.
  console.error(`${error.name}: ${error.message}`);
  if (error.httpResponse) console.error(JSON.stringify(error.httpResponse));
  process.exit(1);
});
