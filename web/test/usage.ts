// How a TypeScript program uses the package, compiled (never run) by `tsc -p test`: it
// imports through package.json's `exports`, so the published types are what is checked.

import { WebSocket as NodeWebSocket } from 'ws';
import { ParleyClient, ParleyError } from 'parley-client';
import type { HelloFrame, MessageView, SentResult } from 'parley-client/protocol';

// Both the `ws` package's WebSocket and the browser's fit the option.
const client = new ParleyClient(() => 'ws://127.0.0.1:8080/ws?token=T', { WebSocket: NodeWebSocket });
new ParleyClient('ws://127.0.0.1:8080/ws?token=T', { WebSocket: globalThis.WebSocket });

// Each request's answer has its own type.
export const sent: Promise<SentResult> = client.send({ to: 'bob', body: 'Hello' });
export async function lastSeen(conversation: string): Promise<MessageView | undefined> {
  const page = await client.history(conversation, { limit: 1 });
  return page.messages[0];
}
client.on('hello', (hello: HelloFrame) => console.log(hello.limits.max_body_chars));
client.request('lookup', { user: 'bob' }).then((profile) => console.log(profile.inmail_allowed));
client.send({ to: 'bob', body: 'hi' }).catch((e: unknown) => {
  if (e instanceof ParleyError) console.log(e.code);
});

// Mistakes the types catch.
// @ts-expect-error `send` has no `too`
client.send({ too: 'bob', body: 'Hello' });
// @ts-expect-error a lookup needs a `user`
client.request('lookup', {});
// @ts-expect-error there is no such request type
client.request('shout', {});
// @ts-expect-error a `send` is answered with a message, not a profile
export const wrong: Promise<{ kind: 'profile' }> = client.send({ to: 'bob', body: 'Hello' });
