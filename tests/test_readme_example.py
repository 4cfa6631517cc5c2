import os

import openai
import pytest

QUESTION = [{"role": "user", "content": "Say hello."}]
# A real key when recording; when replaying from the cassette any string will do.
API_KEY = os.environ.get("OPENAI_API_KEY", "sk-replay")


def test_hello(streamproxy):
    with openai.OpenAI(base_url=streamproxy.base_url, api_key=API_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "hello" in text.lower()


@pytest.mark.asyncio  # needs pytest-asyncio
async def test_hello_async(streamproxy):
    async with openai.AsyncOpenAI(base_url=streamproxy.base_url, api_key=API_KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert "hello" in text.lower()
