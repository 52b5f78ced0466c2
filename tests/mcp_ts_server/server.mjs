// An MCP tool server on the official TypeScript SDK (@modelcontextprotocol/server), an
// implementation independent of the Python SDK toolclash's own servers stand on, for the conformance
// tests of toolclash's MCP client (tests/test_mcp_conformance.py). No database: the protocol is
// under test, and what the server received is kept in memory.
//
//     node tests/mcp_ts_server/server.mjs --port P
//
// Prints "listening on http://127.0.0.1:P" once it accepts connections. Three MCP endpoints, one
// tool set:
//
//   /sse/mcp      the session era with sessions (Mcp-Session-Id, DELETE), replies as event
//                 streams; the stateless era (2026-07-28) always streaming; keep-alive comments
//                 every 0.2 s
//   /json/mcp     the same, every reply one JSON body (the SDK's enableJsonResponse, responseMode json)
//   /default/mcp  createMcpHandler as it comes: the stateless era, replies as JSON unless the tool
//                 sends a notification first; the session era without sessions (legacy: 'stateless')
//   /session-only/mcp  the session era alone, event streams: a server as SDK 1.x served it
//
// The session era with sessions is the SDK's sessionful transport, one per session, routed by the
// server's own code (the SDK leaves that to the server). A session ended (DELETEd, or by
// /admin/end-sessions) keeps its closed transport, which the SDK answers 404; one this process
// never opened is answered 404 alike, as the specification says of a session the server ended.
//
//   GET  /admin/state         what the server received: {calls: [...], sessions: {...}}
//   POST /admin/end-sessions  end every open session, as a server that expires them does

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import { toNodeHandler } from '@modelcontextprotocol/node';
import {
    createMcpHandler,
    hostHeaderValidationResponse,
    isLegacyRequest,
    localhostAllowedHostnames,
    McpServer,
    WebStandardStreamableHTTPServerTransport
} from '@modelcontextprotocol/server';
import * as z from 'zod';

const OP_ID_META_KEY = 'io.toolclash/op_id';
const AGENT_ID_META_KEY = 'io.toolclash/agent_id';

// An event stream's keep-alive comments every 0.2 s (the SDK's default: 15 s), so that a reply a
// little slow comes after some.
const KEEP_ALIVE_MS = 200;

const calls = []; // every tools/call received, in order
const sessions = { opened: 0, deleted: 0, ended: 0, open: new Set() }; // open: the transports of open sessions
const routes = new Map(); // session id → its transport, kept once closed: the SDK answers it 404
const tries = new Map(); // op id → calls of `conflict` received with it

function received(tool, args, ctx) {
    const headers = ctx.http?.req?.headers;
    const call = {
        tool,
        era: ctx.mcpReq.envelope ? 'stateless' : 'session',
        protocol_version: headers?.get('mcp-protocol-version') ?? null,
        session_id: ctx.sessionId ?? null,
        meta_op_id: ctx.mcpReq._meta?.[OP_ID_META_KEY] ?? null,
        agent_id: ctx.mcpReq._meta?.[AGENT_ID_META_KEY] ?? null,
        idempotency_key: headers?.get('idempotency-key') ?? null,
        argument_op_id: args.op_id ?? null,
        finished: false
    };
    calls.push(call);
    return call;
}

// toolclash's reference server's shape (docs/mcp_client.md: what a server is expected to answer).
function succeeded(value, call, attempts = 1) {
    return {
        content: [{ type: 'text', text: 'ok' }],
        structuredContent: { value, op_id: call.argument_op_id ?? call.meta_op_id, attempts, failures: [] }
    };
}

function failed(said, text) {
    return { content: [{ type: 'text', text }], structuredContent: said, isError: true };
}

const opId = z.string().uuid().optional().describe('the call’s op id (toolclash sends it when declared)');

