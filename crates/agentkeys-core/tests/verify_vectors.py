"""Checks tests/vectors.json with an independent implementation (pyca/cryptography), so the
constructions in docs/protocol.md are verified by code that shares nothing with ours.
Run by scripts/test.sh in its venv: python verify_vectors.py PATH/TO/vectors.json"""
import base64
import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def raw(public_key):
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def hchacha20(key, nonce16):
    """HChaCha20 (draft-irtf-cfrg-xchacha), since pyca exposes no XChaCha20-Poly1305."""
    def rotl(x, n):
        return ((x << n) & 0xFFFFFFFF) | (x >> (32 - n))

    def quarter(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)

    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            quarter(s, a, b, c, d)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def main(path):
    v = json.load(open(path))
    h = bytes.fromhex

    blob = h(v["key_pair"]["secret_blob"])
    sign_key = Ed25519PrivateKey.from_private_bytes(blob[:32])
    kx_key = X25519PrivateKey.from_private_bytes(blob[32:])
    assert raw(sign_key.public_key()).hex() == v["key_pair"]["sign_public"]
    assert raw(kx_key.public_key()).hex() == v["key_pair"]["kx_public"]
    digest = hashlib.sha256(b"agentkeys-account-id-v1\0" + raw(sign_key.public_key())).hexdigest()
    assert "acct_" + digest[:20] == v["key_pair"]["account_id_if_account_key"]
    digest = hashlib.sha256(b"agentkeys-device-id-v1\0" + raw(sign_key.public_key())).hexdigest()
    assert "dev_" + digest[:20] == v["key_pair"]["device_id_if_device_key"]

    s = v["seal"]
    aad = b"agentkeys-credential-v1\0"
    for field in (s["account_id"], s["namespace"], s["service"]):
        aad += len(field).to_bytes(2, "big") + field.encode()
    aad += s["version"].to_bytes(8, "big")
    assert aad.hex() == s["aad"]
    sealed = h(s["sealed"])
    assert sealed[0] == 1 and sealed[1:25].hex() == s["nonce"]
    subkey = hchacha20(h(s["data_key"]), sealed[1:17])
    plaintext = ChaCha20Poly1305(subkey).decrypt(b"\0" * 4 + sealed[17:25], sealed[25:], aad)
    assert plaintext.hex() == s["plaintext"]

    w = v["wrap"]
    wrap = h(w["wrap"])
    ephemeral_public = wrap[1:33]
    assert raw(X25519PrivateKey.from_private_bytes(h(w["ephemeral_secret"])).public_key()) == ephemeral_public
    shared = kx_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    wrap_key = HKDF(hashes.SHA256(), 32, salt=ephemeral_public + h(w["recipient_kx_public"]), info=w["label"].encode()).derive(shared)
    assert ChaCha20Poly1305(wrap_key).decrypt(b"\0" * 12, wrap[33:], None).hex() == w["wrapped_key"]

    r = v["request_signature"]
    payload = "\n".join(["agentkeys-request-v1", r["method"], r["path_and_query"], r["session_id"],
                         str(r["timestamp"]), r["nonce"], hashlib.sha256(r["body"].encode()).hexdigest()])
    assert payload == r["payload"]
    assert sign_key.sign(payload.encode()).hex() == r["signature"]
    c = v["device_certificate"]
    assert sign_key.sign(c["payload"].encode()).hex() == c["signature"]

    rk = v["recovery_key"]
    secret = h(rk["secret"])
    assert raw(X25519PrivateKey.from_private_bytes(secret).public_key()).hex() == rk["kx_public"]
    text = base64.b32encode(secret + hashlib.sha256(secret).digest()[:3]).decode().rstrip("=")
    assert "AKRK-" + "-".join(text[i:i + 5] for i in range(0, len(text), 5)) == rk["text"]
    recovery_sign = Ed25519PrivateKey.from_private_bytes(
        HKDF(hashes.SHA256(), 32, salt=None, info=b"agentkeys-recovery-sign-v1").derive(secret))
    assert raw(recovery_sign.public_key()).hex() == rk["sign_public"]
    kp = v["key_pair"]
    token_hash = hashlib.sha256(rk["open_token"].encode()).hexdigest()
    open_payload = f"agentkeys-recovery-open-v1\n{kp['sign_public']}\n{kp['kx_public']}\n{token_hash}\n{rk['open_label']}"
    assert open_payload == rk["open_payload"]
    assert recovery_sign.sign(open_payload.encode()).hex() == rk["open_signature"]

    a = v["agent"]
    account_blob = h(a["account_secret_blob"])
    account = Ed25519PrivateKey.from_private_bytes(account_blob[:32])
    assert "acct_" + hashlib.sha256(b"agentkeys-account-id-v1\0" + raw(account.public_key())).hexdigest()[:20] == a["account_id"]
    agent_id = "ag_" + hashlib.sha256(b"agentkeys-agent-id-v1\0" + f"{a['account_id']}//{a['label']}".encode()).hexdigest()[:20]
    assert agent_id == a["agent_id"]
    device_blob = h(a["device_secret_blob"])
    device_sign = raw(Ed25519PrivateKey.from_private_bytes(device_blob[:32]).public_key())
    device_kx = raw(X25519PrivateKey.from_private_bytes(device_blob[32:]).public_key())
    assert "dev_" + hashlib.sha256(b"agentkeys-device-id-v1\0" + device_sign).hexdigest()[:20] == a["device_id"]
    device_payload = f"agentkeys-agent-device-v1\n{a['account_id']}\n{agent_id}\n{device_sign.hex()}\n{device_kx.hex()}"
    assert device_payload == a["device_payload"]
    assert account.sign(device_payload.encode()).hex() == a["paired_certificate"]
    link_secret = h(a["link_secret"])
    code = base64.b32encode(link_secret + hashlib.sha256(link_secret).digest()[:2]).decode().rstrip("=")
    assert "AKL1-" + code == a["link_code"]
    link_blob = HKDF(hashes.SHA256(), 64, salt=None, info=b"agentkeys-link-key-v1").derive(link_secret)
    link_key = Ed25519PrivateKey.from_private_bytes(link_blob[:32])
    link_sign = raw(link_key.public_key())
    link_kx = raw(X25519PrivateKey.from_private_bytes(link_blob[32:]).public_key())
    assert (link_sign.hex(), link_kx.hex()) == (a["link_sign_public"], a["link_kx_public"])
    assert "lnk_" + hashlib.sha256(b"agentkeys-link-id-v1\0" + link_sign).hexdigest()[:20] == a["link_id"]
    link_payload = f"agentkeys-link-key-v1\n{a['account_id']}\n{agent_id}\n{link_sign.hex()}\n{link_kx.hex()}"
    assert link_payload == a["link_payload"]
    assert account.sign(link_payload.encode()).hex() == a["link_certificate"]
    assert link_key.sign(device_payload.encode()).hex() == a["linked_device_signature"]
    nonce = h(a["pair_nonce"])
    assert hashlib.sha256(b"agentkeys-pair-commit-v1\0" + nonce).hexdigest() == a["pair_commitment"]
    otp_input = b"agentkeys-pair-otp-v3\0" + nonce + b"".join(part + b"\0" for part in (
        a["pair_kind"].encode(), a["pair_code"].encode(), a["label"].encode(), a["pair_scope"].encode()))
    digest = hashlib.sha256(otp_input + device_sign + device_kx + raw(account.public_key())).digest()
    assert f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}" == a["pair_otp"]
    binding = f"agentkeys-link-account-v1\n{a['link_id']}\n{raw(account.public_key()).hex()}"
    assert binding == a["link_account_payload"]
    assert link_key.sign(binding.encode()).hex() == a["link_account_binding"]

    g = v["grant"]
    grant_account = Ed25519PrivateKey.from_private_bytes(h(g["account_secret_blob"])[:32])
    signer_blob = h(g["signer_secret_blob"])
    signer = Ed25519PrivateKey.from_private_bytes(signer_blob[:32])
    signer_sign = raw(signer.public_key())
    signer_kx = raw(X25519PrivateKey.from_private_bytes(signer_blob[32:]).public_key())
    assert "dev_" + hashlib.sha256(b"agentkeys-device-id-v1\0" + signer_sign).hexdigest()[:20] == g["signer_device_id"]
    certificate = f"agentkeys-device-cert-v1\n{g['account_id']}\n{signer_sign.hex()}\n{signer_kx.hex()}\n{g['signer_label']}"
    grant_account.public_key().verify(h(g["signer_certificate"]), certificate.encode())
    assert hashlib.sha256(h(g["sealed"])).hexdigest() == g["ciphertext_sha256"]
    for who in ("account", "device"):
        payload = b"agentkeys-grant-v1\0"
        for field in (g["account_id"], g["namespace"], g["service"]):
            payload += len(field).to_bytes(2, "big") + field.encode()
        payload += g["version"].to_bytes(8, "big") + h(g["ciphertext_sha256"]) + bytes([g["flags"]])
        recipient = g["recipient_" + who].encode()
        payload += len(recipient).to_bytes(2, "big") + recipient
        assert payload.hex() == g["payload_" + who]
        assert signer.sign(payload).hex() == g["signature_" + who]

    sp = v["session_passphrase"]
    key = Argon2id(salt=h(sp["salt"]), length=32, iterations=sp["iterations"], lanes=sp["lanes"],
                   memory_cost=sp["memory_kib"]).derive(sp["passphrase"].encode())
    assert key.hex() == sp["key"]
    header = bytes([2]) + struct.pack(">III", sp["memory_kib"], sp["iterations"], sp["lanes"]) + h(sp["salt"])
    assert header.hex() == sp["header"]
    aad = b"agentkeys-session-v1\0" + sp["session_id"].encode() + header
    assert aad.hex() == sp["aad"]
    file = h(sp["file"])
    assert file[:len(header)] == header
    sealed = file[len(header):]
    assert sealed[0] == 1 and sealed[1:25].hex() == sp["nonce"]
    subkey = hchacha20(key, sealed[1:17])
    plaintext = ChaCha20Poly1305(subkey).decrypt(b"\0" * 4 + sealed[17:25], sealed[25:], aad)
    assert plaintext.decode() == sp["plaintext"]
    chain = v["account_audit_chain"]
    prev = bytes(32)
    for place in chain["places"]:
        assert place["prev"] == prev.hex()
        prev = hashlib.sha256(chain["domain"].encode() + prev + place["seq"].to_bytes(8, "big")
                              + h(place["row_hash"])).digest()
        assert prev.hex() == place["hash"]

    st = v["account_statements"]
    st_account = Ed25519PrivateKey.from_private_bytes(h(st["account_secret_blob"])[:32])
    prev = bytes(32)
    for number, entry in enumerate(st["statements"], start=1):
        assert entry["seq"] == number and entry["prev"] == prev.hex()
        payload = st["domain"].encode() + b"\0"
        payload += len(st["account_id"]).to_bytes(2, "big") + st["account_id"].encode()
        payload += entry["seq"].to_bytes(8, "big") + prev + bytes([entry["kind"]])
        payload += len(entry["agent_id"]).to_bytes(2, "big") + entry["agent_id"].encode()
        payload += len(entry["items"]).to_bytes(2, "big")
        for item in entry["items"]:
            payload += len(item).to_bytes(2, "big") + item.encode()
        assert payload.hex() == entry["payload"]
        st_account.public_key().verify(h(entry["signature"]), payload)
        assert st_account.sign(payload).hex() == entry["signature"]
        prev = hashlib.sha256(payload).digest()
        assert prev.hex() == entry["hash"]

    p = v["presence_ceremony"]
    digest = hashlib.sha256(p["body"].encode()).digest()
    assert digest.hex() == p["body_digest"]
    challenge = hashlib.sha256(b"agentkeys-presence-v1\0")
    for field in (p["ceremony_id"], p["account_id"], p["purpose"], p["method"], p["path"]):
        challenge.update(len(field).to_bytes(4, "big") + field.encode())
    challenge.update(digest + h(p["nonce"]))
    assert challenge.hexdigest() == p["challenge"]
    assert base64.urlsafe_b64encode(challenge.digest()).rstrip(b"=").decode() == p["challenge_b64url"]

    print("test vectors: 13 constructions verified with pyca/cryptography")


if __name__ == "__main__":
    main(sys.argv[1])
