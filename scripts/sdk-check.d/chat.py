"""The official OpenAI Python SDK through the relay's proxy (scripts/sdk-check).

The SDK's own retries are off (max_retries=0): the relay's are the only ones, and the
upstream fails every other request, so each call below succeeds only if the relay retried it.
"""

import sys

import openai

base_url, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)

for i in range(3):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": f"Hello {i}"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the flaky upstream!", completion
    assert completion.usage.total_tokens == 29, completion.usage
    attempts = raw.headers.get("x-ferrule-attempts")
    assert attempts == "2", f"expected the relay to retry once, got {attempts} attempts"
    assert raw.headers.get("x-ferrule-destination") == "openai"

stream = client.chat.completions.create(
    model="gpt-4.1", messages=[{"role": "user", "content": "Stream"}], stream=True
)
text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
assert text == "Hello from the stream", text

# A bad relay token is the relay's 401, and never reaches the upstream.
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("a wrong relay token was accepted")
except openai.AuthenticationError:
    pass

print(f"openai {openai.__version__}: 3 completions, 1 stream through a flaky upstream, max_retries=0")
