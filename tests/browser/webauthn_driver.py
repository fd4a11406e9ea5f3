"""A real browser for the presence-key tests (tests/e2e/webauthn.rs): Debian's Chromium, headless,
driven through Debian's chromedriver by Selenium (SE_OFFLINE=true: nothing is downloaded), with
Chromium's WebAuthn virtual authenticator (over CDP) standing in for a YubiKey (`usb`) or Touch ID
and Windows Hello (`internal`).

The Rust test drives it one JSON command per line on stdin and reads one JSON answer per line on
stdout; "ready" is printed once the browser runs. Commands:

  {"cmd": "authenticator", "transport": "usb" | "internal"}  -> {"id": ...}
  {"cmd": "remove_authenticator", "id": ...}
  {"cmd": "override", "id": ..., "bogus_signature": bool, "bad_uv": bool, "bad_up": bool}
  {"cmd": "rewind_counter", "id": ...}      every credential's sign count back to 0
  {"cmd": "tamper", "field": "origin" | "type" | "challenge" | "credential_id"}
  {"cmd": "untamper"}
  {"cmd": "open", "url": ..., "timeout_s": N} -> {"state", "status", "operation", "code", "request"}
"""

import json
import os
import shutil
import sys
import time

os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

FINAL_STATES = {"done", "refused", "over", "error"}

# Rewrites the page's answer before it is posted, as a hostile page script or a man in the
# middle of the browser would: the server must refuse each. Evaluated by DevTools on every new
# document, so the page's Content-Security-Policy does not apply to it.
TAMPER = r"""
(() => {
  const field = %s;
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const original = window.fetch;
  window.fetch = (url, init) => {
    if (String(url).endsWith("/answer") && init && init.body) {
      const answer = JSON.parse(init.body);
      if (field === "credential_id") {
        answer.credential_id = b64(crypto.getRandomValues(new Uint8Array(32)));
      } else {
        const client = JSON.parse(new TextDecoder().decode(unb64(answer.client_data_json)));
        if (field === "origin") client.origin = "https://evil.example";
        if (field === "type") client.type = client.type === "webauthn.get" ? "webauthn.create" : "webauthn.get";
        if (field === "challenge") client.challenge = b64(crypto.getRandomValues(new Uint8Array(32)));
        answer.client_data_json = b64(new TextEncoder().encode(JSON.stringify(client)));
      }
      init = { ...init, body: JSON.stringify(answer) };
    }
    return original(url, init);
  };
})();
"""


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(arg)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("WebAuthn.enable", {"enableUI": False})
    return driver


def page_state(driver):
    text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
    status = driver.find_element(By.ID, "status")
    return {
        "state": status.get_attribute("data-state"),
        "status": status.text,
        "operation": text("operation"),
        "code": text("code"),
        "request": text("request"),
    }


def handle(driver, command, scripts):
    cmd = command["cmd"]
    if cmd == "authenticator":
        options = {
            "protocol": "ctap2",
            "transport": command["transport"],
            "hasResidentKey": command["transport"] == "internal",
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        return {"id": driver.execute_cdp_cmd("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]}
    if cmd == "remove_authenticator":
        driver.execute_cdp_cmd("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": command["id"]})
        return {}
    if cmd == "override":
        driver.execute_cdp_cmd(
            "WebAuthn.setResponseOverrideBits",
            {
                "authenticatorId": command["id"],
                "isBogusSignature": command.get("bogus_signature", False),
                "isBadUV": command.get("bad_uv", False),
                "isBadUP": command.get("bad_up", False),
            },
        )
        return {}
    if cmd == "rewind_counter":
        authenticator = {"authenticatorId": command["id"]}
        for credential in driver.execute_cdp_cmd("WebAuthn.getCredentials", authenticator)["credentials"]:
            driver.execute_cdp_cmd("WebAuthn.removeCredential", {**authenticator, "credentialId": credential["credentialId"]})
            driver.execute_cdp_cmd("WebAuthn.addCredential", {**authenticator, "credential": {**credential, "signCount": 0}})
        return {}
    if cmd == "tamper":
        source = TAMPER % json.dumps(command["field"])
        scripts.append(driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})["identifier"])
        return {}
    if cmd == "untamper":
        while scripts:
            driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": scripts.pop()})
        return {}
    if cmd == "open":
        driver.get(command["url"])
        deadline = time.monotonic() + command.get("timeout_s", 30)
        while True:
            state = page_state(driver)
            if state["state"] in FINAL_STATES or time.monotonic() > deadline:
                return state
            # The page changes its status element when the authenticator and the server answer;
            # WebDriver has no event for that, so look again shortly.
            time.sleep(0.05)
    raise ValueError(f"unknown command {cmd!r}")


def main():
    driver = browser()
    scripts = []
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            try:
                answer = {"ok": True, **handle(driver, command, scripts)}
            except Exception as error:  # the test prints it
                answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            print(json.dumps(answer), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
