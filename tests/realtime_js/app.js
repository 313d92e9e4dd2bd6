// A browser app written for the OpenAI Realtime API, as its developers would write it, with
// only the base URL changed to callbot's. Bundled with esbuild at test time
// (tests/test_realtime_browser.py); the page's state is read by the test from `window.rt`.
import { OpenAIRealtimeWebRTC, RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';

const rt = { events: [], toolCalls: [], errors: [], connected: false };
window.rt = rt;

// What the app's backend does with its API key: mint a short-lived client secret.
async function clientSecret() {
  const resp = await fetch('/v1/realtime/client_secrets', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ session: { type: 'realtime' } }),
  });
  if (!resp.ok) throw new Error(`client secret: ${resp.status} ${await resp.text()}`);
  return (await resp.json()).value;
}

const secretWord = tool({
  name: 'get_secret_word',
  description: 'Get the secret word of the day.',
  parameters: { type: 'object', properties: {}, required: [], additionalProperties: false },
  strict: true,
  execute: async () => {
    rt.toolCalls.push('get_secret_word');
    return 'The secret word of the day is pineapple.';
  },
});

window.startCall = async ({ instructions, withTool = false }) => {
  const agent = new RealtimeAgent({
    name: 'Assistant', instructions, tools: withTool ? [secretWord] : [],
  });
  const transport = new OpenAIRealtimeWebRTC({
    baseUrl: `${location.origin}/v1/realtime/calls`, // the one line that points it at callbot
  });
  const session = new RealtimeSession(agent, {
    transport, model: 'callbot',
    // a small local model calls a tool when the session names it
    config: withTool ? { toolChoice: { type: 'function', name: 'get_secret_word' } } : {},
  });
  session.on('transport_event', (event) => rt.events.push(event));
  session.on('error', (e) => rt.errors.push(String(e?.error?.error?.message ?? e?.error?.message ?? e?.error ?? e)));
  rt.session = session;
  rt.transport = transport;
  await session.connect({ apiKey: await clientSecret() });
  rt.connected = true;
};

window.setInstructions = (instructions) => rt.transport.updateSessionConfig({ instructions });
window.say = (text) => rt.session.sendMessage(text);
window.interrupt = () => rt.session.interrupt();
window.hangUp = () => rt.session.close();

window.inboundAudio = async () => {
  const pc = rt.transport.connectionState.peerConnection;
  if (!pc) return null;
  for (const s of (await pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      return { energy: s.totalAudioEnergy || 0, samples: s.totalSamplesReceived || 0,
               bytes: s.bytesReceived || 0 };
    }
  }
  return null;
};
