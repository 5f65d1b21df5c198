// Streams an answer about an image over graphql-ws, one verified chunk at a time, as a chat UI would.
//   npm start                                  # in another terminal
//   node docs/examples/understand.mjs x.png "describe the image"
// HYPERBAGEL_URL picks another server (default ws://localhost:4000/graphql).
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [imagePath, prompt = 'describe the image'] = process.argv.slice(2);
if (!imagePath) {
  console.error('usage: node docs/examples/understand.mjs IMAGE.png ["prompt"]');
  process.exit(2);
}
const client = createClient({ url: process.env.HYPERBAGEL_URL ?? 'ws://localhost:4000/graphql', webSocketImpl: WebSocket });
const query = `subscription ($input: UnderstandInput!) {
  understand(input: $input) { text done finishReason seed timings { timeToFirstTokenMs } }
}`;
const input = { prompt, image: { base64: readFileSync(imagePath).toString('base64') } };
try {
  for await (const { data, errors } of client.iterate({ query, variables: { input } })) {
    if (errors) throw new Error(`${errors[0].extensions?.code}: ${errors[0].message}`);
    const event = data.understand;
    process.stdout.write(event.text); // the text delta of one verification step
    if (event.done) console.error(`\n[${event.finishReason}, first token after ${event.timings.timeToFirstTokenMs.toFixed(1)} ms]`);
  }
} catch (e) {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
} finally {
  await client.dispose();
}
