def report(lead, ctx):
    # One report per sales lead (a real task would call an LLM here).
    return {"report": f"{lead['name']} ({lead['industry']}, {lead['employees']} people)"}


def question(item, ctx):
    # A generation task: item["n"] numbers the sample; the rest comes from --param.
    topic, level = ctx.params["topic"], ctx.params["difficulty"]
    return {"question": f"Question {item['n'] + 1} about {topic}, {level}"}
