"""The comparison point for the MCP benchmark: the same `get_credential` tool served by the
official MCP Python SDK (2.x: MCPServer, formerly FastMCP) over stdio, returning a constant — no
server round trip, no crypto — so the figure is the SDK's own floor. Run with the venv python."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("python-baseline")


@server.tool()
def get_credential(service: str) -> dict:
    """Return a fixed credential value."""
    return {"service": service, "value": "sk-python-baseline-0123456789"}


if __name__ == "__main__":
    server.run("stdio")
