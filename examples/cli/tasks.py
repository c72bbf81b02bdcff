# tasks.py
import asyncio, random

async def enrich(item, ctx):
    await asyncio.sleep(random.uniform(0.02, 0.08))   # an API call, say
    if item["employees"] == 0:
        raise ValueError(f"{item['name']} has no employees")
    ctx.usage(tokens_in=120, tokens_out=40, cost=0.0004)
    ctx.metric("score", min(100, item["employees"] // 10))
    return {"company": item["name"], "score": min(100, item["employees"] // 10)}
