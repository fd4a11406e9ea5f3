#!/usr/bin/env python3
"""Read a credential from agentkeys-daemon as a file descriptor (memfd_secret), not as bytes in
a JSON response: the daemon keeps no copy, and the value is in this process only where the
caller puts it. The protocol is in docs/protocol.md, "Daemon socket"; stdlib only (Python 3.9+).

    python3 fd_credential.py --socket "$XDG_RUNTIME_DIR/agentkeys/daemon-<agent>.sock" openai

prints the credential's length and protection; with --print, the value itself (for scripts that
pipe it on, e.g. into a program's stdin).
"""

import argparse
import json
import mmap
import os
import socket
import sys

PREAMBLE = b"AGENTKEYS/1\n"


class DaemonError(Exception):
    """The daemon refused: .code (e.g. DENIED), .fix and .exit_code say why and what to do."""

    def __init__(self, error):
        super().__init__(f"{error.get('code')}: {error['message']}. Fix: {error['fix']}")
        self.code = error.get("code")
        self.fix = error["fix"]
        self.exit_code = error["exit_code"]


def read_fd(fd, length):
    """Maps the descriptor (memfd_secret files cannot be read(2)), copies the value, closes it."""
    try:
        if length == 0:
            return b""
        with mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ) as view:
            return bytes(view[:length])
    finally:
        os.close(fd)


def get_credential(socket_path, service):
    """The value of `service`, delivered by descriptor. Raises DaemonError on a refusal."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(socket_path)
        request = json.dumps({"op": "get_credential", "service": service}).encode()
        conn.sendall(PREAMBLE + request + b"\n")
        reply, fds = b"", []
        while b"\n" not in reply:
            data, received, _flags, _addr = socket.recv_fds(conn, 4096, 1)
            if not data:
                raise ConnectionError("agentkeys-daemon closed the connection without an answer")
            reply += data
            fds += received
        answer = json.loads(reply.split(b"\n", 1)[0])
        if answer["type"] == "error":
            for fd in fds:
                os.close(fd)
            raise DaemonError(answer)
        if answer["type"] != "credential" or len(fds) != 1:
            raise ConnectionError(f"unexpected answer from agentkeys-daemon: {answer['type']}")
        return read_fd(fds[0], answer["length"]), answer["protection"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the daemon's socket (agentkeys-daemon status shows it)")
    parser.add_argument("--print", action="store_true", help="write the value to stdout")
    parser.add_argument("service")
    args = parser.parse_args()
    try:
        value, protection = get_credential(args.socket, args.service)
    except DaemonError as error:
        print(f"Error: {error}", file=sys.stderr)
        return error.exit_code
    if args.print:
        sys.stdout.buffer.write(value)
    else:
        print(f"{args.service}: {len(value)} bytes, delivered as {protection}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
