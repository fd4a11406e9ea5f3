// The ceremony page's script (served by agentkeys-server, no build step, no third-party code):
// fetch this ceremony's WebAuthn options, ask the browser's authenticator (a security key,
// Touch ID, Windows Hello, a passkey), post its answer back. The server verifies everything;
// this script only carries bytes, base64url in JSON.
"use strict";

const ceremonyId = location.pathname.split("/").filter(Boolean).pop();
const byId = (name) => document.getElementById(name);

function toB64url(buffer) {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromB64url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function show(state, text) {
  const status = byId("status");
  status.dataset.state = state;
  status.textContent = text;
}

let options = null;

async function load() {
  const response = await fetch(`/presence/${ceremonyId}/options`, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    show("over", body.error ? `${body.error.message}. ${body.error.hint}` : `The server answered ${response.status}.`);
    return;
  }
  options = body;
  byId("purpose").textContent =
    body.purpose === "enroll" ? "Enroll a presence key" : "Confirm a critical operation";
  byId("operation").textContent = body.operation;
  byId("request").textContent = body.request;
  byId("code").textContent = body.code;
  await run();
}

function credentials(list) {
  return list.map((c) => ({ type: c.type, id: fromB64url(c.id) }));
}

async function ask() {
  const pk = options.public_key;
  if (options.purpose === "enroll") {
    const publicKey = {
      ...pk,
      challenge: fromB64url(pk.challenge),
      user: { ...pk.user, id: fromB64url(pk.user.id) },
      excludeCredentials: credentials(pk.excludeCredentials),
    };
    const made = await navigator.credentials.create({ publicKey });
    return {
      credential_id: toB64url(made.rawId),
      client_data_json: toB64url(made.response.clientDataJSON),
      attestation_object: toB64url(made.response.attestationObject),
    };
  }
  const publicKey = { ...pk, challenge: fromB64url(pk.challenge), allowCredentials: credentials(pk.allowCredentials) };
  const got = await navigator.credentials.get({ publicKey });
  return {
    credential_id: toB64url(got.rawId),
    client_data_json: toB64url(got.response.clientDataJSON),
    authenticator_data: toB64url(got.response.authenticatorData),
    signature: toB64url(got.response.signature),
  };
}

async function run() {
  byId("retry").hidden = true;
  show("waiting", options.purpose === "enroll"
    ? "Touch your security key, or use your device's fingerprint or PIN, to enroll it…"
    : "Touch your presence key, or use your device's fingerprint or PIN…");
  let answer;
  try {
    answer = await ask();
  } catch (error) {
    // The human cancelled, or no enrolled key is here: the ceremony stays open until it expires.
    show("error", `${error.name}: ${error.message}`);
    byId("retry").hidden = false;
    return;
  }
  const response = await fetch(`/presence/${ceremonyId}/answer`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(answer),
  });
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    show("done", "Done. You can close this page: the command in your terminal goes on.");
  } else {
    show("refused", body.error ? `${body.error.message}. ${body.error.hint}` : `Refused (${response.status}).`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("retry").addEventListener("click", () => run());
  load().catch((error) => show("error", `${error.name}: ${error.message}`));
});
