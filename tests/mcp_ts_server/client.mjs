// The official TypeScript SDK's MCP client (@modelcontextprotocol/client), for the conformance of
// toolclash's reference server (`python -m toolserver`) with an implementation independent of the
// Python SDK it stands on (tests/test_mcp_conformance.py). The plan and the answer are those of
// tests/mcp_client.py, the Python SDK's client:
//
//     node tests/mcp_ts_server/client.mjs URL < plan.json > results.json
//
// The plan: {"era": "legacy" (the session era: initialize, Mcp-Session-Id) or "2026-07-28" (the
// stateless era), "list": whether to ask tools/list first, "agents": [[call, ...], ...]}, each call
// {"tool", "arguments", "meta"}. Each agent is a client of its own, its calls one after the other;
// the agents run at once. Prints {"protocol_version", "era", "tools": the first agent's listing, if
// asked, "results": [[result, ...], ...]}, each result the CallToolResult as on the wire, or
// {"error": {"code", "message"}} when the server answered a JSON-RPC error. A session the client
// opened is ended with DELETE before it closes.

import { Client, ProtocolError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

async function agent(url, era, calls, listing, listTools) {
    const client = new Client(
        { name: 'toolclash-conformance-ts', version: '1.0.0' },
        { versionNegotiation: { mode: era === 'legacy' ? 'legacy' : { pin: era } } }
    );
    const transport = new StreamableHTTPClientTransport(new URL(url));
    await client.connect(transport);
    try {
        if (listing !== null) {
            listing.protocol_version = client.getNegotiatedProtocolVersion();
            listing.session = transport.sessionId !== undefined;
            if (listTools) {
                listing.tools = (await client.listTools()).tools;
            }
        }
        const results = [];
        for (const call of calls) {
            try {
                results.push(await client.callTool({ name: call.tool, arguments: call.arguments ?? {},
                                                     ...(call.meta ? { _meta: call.meta } : {}) }));
            } catch (error) {
                if (!(error instanceof ProtocolError)) {
                    throw error;
                }
                results.push({ error: { code: error.code, message: error.message } });
            }
        }
        return results;
    } finally {
        if (transport.sessionId !== undefined) {
            await transport.terminateSession();
        }
        await client.close();
    }
}

async function main() {
    const chunks = [];
    for await (const chunk of process.stdin) {
        chunks.push(chunk);
    }
    const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const listing = {};
    const agents = plan.agents.length ? plan.agents : [[]];
    const results = await Promise.all(
        agents.map((calls, index) => agent(process.argv[2], plan.era, calls, index === 0 ? listing : null, plan.list))
    );
    process.stdout.write(JSON.stringify({ ...listing, results }) + '\n');
}

await main();
