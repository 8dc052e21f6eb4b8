#!/usr/bin/env bash
# `bitnet serve` against the official `openai` Python client: installs the client from PyPI into a venv
# (under target/, reused), starts the server on the embedded default model on a free port, and runs a chat
# completion whole and streamed, a text completion, embeddings (float and the client's default base64), and the
# models list through the client. Called by
# scripts/test.sh after the Rust tests; usable alone: scripts/test-openai-client.sh [path/to/bitnet].
set -euo pipefail
cd "$(dirname "$0")/.."
bitnet=${1:-target/debug/bitnet}
venv=target/openai-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'openai>=1.40,<3'
fi
log=$(mktemp)
"$bitnet" serve --port 0 --api-key test-key 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 200); do
  grep -q 'listening on' "$log" && break
  sleep 0.05
done
url=$(grep -o 'http://[0-9.:]*' "$log" | head -1)
[ -n "$url" ] || { cat "$log" >&2; echo "test-openai-client: the server did not start" >&2; exit 1; }
for _ in $(seq 600); do
  curl -fs "$url/health" >/dev/null 2>&1 && break
  sleep 0.1
done
BASE_URL="$url/v1" "$venv/bin/python" - <<'PY'
import os
import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="test-key")
models = client.models.list()
assert [m.id for m in models.data] == ["bitnet-default"], models
messages = [{"role": "user", "content": "Speak, friend."}]
whole = client.chat.completions.create(model="bitnet-default", messages=messages, max_tokens=16, temperature=0)
text = whole.choices[0].message.content
assert whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.completion_tokens > 0, whole.usage
stream = client.chat.completions.create(model="bitnet-default", messages=messages, max_tokens=16, temperature=0,
                                        stream=True, stream_options={"include_usage": True})
pieces, usage = [], None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
assert "".join(pieces) == text, ("".join(pieces), text)
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage
completion = client.completions.create(model="bitnet-default", prompt="ROMEO:", max_tokens=8, temperature=0)
assert completion.choices[0].text, completion
# The client asks for base64 by default and decodes it; float is asked explicitly.
embedded = client.embeddings.create(model="bitnet-default", input=["To be, or not to be", "ROMEO:"])
floats = client.embeddings.create(model="bitnet-default", input=["To be, or not to be", "ROMEO:"],
                                  encoding_format="float")
assert [len(e.embedding) for e in embedded.data] == [256, 256], embedded
for a, b in zip(embedded.data, floats.data):
    assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    assert abs(sum(x * x for x in a.embedding) - 1.0) < 1e-4
try:
    openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong API key was accepted")
except openai.AuthenticationError:
    pass
print(f"openai client OK: chat {text!r}, completion {completion.choices[0].text!r}, embeddings of "
      f"{len(embedded.data[0].embedding)} dimensions")
PY
kill -TERM $server
wait $server
