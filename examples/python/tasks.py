# tasks.py
import asyncio

from batchyard import Fail, Retry, task


def announce(status):
    print(f"[callback] {status.id} ended {status.state.value}: {status.counts.as_dict()}")


@task(concurrency=8, max_attempts=4, timeout=60, retry_backoff=0.5, on_complete=announce)
async def enrich(item, ctx):
    ctx.progress(0.5, "fetched")
    await asyncio.sleep(0.05)  # call an API here
    ctx.usage(tokens_in=812, tokens_out=190, cost=0.0031)
    ctx.metric("confidence", 0.93)
    ctx.log(f"looked up {item['name']}")
    if not item.get("website"):
        raise Fail("no website on record")  # fails now, never retried
    if item["name"] == "Globex" and ctx.attempt == 1:
        raise Retry(after=0.1, reason="rate limited")  # tried again in 0.1 s
    return {"company": item["name"], "score": len(item["website"])}
