// Interop check: a STOMP-over-WebSocket chat server spoken to by @stomp/stompjs, a client
// we did not write. One connection negotiates STOMP 1.2 with heart-beats both ways,
// subscribes to a fresh room, sends a chat message and reads it back, then sits idle for
// more than two heart-beat periods (the server must keep beating and must not drop the
// connection), sends a second message and reads it back, and disconnects cleanly.
//
// Run against any server (the stompede reference server, RabbitMQ Web-STOMP, Spring):
//
//   STOMPEDE_WS_URL=ws://127.0.0.1:8080/ws-stomp npm test
//
// Optional settings ({room} is replaced by the room id of the run):
//   STOMPEDE_DESTINATION_SEND       default /app/chat/{room}
//   STOMPEDE_DESTINATION_SUBSCRIBE  default /topic/room/{room}
//   STOMPEDE_BODY                   chat-json (default): JSON chat message, compared field
//                                   by field; raw: the text alone, compared byte for byte
//   STOMPEDE_LOGIN, STOMPEDE_PASSCODE, STOMPEDE_VHOST (sent as the STOMP `host` header)
//
// The client asks for heart-beats every 1000 ms; the server beats at the larger of that and
// its own figure in CONNECTED, and the idle phase lasts 3.5 of those periods. A period above
// 6000 ms does not fit the 30 s budget and fails the test, so start the stompede server with
// `--heartbeat-ms 1000` (its default, 10000, is meant for load runs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const HEARTBEAT_MS = 1000;
const CONNECT_TIMEOUT_MS = 5000;
const MESSAGE_TIMEOUT_MS = 8000;
// The idle phase lasts this many negotiated heart-beat periods.
const IDLE_PERIODS = 3.5;
// Longest negotiated server heart-beat period the 30 s budget can absorb.
const MAX_SERVER_BEAT_MS = 6000;
const DEBUG_LINES_KEPT = 60;

const HOW_TO_RUN = [
  'STOMPEDE_WS_URL is not set, so there is no server to test.',
  'Start a STOMP-over-WebSocket server and point the test at it, for example:',
  '  STOMPEDE_WS_URL=ws://127.0.0.1:8080/ws-stomp npm test',
  'or, against RabbitMQ Web-STOMP started by scripts/rabbitmq.sh up:',
  '  STOMPEDE_WS_URL=ws://127.0.0.1:15674/ws STOMPEDE_DESTINATION_SEND=/topic/room.{room} \\',
  '  STOMPEDE_DESTINATION_SUBSCRIBE=/topic/room.{room} STOMPEDE_LOGIN=guest \\',
  '  STOMPEDE_PASSCODE=guest STOMPEDE_VHOST=/ npm test',
].join('\n');

function settings() {
  const env = process.env;
  const body = env.STOMPEDE_BODY ?? 'chat-json';
  if (body !== 'chat-json' && body !== 'raw') {
    throw new Error(`STOMPEDE_BODY=${body} is not understood; use chat-json or raw`);
  }
  const connectHeaders = {};
  if (env.STOMPEDE_LOGIN !== undefined) connectHeaders.login = env.STOMPEDE_LOGIN;
  if (env.STOMPEDE_PASSCODE !== undefined) connectHeaders.passcode = env.STOMPEDE_PASSCODE;
  if (env.STOMPEDE_VHOST !== undefined) connectHeaders.host = env.STOMPEDE_VHOST;
  return {
    url: env.STOMPEDE_WS_URL,
    sendTemplate: env.STOMPEDE_DESTINATION_SEND ?? '/app/chat/{room}',
    subscribeTemplate: env.STOMPEDE_DESTINATION_SUBSCRIBE ?? '/topic/room/{room}',
    body,
    connectHeaders,
  };
}

