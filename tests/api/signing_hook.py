"""Schemathesis hook that signs every request as a real AgentKeys session, so the fuzzer reaches
the handlers instead of stopping at the signature check.

The identity is a JSON file named by AGENTKEYS_ST_IDENTITY (written by the e2e test from a real
master or agent session): {"token": ..., "session_id": ..., "device_sign_secret": base64url of the
32-byte Ed25519 seed}; the same test gives schemathesis the token as the bearer of the
`agentkeys_session` security scheme. Without it, requests go out unsigned (the unauthenticated
pass).

The signature is made the way docs/protocol.md ("Request signatures") defines it, over the exact
bytes `requests` sends: a requests auth object sees the prepared request (final path, query and
body), which a schemathesis hook alone does not.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import time

import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# The signature headers as the OpenAPI document states them: a value that breaks its pattern is
# one schemathesis sent on purpose (a negative case), and the request goes out as it is.
PATTERNS = {
    "x-agentkeys-timestamp": re.compile(r"^-?[0-9]{1,19}$"),
    "x-agentkeys-nonce": re.compile(r"^[A-Za-z0-9_-]{22}$"),
    "x-agentkeys-signature": re.compile(r"^[A-Za-z0-9_-]{86}$"),
}


class Signer(requests.auth.AuthBase):
    """Signs a request schemathesis means to be authenticated: it carries the session's own token
    (which schemathesis sends from its auth configuration) and well-formed signature headers.
    Its probes — no token, a wrong token, a signature header missing or malformed — go out
    unsigned, so the server must refuse them."""

    def __init__(self, identity: dict):
        self.token = identity["token"]
        self.session_id = identity["session_id"]
        self.key = Ed25519PrivateKey.from_private_bytes(b64url_decode(identity["device_sign_secret"]))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return request
        if not all(pattern.match(request.headers.get(name, "")) for name, pattern in PATTERNS.items()):
            return request
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = str(int(time.time()))
        nonce = b64url(secrets.token_bytes(16))
        payload = "\n".join(
            [
                "agentkeys-request-v1",
                request.method.upper(),
                request.path_url,
                self.session_id,
                timestamp,
                nonce,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        request.headers["x-agentkeys-timestamp"] = timestamp
        request.headers["x-agentkeys-nonce"] = nonce
        request.headers["x-agentkeys-signature"] = b64url(self.key.sign(payload.encode()))
        return request


# `format: display-text` (device labels, agents' reasons): visible characters only — no control,
# Unicode format (bidi, zero-width), separator, surrogate, private-use or unassigned code points —
# and not only whitespace. The server refuses the first four kinds; the generator also leaves out
# the last two, whose category differs between Unicode versions.
DISPLAY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"], max_codepoint=0xFFFF),
    min_size=1,
    max_size=64,
).filter(lambda text: text.strip() != "")
schemathesis.openapi.format("display-text", DISPLAY_TEXT)

IDENTITY = os.environ.get("AGENTKEYS_ST_IDENTITY")
SIGNER = Signer(json.load(open(IDENTITY))) if IDENTITY else None


@schemathesis.hook
def before_call(context, case, kwargs):
    if SIGNER is not None:
        kwargs["auth"] = SIGNER
