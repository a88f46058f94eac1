"""LiteLLM's own proxy calling the sidecar's Generic Guardrail API, end to end.

Not part of `make test` (LiteLLM is not one of our dependencies): `make litellm-e2e`
installs a pinned `litellm[proxy]` into its own venv and runs this file with
GUARDRAIL_LITELLM pointing at its `litellm` command. Real processes and sockets
throughout: the official `openai` SDK -> LiteLLM's proxy -> (guardrail: our sidecar's
`/beta/litellm_basic_guardrail_api`) -> a recording OpenAI-compatible upstream.

Checks, per guardrail mode: pre_call redacts PII before the upstream and keeps a
blocked prompt from it; post_call keeps a blocked completion from the client and
redacts one it modifies; during_call refuses a blocked prompt to the client (LiteLLM
runs it beside the model call, so the upstream may see that prompt: its documented
behaviour).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.gateway import (
    GatewaySidecar,
    RecordingUpstream,
    chat_completion,
    gateway_sidecar,
    ids_masked,
)

LITELLM = os.environ.get("GUARDRAIL_LITELLM", "")
pytestmark = pytest.mark.skipif(not LITELLM, reason="run by `make litellm-e2e` "
                                "(GUARDRAIL_LITELLM: LiteLLM's proxy command)")
CARD = "4111 1111 1111 1111"
MODES = ("pre_call", "post_call", "during_call")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: RecordingUpstream) -> Iterator[GatewaySidecar]:
    with gateway_sidecar(tmp_path_factory.mktemp("litellm-sidecar"), upstream) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream,
          sidecar: GatewaySidecar) -> Iterator[tuple[str, str]]:
    """LiteLLM's proxy (base URL, master key): model "m" is the recording upstream;
    one guardrail per mode, each pointing at the sidecar, applied when a request
    names it."""
    tmp = tmp_path_factory.mktemp("litellm")
    guardrails = "".join(
        f"  - guardrail_name: sidecar-{mode}\n    litellm_params:\n"
        f"      guardrail: generic_guardrail_api\n      mode: {mode}\n"
        f"      api_base: http://{sidecar.address}\n      default_on: false\n"
        for mode in MODES)
    config = tmp / "config.yaml"
    config.write_text(f"model_list:\n  - model_name: m\n    litellm_params:\n"
                      f"      model: openai/m\n      api_base: {upstream.url}\n"
                      f"      api_key: sk-upstream-test\n\nguardrails:\n{guardrails}")
    port = _free_port()
    key = "sk-" + secrets.token_hex(24)
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "NO_PROXY": "*"}
    log = (tmp / "proxy.log").open("wb")
    process = subprocess.Popen([LITELLM, "--config", str(config), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail("LiteLLM's proxy exited: "
                            + (tmp / "proxy.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{base}/health/liveliness", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("LiteLLM's proxy did not start within 120 s")
                time.sleep(1)
        yield base, key
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture(autouse=True)
def _fresh(upstream: RecordingUpstream) -> None:
    upstream.reset()


def ask(proxy: tuple[str, str], mode: str, text: str) -> Any:
    base, key = proxy
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}],
        extra_body={"guardrails": [f"sidecar-{mode}"]})


def test_pre_call_redacts_pii_before_the_upstream(proxy: tuple[str, str],
                                                  upstream: RecordingUpstream) -> None:
    answer = ask(proxy, "pre_call", "Mail me at ada.lovelace@acme.com please")
    [seen] = upstream.received
    assert "ada.lovelace@acme.com" not in seen.everything()
    assert "<EMAIL_ADDRESS>" in seen.body.decode()
    assert "ada.lovelace@acme.com" not in answer.choices[0].message.content


def test_pre_call_keeps_a_blocked_prompt_from_the_upstream(
        proxy: tuple[str, str], upstream: RecordingUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy, "pre_call", f"Charge my card {CARD} now")
    assert upstream.received == []
    assert "1111" not in ids_masked(str(caught.value))
    assert "blocked by the guardrail" in str(caught.value)


def test_post_call_keeps_a_blocked_completion_from_the_client(
        proxy: tuple[str, str], upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: chat_completion(f"Your card is {CARD}."))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy, "post_call", "what is my card?")
    assert len(upstream.received) == 1
    assert "1111" not in ids_masked(str(caught.value) + json.dumps(caught.value.body))


def test_post_call_redacts_what_the_completion_says(
        proxy: tuple[str, str], upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: chat_completion("Write to bo.chen@corp.net today."))
    answer = ask(proxy, "post_call", "who do I write to?")
    assert answer.choices[0].message.content == "Write to <EMAIL_ADDRESS> today."


def test_during_call_refuses_a_blocked_prompt(proxy: tuple[str, str]) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy, "during_call", f"Charge my card {CARD} now")
    assert "1111" not in ids_masked(str(caught.value))



def test_post_call_keeps_a_blocked_tool_call_from_the_client(
        proxy: tuple[str, str], upstream: RecordingUpstream) -> None:
    call = {"id": "call_1", "type": "function", "function": {
        "name": "pay", "arguments": json.dumps({"card": CARD})}}
    upstream.reset(lambda r, p: chat_completion("Paying now.", tool_calls=[call]))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy, "post_call", "pay my bill")
    assert "1111" not in ids_masked(str(caught.value) + json.dumps(caught.value.body))


def test_post_call_keeps_a_blocked_tool_call_without_text_from_the_client(
        proxy: tuple[str, str], upstream: RecordingUpstream) -> None:
    call = {"id": "call_1", "type": "function", "function": {
        "name": "pay", "arguments": json.dumps({"card": CARD})}}
    upstream.reset(lambda r, p: chat_completion(None, tool_calls=[call]))  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy, "post_call", "pay my bill")
    assert "1111" not in ids_masked(str(caught.value) + json.dumps(caught.value.body))