/** Parses a `heart-beat` header value `cx,cy` into two integers, or null. */
function parseHeartBeat(value) {
  if (typeof value !== 'string') return null;
  const parts = value.split(',').map((p) => Number.parseInt(p.trim(), 10));
  if (parts.length !== 2 || parts.some((n) => !Number.isFinite(n) || n < 0)) return null;
  return { outgoing: parts[0], incoming: parts[1] };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`, or rejects after `ms` with a message saying what was awaited. */
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Wraps a stompjs Client with the bookkeeping the test asserts on: a tail of the client's
 * debug log, incoming heart-beats, socket closes and errors, and a queue of received
 * messages that the test awaits one by one.
 */
function instrumentedClient(cfg) {
  const state = {
    debugTail: [],
    heartbeats: 0,
    closes: [],
    errors: [],
    messages: [],
    waiters: [],
  };
  const client = new Client({
    webSocketFactory: () => new WebSocket(cfg.url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
    connectHeaders: cfg.connectHeaders,
    heartbeatIncoming: HEARTBEAT_MS,
    heartbeatOutgoing: HEARTBEAT_MS,
    reconnectDelay: 0,
    connectionTimeout: CONNECT_TIMEOUT_MS,
    debug: (line) => {
      // stompjs logs every incoming heart-beat as exactly this line (all of v7).
      if (line === '<<< PONG') state.heartbeats += 1;
      const shown = line.replace(/^passcode:.*$/m, 'passcode:<hidden>');
      state.debugTail.push(`${new Date().toISOString()} ${shown}`);
      if (state.debugTail.length > DEBUG_LINES_KEPT) state.debugTail.shift();
    },
    onWebSocketError: (evt) => state.errors.push(`WebSocket error: ${evt?.message ?? evt?.type ?? evt}`),
    onHeartbeatLost: () => state.errors.push('stompjs saw no server activity within its heart-beat tolerance'),
  });

  // Settles once: CONNECTED, or an ERROR frame / a close before it.
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onWebSocketClose = (evt) => {
      state.closes.push(`code ${evt?.code} reason '${evt?.reason ?? ''}'`);
      reject(new Error(`the WebSocket closed before CONNECTED (code ${evt?.code})`));
    };
    client.onStompError = (frame) => {
      state.errors.push(`STOMP ERROR frame: ${frame.headers.message ?? ''} ${frame.body ?? ''}`.trim());
      if (!client.connected) reject(new Error(`the server answered CONNECT with ERROR: ${frame.headers.message ?? ''}`));
    };
  });

  const onMessage = (message) => {
    const waiter = state.waiters.shift();
    if (waiter) waiter(message);
    else state.messages.push(message);
  };
  const nextMessage = (what) =>
    within(
      MESSAGE_TIMEOUT_MS,
      what,
      new Promise((resolve) => {
        const queued = state.messages.shift();
        if (queued) resolve(queued);
        else state.waiters.push(resolve);
      }),
    );

  const diagnostics = () =>
    [
      `closes: ${state.closes.length ? state.closes.join('; ') : 'none'}`,
      `errors: ${state.errors.length ? state.errors.join('; ') : 'none'}`,
      'last stompjs debug lines:',
      ...state.debugTail.map((l) => `  ${l}`),
    ].join('\n');

  return { client, state, connected, onMessage, nextMessage, diagnostics };
}

function chatBody(cfg, room, text) {
  if (cfg.body === 'raw') return { body: text, headers: { 'content-type': 'text/plain' } };
  const chat = { roomId: room, sender: 'stompjs', message: text, type: 'TALK' };
  return { body: JSON.stringify(chat), headers: { 'content-type': 'application/json' }, chat };
}

function assertDelivered(cfg, message, sent, expect, label) {
  const { subscriptionId, destination } = expect;
  assert.equal(message.headers.subscription, subscriptionId, `${label}: MESSAGE subscription header`);
  assert.ok(message.headers['message-id'], `${label}: MESSAGE carries no message-id header`);
  assert.equal(message.headers.destination, destination, `${label}: MESSAGE destination header`);
  if (cfg.body === 'raw') {
    assert.equal(message.body, sent.body, `${label}: MESSAGE body`);
    return;
  }
  let got;
  try {
    got = JSON.parse(message.body);
  } catch (err) {
    assert.fail(`${label}: MESSAGE body is not JSON (${err.message}): ${message.body}`);
  }
  for (const field of ['roomId', 'sender', 'message', 'type']) {
    assert.equal(got[field], sent.chat[field], `${label}: field '${field}' of the chat JSON`);
  }
}

test('stompjs: STOMP 1.2, heart-beats and chat round trips', { timeout: 30_000 }, async (t) => {
  const cfg = settings();
  if (!cfg.url) assert.fail(HOW_TO_RUN);

  const room = `interop-${randomUUID().slice(0, 8)}`;
  const sendDestination = cfg.sendTemplate.replaceAll('{room}', room);
  const subscribeDestination = cfg.subscribeTemplate.replaceAll('{room}', room);
  t.diagnostic(`server ${cfg.url}, room ${room}, send ${sendDestination}, subscribe ${subscribeDestination}`);

  const probe = instrumentedClient(cfg);
  const { client, state } = probe;
  const failWith = (err) => {
    err.message = `${err.message}\n${probe.diagnostics()}`;
    throw err;
  };

  try {
    client.activate();
    const frame = await within(CONNECT_TIMEOUT_MS, `CONNECTED from ${cfg.url}`, probe.connected).catch(failWith);
    // From here on a close is a failure the idle phase checks, not a connect error.
    client.onWebSocketClose = (evt) => state.closes.push(`code ${evt?.code} reason '${evt?.reason ?? ''}'`);

    assert.equal(frame.headers.version, '1.2', 'negotiated STOMP version in CONNECTED');
    const beat = parseHeartBeat(frame.headers['heart-beat']);
    assert.ok(beat, `CONNECTED heart-beat header is missing or malformed: '${frame.headers['heart-beat']}'`);
    assert.ok(beat.outgoing > 0, `server offers no outgoing heart-beats (heart-beat: ${frame.headers['heart-beat']})`);
    assert.ok(beat.incoming > 0, `server wants no incoming heart-beats (heart-beat: ${frame.headers['heart-beat']})`);
    // The server beats at the larger of what it can do and what we asked for.
    const serverBeatMs = Math.max(beat.outgoing, HEARTBEAT_MS);
    assert.ok(
      serverBeatMs <= MAX_SERVER_BEAT_MS,
      `negotiated server heart-beat period ${serverBeatMs} ms (CONNECTED heart-beat: ${frame.headers['heart-beat']}) ` +
        `is longer than this test's ${MAX_SERVER_BEAT_MS} ms budget; configure the server to offer heart-beats ` +
        `of ${MAX_SERVER_BEAT_MS} ms or less (stompede: server --heartbeat-ms 1000)`,
    );

    const subscription = client.subscribe(subscribeDestination, probe.onMessage);
    const expect = { subscriptionId: subscription.id, destination: subscribeDestination };

    const first = chatBody(cfg, room, `hello ${randomUUID()}`);
    client.publish({ destination: sendDestination, body: first.body, headers: first.headers });
    const got1 = await probe.nextMessage('the first chat message').catch(failWith);
    assertDelivered(cfg, got1, first, expect, 'first message');

    const idleMs = Math.round(IDLE_PERIODS * serverBeatMs);
    const beatsBefore = state.heartbeats;
    await sleep(idleMs);
    const beatsDuring = state.heartbeats - beatsBefore;
    assert.deepEqual(state.closes, [], `the connection closed while idle for ${idleMs} ms\n${probe.diagnostics()}`);
    assert.deepEqual(state.errors, [], `errors while idle for ${idleMs} ms\n${probe.diagnostics()}`);
    assert.ok(client.connected, `stompjs no longer reports the connection as up after ${idleMs} ms idle`);
    assert.ok(
      beatsDuring >= 2,
      `expected at least 2 server heart-beats in ${idleMs} ms (period ${serverBeatMs} ms), got ${beatsDuring}\n${probe.diagnostics()}`,
    );
    t.diagnostic(`heart-beat ${frame.headers['heart-beat']}: ${beatsDuring} server beats in ${idleMs} ms idle`);

    const second = chatBody(cfg, room, `hello again ${randomUUID()}`);
    client.publish({ destination: sendDestination, body: second.body, headers: second.headers });
    const got2 = await probe.nextMessage('the second chat message, after the idle phase').catch(failWith);
    assertDelivered(cfg, got2, second, expect, 'second message');

    subscription.unsubscribe();
    assert.deepEqual(state.errors, [], `errors during the run\n${probe.diagnostics()}`);
    assert.deepEqual(state.closes, [], `the connection closed before the client disconnected\n${probe.diagnostics()}`);
  } finally {
    await within(5000, 'a clean disconnect', client.deactivate()).catch(() => client.deactivate({ force: true }));
  }
});