function tools() {
    // Logging declared: in the session era the SDK then sends a tool's log messages to a client that
    // set no level (the stateless era sends them only to one that asks, in its request's _meta).
    const server = new McpServer({ name: 'toolclash-ts-conformance', version: '1.0.0' }, { capabilities: { logging: {} } });

    server.registerTool(
        'write',
        { description: 'Echo the note, and the op id as it arrived: _meta, Idempotency-Key, argument.',
          inputSchema: z.object({ note: z.string(), op_id: opId }) },
        async (args, ctx) => {
            const call = received('write', args, ctx);
            call.finished = true;
            const arrived = { meta: call.meta_op_id, header: call.idempotency_key, argument: call.argument_op_id };
            return succeeded({ note: args.note, received: arrived }, call);
        }
    );

    server.registerTool(
        'conflict',
        { description: 'A serialization failure, rolled back, the first `fails` times an op id is sent; then success.',
          inputSchema: z.object({ fails: z.number().int().min(0), op_id: opId }) },
        async (args, ctx) => {
            const call = received('conflict', args, ctx);
            const key = call.meta_op_id ?? call.argument_op_id;
            const attempt = (tries.get(key) ?? 0) + 1;
            tries.set(key, attempt);
            call.finished = true;
            if (attempt <= args.fails) {
                return failed({ kind: 'serialization_failures', sqlstate: '40001', rolled_back: true, refused: false,
                                op_id: key, attempts: 1, failures: ['serialization_failures'] },
                              'could not serialize access due to concurrent update');
            }
            return succeeded({ attempt }, call);
        }
    );

    server.registerTool(
        'refuse',
        { description: 'A business refusal: isError, refused.', inputSchema: z.object({ op_id: opId }) },
        async (args, ctx) => {
            const call = received('refuse', args, ctx);
            call.finished = true;
            return failed({ kind: 'refusals', refused: true, rolled_back: true, op_id: call.meta_op_id,
                            attempts: 1, failures: [] }, 'the account cannot pay');
        }
    );

    server.registerTool(
        'sleepy',
        { description: 'Take `seconds`, then answer.',
          inputSchema: z.object({ seconds: z.number().min(0), op_id: opId }) },
        async (args, ctx) => {
            const call = received('sleepy', args, ctx);
            await sleep(args.seconds * 1000);
            call.finished = true;
            return succeeded(args.seconds, call);
        }
    );

    server.registerTool(
        'chatty',
        { description: 'A log notification before its result: in an event stream, notifications come first.',
          inputSchema: z.object({}) },
        async (args, ctx) => {
            const call = received('chatty', args, ctx);
            await ctx.mcpReq.log('info', 'working');
            call.finished = true;
            return succeeded('done', call);
        }
    );

    server.registerTool(
        'region',
        { description: 'The Mcp-Param-Region header the call came with (stateless era).',
          inputSchema: z.object({ region: z.string().meta({ 'x-mcp-header': 'Region' }) }) },
        async (args, ctx) => {
            const call = received('region', args, ctx);
            call.finished = true;
            return succeeded({ argument: args.region, header: ctx.http?.req?.headers.get('mcp-param-region') ?? null },
                             call);
        }
    );

    return server;
}

function jsonRpcError(status, code, message) {
    return Response.json({ jsonrpc: '2.0', error: { code, message }, id: null }, { status });
}

// The session era with sessions: one sessionful transport per session, as the SDK's examples route.
function sessionful(enableJsonResponse, keepAliveMs) {
    return async request => {
        const sessionId = request.headers.get('mcp-session-id');
        if (sessionId !== null) {
            const transport = routes.get(sessionId);
            return transport ? transport.handleRequest(request) : jsonRpcError(404, -32001, 'Session not found');
        }
        if (request.method !== 'POST') {
            return jsonRpcError(400, -32000, 'Bad Request: Mcp-Session-Id header is required');
        }
        const transport = new WebStandardStreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse,
            keepAliveMs,
            onsessioninitialized: id => {
                sessions.opened += 1;
                sessions.open.add(transport);
                routes.set(id, transport);
            },
            onsessionclosed: id => {
                sessions.deleted += 1;
                sessions.open.delete(transport);
            }
        });
        await tools().connect(transport);
        return transport.handleRequest(request);
    };
}

function endpoint(responseMode, sessionEra, keepAliveMs) {
    const modern = createMcpHandler(() => tools(), { legacy: sessionEra ? 'reject' : 'stateless', responseMode,
                                                     keepAliveMs });
    if (!sessionEra) {
        return modern.fetch;
    }
    return async request => ((await isLegacyRequest(request)) ? sessionEra(request) : modern.fetch(request));
}

const endpoints = {
    '/sse/mcp': endpoint('sse', sessionful(false, KEEP_ALIVE_MS), KEEP_ALIVE_MS),
    '/json/mcp': endpoint('json', sessionful(true)),
    '/default/mcp': endpoint('auto', null),
    '/session-only/mcp': sessionful(false)
};

async function endAllSessions() {
    const open = [...sessions.open];
    sessions.open.clear();
    sessions.ended += open.length;
    await Promise.all(open.map(transport => transport.close()));
    return open.length;
}

async function route(request) {
    const rejected = hostHeaderValidationResponse(request, localhostAllowedHostnames());
    if (rejected) {
        return rejected;
    }
    const path = new URL(request.url).pathname;
    if (path === '/admin/state') {
        const { open, ...counts } = sessions;
        return Response.json({ calls, sessions: { ...counts, open: open.size } });
    }
    if (path === '/admin/end-sessions' && request.method === 'POST') {
        return Response.json({ ended: await endAllSessions() });
    }
    const serve = endpoints[path];
    return serve ? serve(request) : new Response('not found', { status: 404 });
}

function main() {
    const at = process.argv.indexOf('--port');
    const port = at > 0 ? Number(process.argv[at + 1]) : NaN;
    if (!Number.isInteger(port) || port < 0) {
        console.error('usage: node server.mjs --port PORT');
        process.exit(2);
    }
    const http = createServer(toNodeHandler({ fetch: route }, { onerror: error => console.error(error) }));
    http.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${http.address().port}`));
    for (const signal of ['SIGTERM', 'SIGINT']) {
        process.on(signal, () => process.exit(0));
    }
}

main();
