"""Drives `agentkeys-daemon mcp` with the official MCP Python SDK, as a real MCP client would.

Usage: mcp_client.py PHASE EXPECT_JSON
  PHASE is `full` (initialize, list and validate every tool, call each one, check the error
  codes), `call` (one get_credential, printing its outcome), `hammer` (get_credential until
  RATE_LIMITED), or `release` (a high-value read waiting for the owner's decision). EXPECT_JSON names the services to use. The daemon binary is AGENTKEYS_DAEMON_BIN;
  AGENTKEYS_HOME and AGENTKEYS_SERVER pass through. Prints one JSON object on stdout for the Rust
  test to check; exits non-zero with the reason on the first broken expectation.
"""

import asyncio
import json
import os
import sys

import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = {"whoami", "list_credentials", "get_credential", "run", "usage", "request_access", "request_tier"}


def fail(message):
    print(f"mcp_client.py: {message}", file=sys.stderr)
    sys.exit(1)


def field(obj, snake, camel):
    """The SDK renamed its fields to snake case in 2.x; accept either."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def error_code(result):
    if not field(result, "is_error", "isError"):
        return None
    structured = field(result, "structured_content", "structuredContent") or {}
    return structured.get("error", {}).get("code")


def structured(result):
    if field(result, "is_error", "isError"):
        fail(f"unexpected tool error: {result.content[0].text if result.content else result}")
    return field(result, "structured_content", "structuredContent")


async def full(session, expect):
    out = {}
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    if names != TOOLS:
        fail(f"tools are {sorted(names)}, expected {sorted(TOOLS)}")
    for tool in tools:
        schema = field(tool, "input_schema", "inputSchema")
        jsonschema.Draft202012Validator.check_schema(schema)
        if schema.get("type") != "object":
            fail(f"{tool.name}: input schema is not an object")
        if not tool.description or len(tool.description) < 40:
            fail(f"{tool.name}: description too thin for an LLM: {tool.description!r}")
    schemas = {t.name: field(t, "input_schema", "inputSchema") for t in tools}
    # Arguments the schemas must accept and refuse.
    jsonschema.validate({"service": "openai"}, schemas["get_credential"])
    jsonschema.validate({"argv": ["true"], "env": {"K": "openai"}, "timeout_s": 5}, schemas["run"])
    for bad, tool in [({}, "get_credential"), ({"env": {}}, "run"), ({"tier": "root", "reason": "x"}, "request_tier")]:
        try:
            jsonschema.validate(bad, schemas[tool])
            fail(f"{tool} schema accepts {bad}")
        except jsonschema.ValidationError:
            pass
    out["tools"] = sorted(names)

    who = structured(await session.call_tool("whoami", {}))
    out["whoami"] = who
    listed = structured(await session.call_tool("list_credentials", {}))
    out["listed"] = sorted(c["service"] for c in listed["credentials"])

    got = structured(await session.call_tool("get_credential", {"service": expect["in_scope"]}))
    out["value"] = got.get("value")

    codes = {}
    codes["out_of_scope"] = error_code(await session.call_tool("get_credential", {"service": expect["out_of_scope"]}))
    codes["missing"] = error_code(await session.call_tool("get_credential", {"service": expect["scope_missing"]}))
    codes["bad_name"] = error_code(await session.call_tool("get_credential", {"service": "../etc/passwd"}))

    ran = structured(
        await session.call_tool(
            "run", {"argv": ["sh", "-c", "printf 'out:%s\\n' \"$K\"; printf 'err:%s\\n' \"$K\" >&2; exit 3"], "env": {"K": expect["in_scope"]}}
        )
    )
    out["run"] = ran
    timed = structured(await session.call_tool("run", {"argv": ["sh", "-c", "sleep 60 & echo $!; wait"], "timeout_s": 1}))
    out["run_timeout"] = timed
    grandchild = timed["stdout"].strip()
    out["grandchild_left"] = grandchild.isdigit() and process_running(int(grandchild))
    flood = structured(await session.call_tool("run", {"argv": ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a"]}))
    out["run_flood"] = {"truncated": flood["truncated"], "stdout": flood["stdout"][:10] + "…", "length": len(flood["stdout"])}
    ran_denied = await session.call_tool("run", {"argv": ["true"], "env": {"K": expect["out_of_scope"]}})
    codes["run_out_of_scope"] = error_code(ran_denied)

    asked = structured(await session.call_tool("request_access", {"service": expect["out_of_scope"], "reason": "the nightly sync needs it"}))
    out["access_code"] = asked["code"]
    codes["after_request"] = error_code(await session.call_tool("get_credential", {"service": expect["out_of_scope"]}))
    tier = structured(await session.call_tool("request_tier", {"tier": "admin", "reason": "to store my own cache key"}))
    out["tier_code"] = tier["code"]

    usage = structured(await session.call_tool("usage", {"since": "1h"}))
    out["usage"] = usage
    out["codes"] = codes
    return out


def process_running(pid):
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


async def call(session, expect):
    result = await session.call_tool("get_credential", {"service": expect["in_scope"]})
    return {"code": error_code(result), "text": result.content[0].text if result.content else ""}


async def hammer(session, expect):
    for attempt in range(1, 1000):
        result = await session.call_tool("get_credential", {"service": expect["in_scope"]})
        code = error_code(result)
        if code == "RATE_LIMITED":
            return {"code": code, "attempts": attempt, "text": result.content[0].text}
        if code is not None:
            fail(f"unexpected {code} while hammering")
    fail("never rate limited")


async def release(session, expect):
    """A high-value read that waits for the owner: the Rust test approves the first request it
    sees announced in a progress notification (a `PROGRESS <message>` line on stderr) and denies
    the second."""
    out = {"progress": []}

    async def on_progress(progress, total, message):
        out["progress"].append({"progress": progress, "total": total, "message": message})
        print(f"PROGRESS {message}", file=sys.stderr, flush=True)

    service = expect["service"]
    out["out_of_range"] = error_code(await session.call_tool("get_credential", {"service": service, "wait_s": 301}))
    asked = {"service": service, "reason": expect["reason"], "wait_s": 120}
    out["value"] = structured(await session.call_tool("get_credential", asked, progress_callback=on_progress)).get("value")
    again = await session.call_tool("get_credential", {"service": service})
    out["again"] = error_code(again)
    out["again_code"] = (field(again, "structured_content", "structuredContent") or {}).get("error", {}).get("request_code")
    out["denied"] = error_code(await session.call_tool("get_credential", asked, progress_callback=on_progress))
    return out


async def main():
    phase, expect = sys.argv[1], json.loads(sys.argv[2])
    params = StdioServerParameters(command=os.environ["AGENTKEYS_DAEMON_BIN"], args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            result = await {"full": full, "call": call, "hammer": hammer, "release": release}[phase](session, expect)
            result["protocol_version"] = str(field(init, "protocol_version", "protocolVersion"))
            result["server_name"] = field(init, "server_info", "serverInfo").name
    print(json.dumps(result))


asyncio.run(main())
