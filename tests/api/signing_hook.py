"""Schemathesis hook that signs every request as a real AgentKeys session, so the fuzzer reaches
the handlers instead of stopping at the signature check.

The identity is a JSON file named by AGENTKEYS_ST_IDENTITY (written by the e2e test from a real
master or agent session): {"token": ..., "session_id": ..., "device_sign_secret": base64url of the
32-byte Ed25519 seed}. Without it, requests go out unsigned (the unauthenticated pass).

The signature is made the way docs/protocol.md ("Request signatures") defines it, over the exact
bytes `requests` sends: a requests auth object sees the prepared request (final path, query and
body), which a schemathesis hook alone does not.
"""

import base64
import hashlib
import json
import os
import secrets
import time

import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer(requests.auth.AuthBase):
    def __init__(self, identity: dict):
        self.token = identity["token"]
        self.session_id = identity["session_id"]
        self.key = Ed25519PrivateKey.from_private_bytes(b64url_decode(identity["device_sign_secret"]))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
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
        request.headers["Authorization"] = f"Bearer {self.token}"
        request.headers["x-agentkeys-timestamp"] = timestamp
        request.headers["x-agentkeys-nonce"] = nonce
        request.headers["x-agentkeys-signature"] = b64url(self.key.sign(payload.encode()))
        return request


IDENTITY = os.environ.get("AGENTKEYS_ST_IDENTITY")
SIGNER = Signer(json.load(open(IDENTITY))) if IDENTITY else None


@schemathesis.hook
def before_call(context, case, kwargs):
    if SIGNER is not None:
        kwargs["auth"] = SIGNER
